"""Moodle's own health in CloudWatch, as emitted: the metrics the node agent prints are the ones alarmed on and
drawn, each alarm reads the site's dimension in the namespace the web role may publish to and no other, the
cron alarm fires on silence, and the disk alarm reads the per-group aggregate the agent config asks for.
(make rehearse-node runs the agent on two real nodes: tests/node_rig/rehearse_node.py.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from moodle_cfn import bootstrap
from moodle_cfn.common import MOODLE_METRICS_NAMESPACE
from moodle_cfn.layers import monitoring, moodle, moodle_metrics
from tests.cfn_eval import active_resources

# CloudWatch's MetricDatum units (CloudWatch API Reference, MetricDatum).
CLOUDWATCH_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Percent", "Count", "None"}


@pytest.fixture(scope="module")
def monitoring_template() -> dict[str, Any]:
    return json.loads(monitoring.build().to_json())


def alarms_in(template: dict[str, Any], namespace: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and resource["Properties"].get("Namespace") == namespace
    }


def printed_metrics() -> list[tuple[str, str]]:
    """(name, unit) of every datum moodle-metrics.php prints."""
    return re.findall(r"datum\('(\w+)', [^\n]*?, '(\w+)'\),?\n", bootstrap.read("moodle-metrics.php"))


def test_the_agent_prints_the_metrics_the_module_declares_in_valid_units():
    assert printed_metrics() == [(name, unit) for name, unit, _ in moodle_metrics.METRICS]
    assert {unit for _, unit in printed_metrics()} <= CLOUDWATCH_UNITS


def test_every_moodle_metric_has_one_alarm_on_the_sites_dimension(monitoring_template):
    alarms = alarms_in(monitoring_template, MOODLE_METRICS_NAMESPACE)
    assert sorted(a["MetricName"] for a in alarms.values()) == sorted(
        name for name, _, _ in moodle_metrics.METRICS
    )
    for name, props in alarms.items():
        assert props["Dimensions"] == [{"Name": "Site", "Value": {"Ref": "SiteName"}}], name
        assert props["AlarmActions"] == props["OKActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["Period"] == 300 and props["EvaluationPeriods"] == props["DatapointsToAlarm"] >= 1, name


def test_a_silent_site_fires_the_cron_alarm_and_leaves_the_others_undecided(monitoring_template):
    """Missing data: the agent, the database or every node stopped. The cron alarm treats it as breaching
    (the site must not look healthy); the others go to INSUFFICIENT_DATA rather than OK."""
    alarms = alarms_in(monitoring_template, MOODLE_METRICS_NAMESPACE)
    treatment = {props["MetricName"]: props["TreatMissingData"] for props in alarms.values()}
    assert treatment.pop("MinutesSinceLastCronStart") == "breaching"
    assert set(treatment.values()) == {"missing"}
    cron = alarms["MoodleCronNotRunning"]
    # Above cron's keepalive (3 minutes) plus the next timer tick: a healthy site stays far below.
    assert (cron["Statistic"], cron["ComparisonOperator"], cron["Threshold"]) == (
        "Maximum",
        "GreaterThanThreshold",
        15,
    )


def test_a_failing_task_alarms_at_one(monitoring_template):
    alarms = alarms_in(monitoring_template, MOODLE_METRICS_NAMESPACE)
    for name in ("MoodleAdhocTasksFailing", "MoodleScheduledTasksFailing"):
        assert (alarms[name]["ComparisonOperator"], alarms[name]["Threshold"]) == (
            "GreaterThanOrEqualToThreshold",
            1,
        )


def test_the_disk_alarm_reads_the_per_group_aggregate_the_agent_publishes(monitoring_template, app_template):
    (disk,) = alarms_in(monitoring_template, "CWAgent").values()
    assert disk["MetricName"] == "disk_used_percent" and disk["Statistic"] == "Maximum"
    assert disk["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": {"Ref": "AutoScalingGroupName"}}]
    assert (disk["ComparisonOperator"], disk["Threshold"]) == ("GreaterThanThreshold", 80)
    files = app_template["Resources"]["WebLaunchTemplate"]["Metadata"]["AWS::CloudFormation::Init"]["config"][
        "files"
    ]
    config = json.loads(
        files["/etc/moodle-cfn/cloudwatch-agent.json"]["content"]["Fn::Sub"].replace("${!", "${")
    )
    metrics = config["metrics"]
    # The agent names a measurement after its plugin: disk's used_percent is disk_used_percent.
    assert "used_percent" in metrics["metrics_collected"]["disk"]["measurement"]
    assert metrics["namespace"] == "CWAgent"
    assert "AutoScalingGroupName" in metrics["append_dimensions"]
    assert [d["Name"] for d in disk["Dimensions"]] in metrics["aggregation_dimensions"]


def test_the_web_role_publishes_only_to_the_agents_and_moodles_namespaces(app_template):
    role = app_template["Resources"]["WebInstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    publishing = [s for s in role["Statement"] if "cloudwatch:PutMetricData" in s.get("Action", [])]
    namespaces = sorted(s["Condition"]["StringEquals"]["cloudwatch:namespace"] for s in publishing)
    assert namespaces == ["CWAgent", MOODLE_METRICS_NAMESPACE]
    (moodle_statement,) = [s for s in publishing if s["Sid"] == "PublishMoodleHealthMetrics"]
    assert moodle_statement["Action"] == ["cloudwatch:PutMetricData"] and moodle_statement["Resource"] == [
        "*"
    ]
    # What the node's script publishes to is the same namespace, from site.json.
    files = app_template["Resources"]["WebLaunchTemplate"]["Metadata"]["AWS::CloudFormation::Init"]["config"][
        "files"
    ]
    site = files["/etc/moodle-cfn/site.json"]["content"]
    assert site["METRICS_NAMESPACE"] == MOODLE_METRICS_NAMESPACE and site["SITE_NAME"] == {"Ref": "SiteName"}


def test_the_dashboard_draws_every_moodle_metric_and_the_disks(monitoring_template):
    body = monitoring_template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    drawn = {
        row[1]
        for w in json.loads(body)["widgets"]
        if w["type"] == "metric"
        for row in w["properties"]["metrics"]
    }
    assert {name for name, _, _ in moodle_metrics.METRICS} | {"disk_used_percent"} <= drawn
    widgets = json.loads(body)["widgets"]
    cells = [
        (x, y)
        for w in widgets
        for x in range(w["x"], w["x"] + w["width"])
        for y in range(w["y"], w["y"] + w["height"])
    ]
    assert len(cells) == len(set(cells)), "dashboard widgets overlap"


def test_the_agent_runs_every_minute_as_root_after_cron_starts():
    service = bootstrap.read("moodle-metrics.service")
    assert "ExecStart=/usr/share/moodle-cfn/moodle-metrics.sh" in service and "User=" not in service
    assert "OnCalendar=*-*-* *:*:30" in bootstrap.read("moodle-metrics.timer")
    shipped = dict(moodle.SHARED_FILES)
    assert shipped["moodle-metrics.sh"] == "000755" and shipped["moodle-metrics.php"] == "000644"
    setup = bootstrap.read("moodle-node-setup.sh")
    assert "moodle-metrics.service moodle-metrics.timer" in setup
    assert "moodle-metrics.timer" in bootstrap.read("platform-al2023.sh")


def test_every_moodle_alarm_is_in_the_monitoring_template_whatever_the_parameters(monitoring_template):
    active = active_resources(monitoring_template, {"AvailabilityZoneCount": "2"})
    assert {spec.title for spec in moodle_metrics.ALARMS} | {"WebNodeDiskSpace"} <= set(active)
