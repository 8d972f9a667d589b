"""The rig's check of Moodle's own health metrics (README: What CloudWatch watches), run by rehearse_node.py.

On the rig's two-node site, with cron stopped: the recorded start of Moodle's last cron run is set back past
the cron alarm's threshold (time passing, written where Moodle's cron writes it: tool_task/lastcronstart in
mdl_config_plugins), an ad-hoc task that fails for real is queued and run once, then the metrics agent runs
as its systemd unit runs it on both nodes in the same minute. Exactly one node publishes; what it published
is read back from moto's CloudWatch and compared with the thresholds of templates/monitoring.yaml's alarms.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import cfn_flip

from moodle_cfn.common import MOODLE_METRICS_NAMESPACE
from tests.node_rig.cfn_init import APP_TEMPLATE

if TYPE_CHECKING:
    from tests.node_rig.node import Node
    from tests.node_rig.rehearse_node import Site

MONITORING_TEMPLATE = APP_TEMPLATE.parent / "monitoring.yaml"
MOODLE_DIR = "/var/www/moodle"
# A core ad-hoc task that fails deterministically: an asynchronous backup of a backup controller that does
# not exist (\core\task\asynchronous_backup_task::execute reads it with MUST_EXIST: dml_missing_record_exception).
FAILING_TASK = "\\core\\task\\asynchronous_backup_task"
QUEUE_FAILING_TASK = (
    "define('CLI_SCRIPT', true); require('" + MOODLE_DIR + "/config.php');"
    " $t = new " + FAILING_TASK + "(); $t->set_custom_data(['backupid' => 'rig-no-such-backup']);"
    " echo \\core\\task\\manager::queue_adhoc_task($t);"
)
# The web server's user of the rig's platform (platform-debian.sh), what Moodle's PHP runs as.
WEB_USER = "www-data"
# Both nodes' runs must fall in one minute: start no later than this second of a minute.
LATEST_START_SECOND = 40


def alarm_threshold(metric: str) -> float:
    """The threshold of the alarm on `metric` of Moodle's namespace, as templates/monitoring.yaml emits it."""
    template = json.loads(cfn_flip.to_json(MONITORING_TEMPLATE.read_text()))
    (threshold,) = [
        r["Properties"]["Threshold"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Namespace") == MOODLE_METRICS_NAMESPACE
        and r["Properties"]["MetricName"] == metric
    ]
    return float(threshold)


def start_agent_as_its_unit_runs_it(node: Node) -> subprocess.Popen:
    """The installed moodle-metrics.service's command, as systemd runs it: as root (the unit names no user)."""
    unit = node.file("/etc/systemd/system/moodle-metrics.service")
    assert not re.search(r"^User=", unit, re.M)
    command = re.search(r"^ExecStart=(\S+)$", unit, re.M).group(1)
    return subprocess.Popen(
        node.command([command]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def published(site: Site, metric: str, since: datetime) -> list[float]:
    """The values of `metric` for the rig's site that moto's CloudWatch holds from `since` on."""
    answer = site.aws.client("cloudwatch").get_metric_statistics(
        Namespace=MOODLE_METRICS_NAMESPACE, MetricName=metric,
        Dimensions=[{"Name": "Site", "Value": site.parameters["SiteName"]}],
        StartTime=since, EndTime=since + timedelta(minutes=2), Period=60, Statistics=["Maximum"],
    )  # fmt: skip
    return [point["Maximum"] for point in answer["Datapoints"]]


def run_php_as_web_user(node: Node, code: str) -> str:
    result = node.run(["runuser", "-u", WEB_USER, "--", "php", "-r", code])
    return result.stdout.strip()


def check_moodle_health_metrics(site: Site) -> dict[str, Any]:
    """The check; returns what it measured (for the log)."""
    # Cron stopped: the rig's one cron process (started at boot, kept alive 3 minutes) has ended, and the
    # rig starts no other.
    if site.cron is not None and site.cron.returncode is None:
        site.cron.communicate(timeout=900)
    threshold = alarm_threshold("MinutesSinceLastCronStart")
    minutes_back = threshold + 5
    original = site.db(
        "SELECT value FROM mdl_config_plugins WHERE plugin = 'tool_task' AND name = 'lastcronstart'"
    )
    node1, node2 = site.nodes
    task_id = run_php_as_web_user(node1, QUEUE_FAILING_TASK)
    assert task_id.isdigit(), task_id
    try:
        ran = node1.run(["runuser", "-u", WEB_USER, "--", "php", f"{MOODLE_DIR}/admin/cli/adhoc_task.php",
                         f"--id={task_id}"], check=False)  # fmt: skip
        faildelay = site.db(f"SELECT faildelay FROM mdl_task_adhoc WHERE id = {task_id}")
        assert faildelay and int(faildelay) > 0, ran.stdout[-2000:] + ran.stderr[-2000:]
        site.db(
            f"UPDATE mdl_config_plugins SET value = floor(extract(epoch FROM now()))::bigint - {int(minutes_back * 60)} "
            "WHERE plugin = 'tool_task' AND name = 'lastcronstart'"
        )
        while time.time() % 60 > LATEST_START_SECOND:
            time.sleep(1)
        minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        before = len(site.aws.metric_data)
        started = time.time()
        agents = [start_agent_as_its_unit_runs_it(node) for node in (node1, node2)]
        results = []
        for agent in agents:
            output, errors = agent.communicate(timeout=120)
            results.append((agent.returncode, output, errors))
        finished = time.time()
        assert int(started // 60) == int(finished // 60), "the two runs did not fall in one minute"
        for status, output, errors in results:
            assert status == 0, output + errors
        logs = [errors for _, _, errors in results]
        assert sum("published for site" in log for log in logs) == 1, logs
        assert sum("another node" in log for log in logs) == 1, logs
        requests = site.aws.metric_data[before:]
        assert len(requests) == 1 and requests[0]["Namespace"] == MOODLE_METRICS_NAMESPACE, requests
        cron_minutes = published(site, "MinutesSinceLastCronStart", minute)
        failing_adhoc = published(site, "FailingAdhocTasks", minute)
        assert len(cron_minutes) == 1 and cron_minutes[0] > threshold, (cron_minutes, threshold)
        # Set back by minutes_back, measured seconds later. Whole seconds on both sides, both floored (PHP's
        # time() floors; a bare ::bigint cast rounds, which once made it 19.98 for 20 minutes).
        assert minutes_back <= cron_minutes[0] < minutes_back + 1, cron_minutes
        assert failing_adhoc and failing_adhoc[0] >= alarm_threshold("FailingAdhocTasks"), failing_adhoc
        return {
            "published": {m["MetricName"]: m["Value"] for m in requests[0]["MetricData"]},
            "cron alarm threshold": threshold,
            "both agents' seconds": round(finished - started, 1),
            "logs": [log.strip().splitlines()[-1] for log in logs],
        }
    finally:
        site.db(f"DELETE FROM mdl_task_adhoc WHERE id = {int(task_id)}")
        if original:
            site.db(
                f"UPDATE mdl_config_plugins SET value = '{original}' WHERE plugin = 'tool_task' AND name = 'lastcronstart'"
            )
