"""Exam-time windows: up to three recurring schedules that grow the web nodes' Auto Scaling group at a
window's start and return it to its normal sizes at its end.

Each window is four operator parameters (start and end cron, minimum and desired nodes) and, when in use,
two scheduled actions on the group. A params file may give them as one `ScheduledScaling` list instead,
which `expand_schedule` turns into those parameters; the cron expressions, sizes and time zone are checked
before deploying.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from troposphere import And, Equals, Not, Parameter, Ref, Template
from troposphere.autoscaling import AutoScalingGroup, ScheduledAction

from moodle_cfn.checks import CrossCheck, FindingCheck, number
from moodle_cfn.common import GROUP_SCHEDULE, OperatorParameter, number_parameter
from moodle_cfn.errors import InputError
from moodle_cfn.layers.auto_scaling import WEB_DESIRED_CAPACITY, WEB_MAX_SIZE, WEB_MIN_SIZE

SCHEDULE_SLOTS = (1, 2, 3)
# Five cron fields (minute hour day-of-month month day-of-week) of an Auto Scaling recurrence.
CRON_FIELD = r"[0-9A-Za-z*/,?#-]+"
CRON_EXPRESSION = rf"{CRON_FIELD}( {CRON_FIELD}){{4}}"

SCALING_TIME_ZONE = OperatorParameter(
    Parameter(
        "ScalingTimeZone",
        Type="String",
        Default="Etc/UTC",
        AllowedPattern=r"^[A-Za-z]+(/[A-Za-z0-9_+-]+){0,2}$",
        ConstraintDescription="An IANA time zone such as Europe/Madrid or America/Montevideo.",
        Description="Time zone of the exam-time windows' cron expressions (IANA name, such as Europe/Madrid).",
    ),
    label="Time zone of the windows",
    group=GROUP_SCHEDULE,
)


@dataclass(frozen=True)
class ScheduleSlot:
    """One scheduled-scaling window: scale up at `start`, back to the normal sizes at `end`."""

    slot: int

    @property
    def condition(self) -> str:
        """Name of the condition "this window is in use"."""
        return f"HasScalingWindow{self.slot}"

    @property
    def parameters(self) -> tuple[OperatorParameter, OperatorParameter, OperatorParameter, OperatorParameter]:
        """(start cron, end cron, minimum size, desired capacity)."""
        return _schedule_parameters(self.slot)


@functools.cache
def _schedule_parameters(slot: int) -> tuple[OperatorParameter, ...]:
    # Each description stands alone: console users see these fields, not the params file's ScheduledScaling.
    def cron(edge: str, description: str, label: str) -> OperatorParameter:
        return OperatorParameter(
            Parameter(
                f"ScalingWindow{slot}{edge}",
                Type="String",
                Default="",
                AllowedPattern=rf"^({CRON_EXPRESSION})?$",
                ConstraintDescription="Empty, or a five-field cron expression such as '30 7 * * 1-5'.",
                Description=description,
            ),
            label=label,
            group=GROUP_SCHEDULE,
        )

    return (
        cron(
            "Start",
            f"When window {slot} starts: the group grows to the window's minimum and desired nodes. Five cron "
            "fields (minute hour day-of-month month day-of-week) in the windows' time zone, such as "
            "'30 7 * * 1-5' for weekdays at 07:30. Empty: the window is not used.",
            f"Window {slot}: scale up at (cron)",
        ),
        cron(
            "End",
            f"When window {slot} ends: the group returns to WebMinSize and WebDesiredCapacity. Cron, such as "
            "'0 14 * * 1-5' for weekdays at 14:00; required when the start is set.",
            f"Window {slot}: back to normal at (cron)",
        ),
        number_parameter(
            f"ScalingWindow{slot}MinSize",
            2,
            1,
            100,
            f"Window {slot}: the fewest web nodes from its start to its end (up to WebMaxSize).",
            label=f"Window {slot}: minimum nodes",
            group=GROUP_SCHEDULE,
        ),
        number_parameter(
            f"ScalingWindow{slot}DesiredCapacity",
            2,
            1,
            100,
            f"Window {slot}: web nodes started at its start (from its minimum up to WebMaxSize).",
            label=f"Window {slot}: nodes at the start",
            group=GROUP_SCHEDULE,
        ),
    )


SCHEDULES = tuple(ScheduleSlot(slot) for slot in SCHEDULE_SLOTS)

PARAMETERS: tuple[OperatorParameter, ...] = (
    SCALING_TIME_ZONE,
    *(p for schedule in SCHEDULES for p in schedule.parameters),
)


def _window_checks(schedule: ScheduleSlot) -> tuple[CrossCheck, ...]:
    start, end, low, desired = (p.name for p in schedule.parameters)
    in_use = lambda v: bool(v.get(start) or v.get(end))  # noqa: E731
    return (
        CrossCheck(
            end, f"a window needs both {start} and {end}", lambda v: bool(v.get(start)) == bool(v.get(end))
        ),
        CrossCheck(
            desired,
            f"must be between {low} and WebMaxSize",
            lambda v: not in_use(v) or number(v, low) <= number(v, desired) <= number(v, WEB_MAX_SIZE.name),
        ),
    )


def add_conditions(template: Template) -> None:
    """One condition per window: in use when both its start and its end are set."""
    for schedule in SCHEDULES:
        start, end = schedule.parameters[:2]
        template.add_condition(
            schedule.condition,
            And(Not(Equals(Ref(start.parameter), "")), Not(Equals(Ref(end.parameter), ""))),
        )


def add_scheduled_actions(template: Template, group: AutoScalingGroup) -> None:
    """Each window in use scales `group` up at its start and back to the normal sizes at its end."""
    for schedule in SCHEDULES:
        start, end, low, desired = schedule.parameters
        for action, recurrence, min_size, capacity in (
            ("ScaleUp", start, low, desired),
            ("ScaleBack", end, WEB_MIN_SIZE, WEB_DESIRED_CAPACITY),
        ):
            template.add_resource(
                ScheduledAction(
                    f"Window{schedule.slot}{action}",
                    Condition=schedule.condition,
                    AutoScalingGroupName=Ref(group),
                    Recurrence=Ref(recurrence.parameter),
                    TimeZone=Ref(SCALING_TIME_ZONE.parameter),
                    MinSize=Ref(min_size.parameter),
                    DesiredCapacity=Ref(capacity.parameter),
                )
            )


SCHEDULE_KEY = "ScheduledScaling"
WINDOW_FIELDS = {"start": 0, "end": 1, "min_size": 2, "desired_capacity": 3}
# (lowest, highest) of each cron field: minute, hour, day of month, month, day of week.
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_NAMES = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
              "sun", "mon", "tue", "wed", "thu", "fri", "sat"}  # fmt: skip


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a five-field cron expression Auto Scaling accepts, or None."""
    fields = expression.split()
    if len(fields) != len(CRON_RANGES):
        return f"{expression!r} has {len(fields)} fields; a cron expression has 5 (minute hour day month weekday)"
    for field, (low, high) in zip(fields, CRON_RANGES, strict=True):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                return f"{expression!r}: step {step!r} is not a number"
            for bound in base.split("-") if base != "*" else []:
                if bound.lower() in CRON_NAMES:
                    continue
                if not bound.isdigit() or not low <= int(bound) <= high:
                    return f"{expression!r}: {bound!r} is not in {low}-{high}"
    return None


