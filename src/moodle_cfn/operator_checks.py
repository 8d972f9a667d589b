"""Checks of a params file that need no AWS account but that AWS itself would make at deploy time.

- Whole numbers: CloudFormation's Number type accepts 1.5, the services it feeds do not (an Auto Scaling
  group of 1.5 nodes fails minutes into a deploy). Only Aurora Serverless v2 capacities are fractional, in
  steps of 0.5 ACU ("Aurora capacity units ... in half-ACU increments", Aurora User Guide, Serverless v2).
- Windows: RDS refuses a backup window that overlaps the maintenance window ("The backup window and
  maintenance window must not overlap", RDS API, PreferredBackupWindow).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from moodle_cfn.checks import Check, FindingCheck
from moodle_cfn.layers.database import (
    DATABASE_BACKUP_WINDOW,
    DATABASE_MAINTENANCE_WINDOW,
    DATABASE_MAX_CAPACITY,
    DATABASE_MIN_CAPACITY,
)

# Aurora Serverless v2 capacities: the only Number parameters that may be fractional.
HALF_STEPS = frozenset({DATABASE_MIN_CAPACITY.name, DATABASE_MAX_CAPACITY.name})
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


def whole_number_problem(key: str, text: str) -> str | None:
    """Why `text` is not a valid value for the Number parameter `key`, or None."""
    number = float(text)
    if key in HALF_STEPS:
        return None if (number * 2).is_integer() else f"{text} is not a multiple of 0.5 (ACUs come in halves)"
    return None if number.is_integer() else f"{text} is not a whole number"


def whole_numbers(number_keys: Iterable[str]) -> Check:
    """Every Number parameter a whole number (half steps for the ACU capacities)."""
    keys = tuple(number_keys)

    def problem(values: Mapping[str, str]) -> tuple[str, str] | None:
        for key in keys:
            reason = whole_number_problem(key, values[key]) if key in values else None
            if reason:
                return key, reason
        return None

    return FindingCheck(problem)


def _minute(day: int, clock: str) -> int:
    hours, minutes = clock.split(":")
    return day * MINUTES_PER_DAY + int(hours) * 60 + int(minutes)


def weekly_spans(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) on a week of minutes, split in two when it runs past the end of the week."""
    if end <= start:
        end += MINUTES_PER_WEEK
    if end <= MINUTES_PER_WEEK:
        return [(start, end)]
    return [(start, MINUTES_PER_WEEK), (0, end - MINUTES_PER_WEEK)]


def maintenance_spans(window: str) -> list[tuple[int, int]]:
    """ddd:hh:mi-ddd:hh:mi as minute spans of the week."""
    first, second = window.split("-")
    start_day, start_clock = first.split(":", 1)
    end_day, end_clock = second.split(":", 1)
    return weekly_spans(_minute(DAYS.index(start_day), start_clock), _minute(DAYS.index(end_day), end_clock))


def backup_spans(window: str) -> list[tuple[int, int]]:
    """hh:mi-hh:mi, every day, as minute spans of the week (one running past midnight ends the next day)."""
    start_clock, end_clock = window.split("-")
    spans = []
    for day in range(7):
        start = _minute(day, start_clock)
        end = _minute(day, end_clock) + (MINUTES_PER_DAY if end_clock <= start_clock else 0)
        spans.extend(weekly_spans(start, end % MINUTES_PER_WEEK if end > MINUTES_PER_WEEK else end))
    return spans


def windows_overlap(backup: str, maintenance: str) -> bool:
    """Whether the daily backup window meets the weekly maintenance window anywhere in the week."""
    return any(
        b_start < m_end and m_start < b_end
        for b_start, b_end in backup_spans(backup)
        for m_start, m_end in maintenance_spans(maintenance)
    )


def _window_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    backup = values.get(DATABASE_BACKUP_WINDOW.name)
    maintenance = values.get(DATABASE_MAINTENANCE_WINDOW.name)
    if backup and maintenance and windows_overlap(backup, maintenance):
        return (
            DATABASE_BACKUP_WINDOW.name,
            f"{backup} (daily, UTC) overlaps the maintenance window {maintenance}; RDS refuses that. "
            "Move one of them.",
        )
    return None


def operator_checks(number_keys: Iterable[str]) -> tuple[Check, ...]:
    """The checks of this module, for the master's Number parameters `number_keys`."""
    return (whole_numbers(number_keys), FindingCheck(_window_problem))
