"""The Moodle web tier: launch template, instance role, Auto Scaling group, scaling, exam schedules, warm pool.

Instances run Amazon Linux 2023 from the public SSM parameter of the architecture matching the instance
type (Graviton or x86), require IMDSv2, have no key pair and no public address (shell access through SSM
Session Manager), and boot with bootstrap/user-data.sh.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from troposphere import (
    And,
    AWSHelperFn,
    Base64,
    Equals,
    GetAtt,
    If,
    Not,
    NoValue,
    Parameter,
    Ref,
    Sub,
    Template,
)
from troposphere.autoscaling import (
    AutoScalingGroup,
    InstanceReusePolicy,
    LaunchTemplateSpecification,
    LifecycleHookSpecification,
    MetricsCollection,
    PredefinedMetricSpecification,
    ScalingPolicy,
    ScheduledAction,
    TargetTrackingConfiguration,
    WarmPool,
)
from troposphere.autoscaling import (
    Tags as AsgTags,
)
from troposphere.ec2 import (
    EBSBlockDevice,
    IamInstanceProfile,
    LaunchTemplate,
    LaunchTemplateBlockDeviceMapping,
    LaunchTemplateData,
    MetadataOptions,
    Monitoring,
    TagSpecifications,
)
from troposphere.iam import InstanceProfile, Policy, Role
from troposphere.logs import LogGroup
from troposphere.policies import (
    AutoScalingCreationPolicy,
    AutoScalingRollingUpdate,
    AutoScalingScheduledAction,
    CreationPolicy,
    ResourceSignal,
    UpdatePolicy,
)

from moodle_cfn import bootstrap
from moodle_cfn.checks import CrossCheck, FindingCheck, number
from moodle_cfn.common import (
    GROUP_SCHEDULE,
    GROUP_WEB,
    RETAIN_EXCEPT_ON_CREATE,
    SITE_NAME,
    OperatorParameter,
    checkov_skips,
    equals_any,
    log_retention_parameter,
    number_parameter,
    tags,
)
from moodle_cfn.encryption import CUSTOMER_KEY_SKIP_REASON, customer_key
from moodle_cfn.errors import InputError
from moodle_cfn.layers.network import APP, as_parameter
from moodle_cfn.policies import WebNodeResources, ec2_trust_policy, web_node_policy

IS_GRAVITON = "WebInstanceIsGraviton"
USE_WARM_POOL = "UseWarmPool"
GRAVITON_TYPES = [
    "t4g.medium", "t4g.large", "t4g.xlarge",
    "c7g.large", "c7g.xlarge", "c7g.2xlarge", "c7g.4xlarge",
    "m7g.large", "m7g.xlarge", "m7g.2xlarge", "m7g.4xlarge",
    "r7g.large", "r7g.xlarge",
]  # fmt: skip
X86_TYPES = [
    "t3.medium", "t3.large",
    "c7i.large", "c7i.xlarge", "c7i.2xlarge", "c7i.4xlarge",
    "m7i.large", "m7i.xlarge", "m7i.2xlarge", "m7i.4xlarge",
]  # fmt: skip
AL2023_AMI = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
# A cold boot installs packages and, on the first node, the Moodle database: give it time before the load
# balancer's verdict counts.
HEALTH_CHECK_GRACE_SECONDS = 900
# How long CloudFormation waits for a node's signal, at creation and per batch of a rolling update: PT1H,
# the longest PauseTime CloudFormation accepts. The rig measured a first boot of both nodes (one installs
# the site) at 80-110 s and an upgrade roll at 46-58 s on a small site; a major upgrade of a large database
# takes tens of minutes (README: upgrades longer than an hour are run before the stack update).
SIGNAL_TIMEOUT = "PT1H"
SCHEDULE_SLOTS = (1, 2, 3)
# Five cron fields (minute hour day-of-month month day-of-week) of an Auto Scaling recurrence.
CRON_FIELD = r"[0-9A-Za-z*/,?#-]+"
CRON_EXPRESSION = rf"{CRON_FIELD}( {CRON_FIELD}){{4}}"
LOG_NAMES = ("bootstrap", "apache-access", "apache-error", "php-fpm", "moodle-cron")
ASG_TITLE = "WebAutoScalingGroup"
# The launch lifecycle hook a node completes itself (moodle-node-ready.sh): CONTINUE once Moodle answers on
# it, ABANDON when its setup fails. While the setup runs the node records a heartbeat every 2 minutes (for
# up to the hour CloudFormation waits), so a long install or upgrade keeps the hook; a node silent for 15
# minutes (its setup hung or died) is abandoned.
LIFECYCLE_HOOK = "moodle-node-ready"
LIFECYCLE_HEARTBEAT_SECONDS = 900
# The terminate lifecycle hook a node completes itself (moodle-node-drain.sh) once the Moodle task it was
# running has finished, recording a heartbeat every 2 minutes meanwhile (for up to an hour). A node that
# dies or hangs while it drains is terminated 5 minutes after its last heartbeat (CONTINUE: there is
# nothing left to keep on a node that cannot answer).
DRAIN_HOOK = "moodle-node-drain"
DRAIN_HEARTBEAT_SECONDS = 300
# The tag that lets a node complete its own group's lifecycle actions (policies.web_node_policy).
GROUP_SITE_TAG = "moodle-cfn-site"
LAUNCH_TEMPLATE_TITLE = "WebLaunchTemplate"


def _number(name: str, default: int, low: int, high: int, description: str, label: str) -> OperatorParameter:
    return number_parameter(name, default, low, high, description, label=label, group=GROUP_WEB)


WEB_INSTANCE_TYPE = OperatorParameter(
    Parameter(
        "WebInstanceType",
        Type="String",
        Default="m7g.large",
        AllowedValues=GRAVITON_TYPES + X86_TYPES,
        Description="Instance type of the web nodes. Graviton (t4g, c7g, m7g, r7g) costs ~20% less than Intel; "
        "the AMI follows the type.",
    ),
    label="Web instance type",
    group=GROUP_WEB,
)
WEB_MIN_SIZE = _number(
    "WebMinSize",
    2,
    1,
    100,
    "Fewest web nodes; 2 or more keeps the site up when an AZ fails.",
    "Minimum nodes",
)
WEB_MAX_SIZE = _number("WebMaxSize", 6, 1, 100, "Most web nodes the group may scale out to.", "Maximum nodes")
WEB_DESIRED_CAPACITY = _number(
    "WebDesiredCapacity", 2, 1, 100, "Web nodes at creation, and after each stack update.", "Desired nodes"
)
WEB_ROOT_VOLUME_GIB = _number(
    "WebRootVolumeSize",
    30,
    20,
    500,
    "Size (GiB) of each node's encrypted gp3 root volume.",
    "Root volume (GiB)",
)
WEB_CPU_TARGET = _number(
    "WebCpuTargetPercent", 60, 20, 90, "Average CPU the group scales to hold.", "Target CPU utilisation (%)"
)
WEB_REQUESTS_TARGET = _number(
    "WebRequestsPerTargetTarget",
    1000,
    50,
    100000,
    "Load balancer requests per node per minute the group scales to hold.",
    "Target requests per node per minute",
)
WEB_WARM_POOL = OperatorParameter(
    Parameter(
        "WebWarmPool",
        Type="String",
        Default="false",
        AllowedValues=["true", "false"],
        Description="Keep pre-booted, stopped nodes ready, so scaling out takes seconds instead of a full boot "
        "(you pay for their volumes only).",
    ),
    label="Warm pool",
    group=GROUP_WEB,
)
WEB_WARM_POOL_SIZE = _number(
    "WebWarmPoolSize", 1, 0, 50, "Stopped nodes kept in the warm pool.", "Warm pool size"
)
APP_LOG_RETENTION_DAYS = log_retention_parameter(
    "AppLogRetentionDays",
    30,
    "Days CloudWatch Logs keeps the web nodes' logs (Apache, PHP-FPM, cron, bootstrap).",
    label="Web node log retention (days)",
    group=GROUP_WEB,
)
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
    WEB_INSTANCE_TYPE,
    WEB_MIN_SIZE,
    WEB_MAX_SIZE,
    WEB_DESIRED_CAPACITY,
    WEB_ROOT_VOLUME_GIB,
    WEB_CPU_TARGET,
    WEB_REQUESTS_TARGET,
    WEB_WARM_POOL,
    WEB_WARM_POOL_SIZE,
    APP_LOG_RETENTION_DAYS,
    SCALING_TIME_ZONE,
    *(p for schedule in SCHEDULES for p in schedule.parameters),
)


def _ami_parameter(arch: str) -> tuple[OperatorParameter, Parameter]:
    """The master takes the public SSM parameter name and resolves it; the web tier receives the AMI id."""
    name = f"WebAmi{arch.replace('_', '').capitalize()}"
    master_side = OperatorParameter(
        Parameter(
            name,
            Type="AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            Default=AL2023_AMI.format(arch=arch),
            Description=f"SSM parameter holding the Amazon Linux 2023 {arch} AMI (the latest by default).",
        ),
        label=f"Amazon Linux 2023 AMI ({arch})",
        group=GROUP_WEB,
    )
    return master_side, Parameter(
        name, Type="AWS::EC2::Image::Id", Description=f"Amazon Linux 2023 {arch} AMI id"
    )


AMI_ARM64, AMI_ARM64_ID = _ami_parameter("arm64")
AMI_X86_64, AMI_X86_64_ID = _ami_parameter("x86_64")
MASTER_ONLY_PARAMETERS = (AMI_ARM64, AMI_X86_64)

APP_SUBNET_IDS = as_parameter(APP.ids_output)


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


SIZE_CHECKS = (
    CrossCheck(
        WEB_DESIRED_CAPACITY.name,
        "must be between WebMinSize and WebMaxSize",
        lambda v: (
            number(v, WEB_MIN_SIZE.name)
            <= number(v, WEB_DESIRED_CAPACITY.name)
            <= number(v, WEB_MAX_SIZE.name)
        ),
    ),
    CrossCheck(
        WEB_MAX_SIZE.name,
        "must exceed WebMinSize, so a rolling update can add a node before removing one",
        lambda v: number(v, WEB_MAX_SIZE.name) > number(v, WEB_MIN_SIZE.name),
    ),
    *(check for schedule in SCHEDULES for check in _window_checks(schedule)),
)


def add_conditions(template: Template) -> None:
    """Architecture, warm pool and schedule-window switches."""
    template.add_condition(IS_GRAVITON, equals_any(Ref(WEB_INSTANCE_TYPE.parameter), GRAVITON_TYPES))
    template.add_condition(USE_WARM_POOL, Equals(Ref(WEB_WARM_POOL.parameter), "true"))
    for schedule in SCHEDULES:
        start, end = schedule.parameters[:2]
        template.add_condition(
            schedule.condition,
            And(Not(Equals(Ref(start.parameter), "")), Not(Equals(Ref(end.parameter), ""))),
        )


def add_log_groups(template: Template) -> dict[str, LogGroup]:
    """One log group per kind of node log, named so the CloudWatch agent config can name them."""
    groups = {}
    for log in LOG_NAMES:
        title = "".join(part.capitalize() for part in log.split("-")) + "LogGroup"
        groups[log] = template.add_resource(
            LogGroup(
                title,
                LogGroupName=Sub(f"/moodle/${{{SITE_NAME.name}}}/{log}"),
                RetentionInDays=Ref(APP_LOG_RETENTION_DAYS.parameter),
                KmsKeyId=customer_key(),
                Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
                **RETAIN_EXCEPT_ON_CREATE,
            )
        )
    return groups


def add_instance_role(template: Template, resources: WebNodeResources) -> tuple[Role, InstanceProfile]:
    """The nodes' role: Session Manager, plus only this stack's secrets, file system, logs and caches. No AWS
    managed policy: each grants more than a node needs (policies.web_node_policy says what instead)."""
    role = template.add_resource(
        Role(
            "WebInstanceRole",
            AssumeRolePolicyDocument=ec2_trust_policy(),
            Policies=[Policy(PolicyName="moodle-web-node", PolicyDocument=web_node_policy(resources))],
            Metadata=checkov_skips(
                CKV_AWS_111="Session Manager's ssmmessages actions and ssm:UpdateInstanceInformation accept no "
                "narrower resource (AWS's own Session Manager policy grants them on *); every other write "
                "names this stack's resources"
            ),
            Tags=tags("web-node"),
        )
    )
    return role, template.add_resource(InstanceProfile("WebInstanceProfile", Roles=[Ref(role)]))


def add_launch_template(
    template: Template, profile: InstanceProfile, web_security_group: Parameter, user_data: Sub
) -> LaunchTemplate:
    """Amazon Linux 2023 for the instance type's architecture, IMDSv2 only, encrypted gp3 root volume."""
    return template.add_resource(
        LaunchTemplate(
            LAUNCH_TEMPLATE_TITLE,
            LaunchTemplateData=LaunchTemplateData(
                ImageId=If(IS_GRAVITON, Ref(AMI_ARM64_ID), Ref(AMI_X86_64_ID)),
                InstanceType=Ref(WEB_INSTANCE_TYPE.parameter),
                IamInstanceProfile=IamInstanceProfile(Arn=GetAtt(profile, "Arn")),
                SecurityGroupIds=[Ref(web_security_group)],
                MetadataOptions=MetadataOptions(
                    HttpTokens="required",
                    HttpEndpoint="enabled",
                    HttpPutResponseHopLimit=1,
                    InstanceMetadataTags="enabled",
                ),
                BlockDeviceMappings=[
                    LaunchTemplateBlockDeviceMapping(
                        DeviceName="/dev/xvda",
                        Ebs=EBSBlockDevice(
                            VolumeType="gp3",
                            VolumeSize=Ref(WEB_ROOT_VOLUME_GIB.parameter),
                            Encrypted=True,
                            DeleteOnTermination=True,
                        ),
                    )
                ],
                Monitoring=Monitoring(Enabled=True),
                UserData=Base64(user_data),
                TagSpecifications=[
                    TagSpecifications(ResourceType=kind, Tags=tags("web")) for kind in ("instance", "volume")
                ],
            ),
        )
    )


