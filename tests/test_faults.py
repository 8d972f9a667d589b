"""What keeps a fault small, read off the templates and node files (make rehearse-faults injects the faults
into a running site): a health check that depends on the node alone, a launch hook whose lease outlasts
long steps, Apache keeping connections longer than the load balancer."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from moodle_cfn import bootstrap
from moodle_cfn.layers import auto_scaling

BOOTSTRAP_DIR = Path(bootstrap.__file__).parent


def load_balancer_attribute(app_template: dict, key: str) -> str:
    attributes = app_template["Resources"]["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
    (value,) = [item["Value"] for item in attributes if item["Key"] == key]
    return value


def test_apache_keeps_idle_connections_longer_than_the_load_balancer(app_template):
    idle = int(load_balancer_attribute(app_template, "idle_timeout.timeout_seconds"))
    vhost = bootstrap.read("moodle-vhost.conf")
    assert re.search(r"^\s*KeepAlive On$", vhost, re.M)
    (keep_alive,) = re.findall(r"^\s*KeepAliveTimeout (\d+)$", vhost, re.M)
    assert int(keep_alive) > idle


def test_the_health_check_reads_only_the_nodes_own_disk():
    health = bootstrap.read("moodle-health.php")
    code = "\n".join(line for line in health.splitlines() if not line.lstrip().startswith("//"))
    for shared in ("pg_connect", "pg_pconnect", "pg_query", "moodledata", "curl", "Memcached", "Redis"):
        assert shared not in code, shared
    assert "/etc/moodle-cfn/ready.json" in code and "stale_flag" in code


def test_the_health_path_is_refused_to_anything_but_the_load_balancers_checks():
    vhost = bootstrap.read("moodle-vhost.conf")
    section = vhost[vhost.index('<Files "moodle-health.php">') : vhost.index("</Files>")]
    (rule,) = re.findall(r'Require expr "(.+)"', section)
    assert "%{HTTP_HOST} =~ /^[0-9]{1,3}([.][0-9]{1,3}){3}(:[0-9]+)?$/" in rule
    for header in ("X-Forwarded-For", "Via", "X-Amz-Cf-Id"):
        assert f"-z %{{HTTP:{header}}}" in rule
    assert "Require all granted" not in section


def test_the_launch_hooks_lease_outlasts_a_long_install_or_upgrade(app_template):
    group = app_template["Resources"]["WebAutoScalingGroup"]
    hook, _ = group["Properties"]["LifecycleHookSpecificationList"]
    ready = bootstrap.read("moodle-node-ready.sh")
    interval = int(re.search(r"heartbeat_seconds=\$\{MOODLE_CFN_HEARTBEAT_SECONDS:-(\d+)\}", ready).group(1))
    budget = int(re.search(r"heartbeat_budget=(\d+)", ready).group(1))
    # Several heartbeats fit in the hook's timeout, and they go on for as long as CloudFormation waits.
    assert hook["HeartbeatTimeout"] == auto_scaling.LIFECYCLE_HEARTBEAT_SECONDS >= 5 * interval
    assert group["CreationPolicy"]["ResourceSignal"]["Timeout"] == "PT1H"
    assert group["UpdatePolicy"]["AutoScalingRollingUpdate"]["PauseTime"] == "PT1H"
    assert budget >= 3600
    # The heartbeats run while the setup runs and stop before the hook is completed either way.
    assert ready.index("keep_lease &") < ready.index("moodle-node-setup.sh\" ||") < ready.index(
        "stop_lease\n  complete_hook CONTINUE")  # fmt: skip
    assert "stop_lease" in ready[ready.index("fail() {") : ready.index("trap 'fail")]
    # systemd lets a later boot (a warm-pool node entering service) run as long.
    unit = bootstrap.read("moodle-node-ready.service")
    assert int(re.search(r"^TimeoutStartSec=(\d+)$", unit, re.M).group(1)) > budget


def test_a_stale_warmed_node_signals_no_failure():
    ready = bootstrap.read("moodle-node-ready.sh")
    discard = ready[ready.index("discard_if_stale() {") : ready.index("moodle_answers() {")]
    assert "complete_hook ABANDON" in discard and "signal" not in discard.replace("signalled", "")
    assert "fail " not in discard and "exit 0" in discard


def pool_sections(text: str) -> dict[str, str]:
    """php-fpm-moodle.conf's pools by name."""
    parts = re.split(r"^\[(\w+)\]$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_health_check_has_a_php_fpm_pool_that_pages_cannot_occupy():
    pools = pool_sections(bootstrap.read("php-fpm-moodle.conf"))
    assert set(pools) == {"www", "health"}
    assert re.search(r"^listen = @FPM_SOCKET@$", pools["www"], re.M)
    assert re.search(r"^listen = @FPM_HEALTH_SOCKET@$", pools["health"], re.M)
    assert re.search(r"^pm = static$", pools["health"], re.M)
    # No page shedding on the health pool, and its check ends within the target group's timeout.
    assert "auto_prepend_file" not in pools["health"] and "auto_prepend_file" in pools["www"]
    assert re.search(r"^request_terminate_timeout = 5$", pools["health"], re.M)
    vhost = bootstrap.read("moodle-vhost.conf")
    section = vhost[vhost.index('<Files "moodle-health.php">') : vhost.index("</Files>")]
    assert 'SetHandler "proxy:unix:@FPM_HEALTH_SOCKET@|fcgi://moodle-health"' in section
    # Every platform names the health socket apart from the pages' one.
    for platform in ("platform-al2023.sh",):
        text = bootstrap.read(platform)
        sockets = dict(re.findall(r"^readonly (fpm_socket|fpm_health_socket)=(\S+)$", text, re.M))
        assert len(set(sockets.values())) == 2, sockets


def test_a_page_waits_for_a_worker_at_most_the_bound_then_gets_503_with_retry_after():
    pools = pool_sections(bootstrap.read("php-fpm-moodle.conf"))
    assert re.search(r"^listen\.backlog = @LISTEN_BACKLOG@$", pools["www"], re.M)
    assert "env[MOODLE_CFN_QUEUE_SECONDS] = @QUEUE_SECONDS@" in pools["www"]
    limit = bootstrap.read("moodle-queue-limit.php")
    assert "HTTP_X_MOODLE_CFN_RECEIVED" in limit and "http_response_code(503)" in limit
    assert "Retry-After" in limit and "no-store" in limit
    vhost = bootstrap.read("moodle-vhost.conf")
    # Apache's clock, over any header of that name a client sent.
    assert 'RequestHeader set X-Moodle-Cfn-Received "%t"' in vhost
    assert re.search(r'^\s*Header always set Retry-After "\d+" "expr=%\{REQUEST_STATUS\} == 503', vhost, re.M)
    # One Apache process, so that mod_proxy's limit is the node's; refusals never disable the pool.
    assert 'SetHandler "proxy:unix:@FPM_SOCKET@|fcgi://moodle-pages"' in vhost
    assert "ProxySet max=@PAGE_CONNECTIONS@ acquire=10 retry=0" in vhost
    for directive in ("ThreadLimit", "ThreadsPerChild", "MaxRequestWorkers"):
        assert re.search(rf"^\s*{directive} @APACHE_THREADS@$", vhost, re.M), directive


def test_every_database_connection_has_keepalives_and_a_user_timeout():
    service = bootstrap.read("moodle-pg-service.conf")
    values = dict(re.findall(r"^(\w+)=(\S+)$", service, re.M))
    # AWS's fast-failover guide: keepalive 1 s, interval 1 s, 5 probes ("within five seconds").
    assert values == {"keepalives": "1", "keepalives_idle": "1", "keepalives_interval": "1",
                      "keepalives_count": "5", "tcp_user_timeout": "5000"}  # fmt: skip
    assert re.search(r"^\[moodle-cfn\]$", service, re.M)
    config = bootstrap.read("config.php")
    assert "putenv('PGSERVICE=moodle-cfn')" in config
    assert "putenv('PGSERVICEFILE=' . $pgservice)" in config
    assert "$pgservice = '/usr/share/moodle-cfn/moodle-pg-service.conf'" in config
    assert re.search(r"'connecttimeout' => 3,", config)


QUEUE_CASES = {
    # (seconds the request waited before PHP ran, the header as Apache set it): shed?
    "waited 11 s": (11, True),
    "waited 9 s": (9, False),
    "no header (a request Apache did not mark)": (None, False),
}


@pytest.mark.skipif(shutil.which("php") is None, reason="php-cli is not installed (.ci/run installs it)")
@pytest.mark.parametrize("case", sorted(QUEUE_CASES))
def test_the_queue_limit_sheds_only_a_page_that_waited_longer_than_the_bound(case, tmp_path):
    """moodle-queue-limit.php run as PHP runs it before a page: 503 and nothing else past the bound."""
    waited, shed = QUEUE_CASES[case]
    page = tmp_path / "page.php"
    page.write_text("<?php echo 'the page ran';\n")
    received = "" if waited is None else f"t={int((time.time() - waited) * 1_000_000)}"
    script = (f"$_SERVER['HTTP_X_MOODLE_CFN_RECEIVED'] = '{received}'; "
              f"require '{BOOTSTRAP_DIR / 'moodle-queue-limit.php'}'; require '{page}';")  # fmt: skip
    result = subprocess.run(["php", "-r", script], capture_output=True, text=True, check=True,
                            env={"MOODLE_CFN_QUEUE_SECONDS": "10", "PATH": "/usr/bin:/bin"})  # fmt: skip
    if shed:
        assert result.stdout == "The site is busy. Please try again in a few seconds.\n"
    else:
        assert result.stdout == "the page ran"