def expand_schedule(entries: object, source: str) -> dict[str, object]:
    """The ScheduledScaling list of a params file, as the ScalingWindow<n>* parameters it stands for.

    Each entry is {start, end, min_size, desired_capacity}: scale to the entry's sizes at `start`, back to
    WebMinSize / WebDesiredCapacity at `end` (cron expressions in ScalingTimeZone). An empty list sets none.
    """
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise InputError(
            source, "must be a list of windows (start, end, min_size, desired_capacity)", SCHEDULE_KEY
        )
    if len(entries) > len(SCHEDULES):
        raise InputError(source, f"at most {len(SCHEDULES)} windows, found {len(entries)}", SCHEDULE_KEY)
    values: dict[str, object] = {}
    for index, entry in enumerate(entries):
        where = f"{SCHEDULE_KEY}[{index}]"
        if not isinstance(entry, dict):
            raise InputError(source, "must be a mapping with start, end, min_size, desired_capacity", where)
        unknown = sorted(set(entry) - set(WINDOW_FIELDS))
        missing = sorted(set(WINDOW_FIELDS) - set(entry))
        if unknown or missing:
            detail = f"unknown {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
            raise InputError(source, f"{detail} (a window has start, end, min_size, desired_capacity)", where)
        for edge in ("start", "end"):
            problem = cron_problem(str(entry[edge]))
            if problem:
                raise InputError(source, problem, f"{where}.{edge}")
        for size in ("min_size", "desired_capacity"):
            if isinstance(entry[size], bool) or not isinstance(entry[size], int):
                raise InputError(source, f"must be a whole number, found {entry[size]!r}", f"{where}.{size}")
        parameters = SCHEDULES[index].parameters
        for field, position in WINDOW_FIELDS.items():
            values[parameters[position].name] = entry[field]
    return values


def time_zone_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """ScalingTimeZone must be an IANA time zone when a window is in use."""
    if not any(values.get(s.parameters[0].name) for s in SCHEDULES):
        return None
    name = values[SCALING_TIME_ZONE.name]
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return SCALING_TIME_ZONE.name, f"{name!r} is not an IANA time zone (such as Europe/Madrid)"
    return None


def cron_check(parameter: OperatorParameter) -> FindingCheck:
    """A window's cron expression is valid (given directly rather than through ScheduledScaling)."""

    def problem(values: Mapping[str, str]) -> tuple[str, str] | None:
        expression = values.get(parameter.name, "")
        reason = cron_problem(expression) if expression else None
        return (parameter.name, reason) if reason else None

    return FindingCheck(problem)


CHECKS = (
    *(check for schedule in SCHEDULES for check in _window_checks(schedule)),
    *(cron_check(p) for schedule in SCHEDULES for p in schedule.parameters[:2]),
    FindingCheck(time_zone_problem),
)
EXPANDERS = {SCHEDULE_KEY: expand_schedule}