def add_auto_scaling_group(
    template: Template, launch_template: LaunchTemplate, target_group: AWSHelperFn
) -> AutoScalingGroup:
    """The group over the private application subnets, signalled at creation, replaced in rolling batches."""
    return template.add_resource(
        AutoScalingGroup(
            ASG_TITLE,
            VPCZoneIdentifier=Ref(APP_SUBNET_IDS),
            LaunchTemplate=LaunchTemplateSpecification(
                LaunchTemplateId=Ref(launch_template), Version=GetAtt(launch_template, "LatestVersionNumber")
            ),
            MinSize=Ref(WEB_MIN_SIZE.parameter),
            MaxSize=Ref(WEB_MAX_SIZE.parameter),
            DesiredCapacity=Ref(WEB_DESIRED_CAPACITY.parameter),
            HealthCheckType="ELB",
            HealthCheckGracePeriod=HEALTH_CHECK_GRACE_SECONDS,
            TargetGroupARNs=[Ref(target_group)],
            MetricsCollection=[MetricsCollection(Granularity="1Minute")],
            Tags=AsgTags(
                **{
                    "Name": (Sub(f"${{{SITE_NAME.name}}}-web"), True),
                    GROUP_SITE_TAG: (Ref(SITE_NAME.parameter), False),
                }
            ),
            LifecycleHookSpecificationList=[
                LifecycleHookSpecification(
                    LifecycleHookName=LIFECYCLE_HOOK,
                    LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                    HeartbeatTimeout=LIFECYCLE_HEARTBEAT_SECONDS,
                    DefaultResult="ABANDON",
                ),
                LifecycleHookSpecification(
                    LifecycleHookName=DRAIN_HOOK,
                    LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
                    HeartbeatTimeout=DRAIN_HEARTBEAT_SECONDS,
                    DefaultResult="CONTINUE",
                ),
            ],
            CreationPolicy=CreationPolicy(
                ResourceSignal=ResourceSignal(Count=Ref(WEB_MIN_SIZE.parameter), Timeout=SIGNAL_TIMEOUT),
                AutoScalingCreationPolicy=AutoScalingCreationPolicy(MinSuccessfulInstancesPercent=100),
            ),
            UpdatePolicy=UpdatePolicy(
                AutoScalingRollingUpdate=AutoScalingRollingUpdate(
                    MaxBatchSize=1,
                    MinInstancesInService=Ref(WEB_MIN_SIZE.parameter),
                    PauseTime=SIGNAL_TIMEOUT,
                    WaitOnResourceSignals=True,
                    SuspendProcesses=[
                        "HealthCheck",
                        "ReplaceUnhealthy",
                        "AZRebalance",
                        "AlarmNotification",
                        "ScheduledActions",
                    ],
                ),
                # A stack update must not undo what an exam window or a scaling policy did to the sizes.
                AutoScalingScheduledAction=AutoScalingScheduledAction(
                    IgnoreUnmodifiedGroupSizeProperties=True
                ),
            ),
        )
    )


