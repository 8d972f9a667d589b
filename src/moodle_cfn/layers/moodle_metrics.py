"""Moodle's own health in CloudWatch: the alarms and dashboard widgets of the metrics the web nodes publish
(moodle-metrics.php measures, moodle-metrics.sh publishes, once per site per minute), and the web group's
disk-space alarm. Used by the monitoring layer, whose SNS topic every alarm notifies.

Missing data is chosen per alarm. The cron alarm treats it as breaching: its metric stops when the agent,
the database or every node stops, and a site nobody measures must not look healthy. The others treat it
as missing (INSUFFICIENT_DATA, neither OK nor firing): the cron alarm already reports the silence once.
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import Ref, Sub
from troposphere.cloudwatch import Alarm, MetricDimension
from troposphere.sns import Topic

from moodle_cfn.common import MOODLE_METRICS_NAMESPACE, SITE_NAME, output_as_parameter
from moodle_cfn.layers import app

FIVE_MINUTES = 300
AGENT_NAMESPACE = "CWAgent"
# The CloudWatch agent's name for the "disk" plugin's used_percent (layers/moodle.py agent_config).
DISK_USED_PERCENT = "disk_used_percent"
AUTO_SCALING_GROUP_NAME = app.AUTO_SCALING_GROUP


@dataclass(frozen=True)
class HealthAlarm:
    """One alarm on one of Moodle's metrics: it fires when `statistic` of every one of `periods` five-minute
    periods is `comparison` `threshold`."""

    title: str
    metric: str
    statistic: str
    comparison: str
    threshold: float
    periods: int
    what: str
    missing_data: str = "missing"


# The metrics moodle-metrics.php prints, in its order: (name, unit, meaning).
METRICS = (
    ("MinutesSinceLastCronStart", "None", "minutes since Moodle's cron last started a run (tool_task lastcronstart)"),
    ("FailingScheduledTasks", "Count", "enabled scheduled tasks whose last run failed (faildelay > 0)"),
    ("ScheduledTaskMaxFailDelaySeconds", "Seconds", "the longest retry delay of a failing scheduled task"),
    ("AdhocTasksQueued", "Count", "ad-hoc tasks in the queue (due, running, or waiting to retry)"),
    ("OldestDueAdhocTaskMinutes", "None", "how long the oldest due ad-hoc task has waited for a runner"),
    ("FailingAdhocTasks", "Count", "queued ad-hoc tasks whose last run failed (faildelay > 0)"),
    ("UpgradePending", "Count", "1 when the code of the node that measured is not the database's (an upgrade to run)"),
)  # fmt: skip

# Thresholds: Moodle's cron starts every minute and keeps running for cron_keepalive (3 minutes) and any
# task it started; systemd starts no second run on a node until the first ends. A fail delay doubles from
# 60 s at each consecutive failure (\core\task\manager::scheduled_task_failed): 3840 s is the 7th failure
# in a row, about two hours of failing. admin/tool/task's own ad-hoc queue check warns after 10 minutes
# and errs after 4 hours.
ALARMS = (
    HealthAlarm("MoodleCronNotRunning", "MinutesSinceLastCronStart", "Maximum", "GreaterThanThreshold", 15, 1,
                "cron has not started a run for 15 minutes, or no node publishes Moodle's health",
                missing_data="breaching"),
    HealthAlarm("MoodleScheduledTasksFailing", "FailingScheduledTasks", "Minimum", "GreaterThanOrEqualToThreshold",
                1, 3, "a scheduled task has been failing for 15 minutes"),
    HealthAlarm("MoodleScheduledTaskFailingForHours", "ScheduledTaskMaxFailDelaySeconds", "Maximum",
                "GreaterThanOrEqualToThreshold", 3600, 1,
                "a scheduled task failed 7 times in a row (its retry delay passed an hour)"),
    HealthAlarm("MoodleAdhocQueueLarge", "AdhocTasksQueued", "Minimum", "GreaterThanThreshold", 1000, 6,
                "more than 1,000 ad-hoc tasks queued for 30 minutes"),
    HealthAlarm("MoodleAdhocTasksWaiting", "OldestDueAdhocTaskMinutes", "Minimum", "GreaterThanThreshold", 30, 2,
                "a due ad-hoc task has waited more than 30 minutes for a runner"),
    HealthAlarm("MoodleAdhocTasksFailing", "FailingAdhocTasks", "Minimum", "GreaterThanOrEqualToThreshold", 1, 3,
                "an ad-hoc task has been failing for 15 minutes"),
    HealthAlarm("MoodleUpgradePending", "UpgradePending", "Minimum", "GreaterThanOrEqualToThreshold", 1, 3,
                "Moodle has waited 15 minutes for an upgrade (cron is suspended until it runs)"),
)  # fmt: skip
# The web nodes' root disk (logs, the local cache, the code): the fullest node of the group.
DISK_ALARM = HealthAlarm("WebNodeDiskSpace", DISK_USED_PERCENT, "Maximum", "GreaterThanThreshold", 80, 2,
                         "a web node's root disk is more than 80% full")  # fmt: skip


def site_dimension() -> list[MetricDimension]:
    """The Site dimension moodle-metrics.sh gives every metric: the site's name."""
    return [MetricDimension(Name="Site", Value=Ref(SITE_NAME.parameter))]


