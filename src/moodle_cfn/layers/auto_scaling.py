"""The web nodes' Auto Scaling group: its sizes, lifecycle hooks, creation and rolling-update policies,
target tracking on CPU and requests, and the optional warm pool.

The group launches web_node.py's launch template over the private application subnets; the exam-time
windows that resize it on a schedule are scaling_windows.py's.
"""

from __future__ import annotations

from troposphere import AWSHelperFn, Equals, GetAtt, NoValue, Parameter, Ref, Sub, Template
from troposphere.autoscaling import (
    AutoScalingGroup,
    InstanceReusePolicy,
    LaunchTemplateSpecification,
    LifecycleHookSpecification,
    MetricsCollection,
    PredefinedMetricSpecification,
    ScalingPolicy,
    TargetTrackingConfiguration,
    WarmPool,
)
from troposphere.autoscaling import (
    Tags as AsgTags,
)
from troposphere.ec2 import LaunchTemplate
from troposphere.policies import (
    AutoScalingCreationPolicy,
    AutoScalingRollingUpdate,
    AutoScalingScheduledAction,
    CreationPolicy,
    ResourceSignal,
    UpdatePolicy,
)

from moodle_cfn.checks import CrossCheck, number
from moodle_cfn.common import GROUP_WEB, SITE_NAME, OperatorParameter, number_parameter
from moodle_cfn.layers.address_plan import APP
from moodle_cfn.layers.network import as_parameter

USE_WARM_POOL = "UseWarmPool"
# A cold boot installs packages and, on the first node, the Moodle database: give it time before the load
# balancer's verdict counts.
HEALTH_CHECK_GRACE_SECONDS = 900
# How long CloudFormation waits for a node's signal, at creation and per batch of a rolling update: PT1H,
# the longest PauseTime CloudFormation accepts. The rig measured a first boot of both nodes (one installs
# the site) at 80-110 s and an upgrade roll at 46-58 s on a small site; a major upgrade of a large database
# takes tens of minutes (README: upgrades longer than an hour are run before the stack update).
SIGNAL_TIMEOUT = "PT1H"
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


def _number(name: str, default: int, low: int, high: int, description: str, label: str) -> OperatorParameter:
    return number_parameter(name, default, low, high, description, label=label, group=GROUP_WEB)


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

APP_SUBNET_IDS = as_parameter(APP.ids_output)

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
)


def add_conditions(template: Template) -> None:
    """Whether the warm pool is in use."""
    template.add_condition(USE_WARM_POOL, Equals(Ref(WEB_WARM_POOL.parameter), "true"))


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
    """Target tracking on CPU and on requests per node, and the optional warm pool."""
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