def add_scaling(template: Template, group: AutoScalingGroup, request_label: AWSHelperFn) -> None:
    """Target tracking on CPU and on requests per node, scheduled windows, and the optional warm pool."""
    for title, metric, target, label in (
        ("CpuTargetTracking", "ASGAverageCPUUtilization", WEB_CPU_TARGET, NoValue),
        ("RequestsTargetTracking", "ALBRequestCountPerTarget", WEB_REQUESTS_TARGET, request_label),
    ):
        template.add_resource(
            ScalingPolicy(
                title,
                AutoScalingGroupName=Ref(group),
                PolicyType="TargetTrackingScaling",
                EstimatedInstanceWarmup=300,
                TargetTrackingConfiguration=TargetTrackingConfiguration(
                    TargetValue=Ref(target.parameter),
                    PredefinedMetricSpecification=PredefinedMetricSpecification(
                        PredefinedMetricType=metric, ResourceLabel=label
                    ),
                ),
            )
        )
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
    template.add_resource(
        WarmPool(
            "WarmPool",
            Condition=USE_WARM_POOL,
            AutoScalingGroupName=Ref(group),
            PoolState="Stopped",
            MinSize=Ref(WEB_WARM_POOL_SIZE.parameter),
            InstanceReusePolicy=InstanceReusePolicy(ReuseOnScaleIn=True),
        )
    )


def user_data(**variables: AWSHelperFn | str) -> Sub:
    """bootstrap/user-data.sh with its Fn::Sub variables bound."""
    text = bootstrap.read("user-data.sh")
    missing = {name for name in bootstrap.placeholders(text) if not name.startswith("AWS::")} - set(variables)
    if missing:
        raise ValueError(f"user-data.sh uses unbound variables {sorted(missing)}")
    return Sub(text, **variables)


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
    *SIZE_CHECKS,
    *(cron_check(p) for schedule in SCHEDULES for p in schedule.parameters[:2]),
    FindingCheck(time_zone_problem),
)
EXPANDERS = {SCHEDULE_KEY: expand_schedule}