def group_dimension() -> list[MetricDimension]:
    """The agent's per-group aggregate: the group's name as its only dimension."""
    return [
        MetricDimension(Name="AutoScalingGroupName", Value=Ref(output_as_parameter(AUTO_SCALING_GROUP_NAME)))
    ]


def health_alarm(spec: HealthAlarm, topic: Topic, namespace: str, dims: list[MetricDimension]) -> Alarm:
    """The alarm of one spec, notifying the topic when it fires and when it clears."""
    return Alarm(
        spec.title,
        AlarmDescription=Sub(f"${{{SITE_NAME.name}}}: {spec.what}"),
        Namespace=namespace,
        MetricName=spec.metric,
        Dimensions=dims,
        Statistic=spec.statistic,
        Period=FIVE_MINUTES,
        EvaluationPeriods=spec.periods,
        DatapointsToAlarm=spec.periods,
        Threshold=spec.threshold,
        ComparisonOperator=spec.comparison,
        TreatMissingData=spec.missing_data,
        AlarmActions=[Ref(topic)],
        OKActions=[Ref(topic)],
    )


def alarms(topic: Topic) -> list[Alarm]:
    """One alarm per Moodle metric, and the web group's disk-space alarm."""
    return [
        *(health_alarm(spec, topic, MOODLE_METRICS_NAMESPACE, site_dimension()) for spec in ALARMS),
        health_alarm(DISK_ALARM, topic, AGENT_NAMESPACE, group_dimension()),
    ]


def widgets(top: int) -> list[dict[str, object]]:
    """Dashboard widgets from row `top`: cron and upgrade, scheduled tasks, the ad-hoc queue, node disks.
    Their text goes through Fn::Sub with the monitoring template's parameters."""
    site = ["Site", f"${{{SITE_NAME.name}}}"]

    def widget(title: str, metrics: list[list[object]], x: int, y: int, stat: str) -> dict[str, object]:
        return {
            "type": "metric", "x": x, "y": y, "width": 12, "height": 6,
            "properties": {"title": title, "region": "${AWS::Region}", "stat": stat, "period": 300,
                           "metrics": metrics},
        }  # fmt: skip

    namespace = MOODLE_METRICS_NAMESPACE
    return [
        widget("Moodle cron (minutes since a run started) and upgrade pending",
               [[namespace, "MinutesSinceLastCronStart", *site], [".", "UpgradePending", *site]], 0, top, "Maximum"),
        widget("Moodle scheduled tasks failing",
               [[namespace, "FailingScheduledTasks", *site],
                [".", "ScheduledTaskMaxFailDelaySeconds", *site, {"yAxis": "right"}]], 12, top, "Maximum"),
        widget("Moodle ad-hoc tasks",
               [[namespace, "AdhocTasksQueued", *site], [".", "FailingAdhocTasks", *site],
                [".", "OldestDueAdhocTaskMinutes", *site, {"yAxis": "right"}]], 0, top + 6, "Maximum"),
        widget("Web nodes' root disk used % (fullest node)",
               [[AGENT_NAMESPACE, DISK_USED_PERCENT, "AutoScalingGroupName", f"${{{AUTO_SCALING_GROUP_NAME}}}"]],
               12, top + 6, "Maximum"),
    ]  # fmt: skip
