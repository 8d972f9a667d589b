"""Fault rehearsal: the faults a highly available site must keep small, injected into the rig's running
two-node site, with what a node, Auto Scaling and a viewer would see measured.

Run by `make rehearse-faults` (one leg, memcached x PostgreSQL 17 on Moodle 5.1 unless RIG_FAULT_LEG names
another: the faults are in the node files, the database and the shared disk, not in the cache engine; 5.1
runs on both Debian 12's PHP 8.2 and Debian 13's PHP 8.4, and is the default path; memcached because its
application cache needs the store plugin, whose 5.1 behaviour this leg puts under load, and the node
rehearsal's 5.1 leg runs valkey). Same rig as
`make rehearse-node` (tests/node_rig/rehearse_node.py): real Moodle from the operator's bundle, real
PostgreSQL, Apache and PHP-FPM per node, moto and a stand-in for AWS. Measurements go to .rig/faults.json.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.node_rig.aws import Aws, Imds
from tests.node_rig.efs_standin import efs_layer
from tests.node_rig.node import Browser, Node

# The faults that stop answering (collected here, on this module's site; they run first, on a fresh site).
from tests.node_rig.outage_scenarios import (  # noqa: F401
    EFS,
    test_a_cache_cluster_black_holed_for_30_s,
    test_a_storm_at_three_times_capacity_on_a_course_page,
    test_the_database_reader_black_holed_for_60_s,
    test_the_database_writer_black_holed_for_60_s,
    test_the_shared_disk_stalled_for_60_s,
)
from tests.node_rig.rehearse_node import (  # noqa: F401  (aws and tls are fixtures)
    ADMIN_PASSWORD,
    CACHE,
    HEARTBEAT_SECONDS,
    INSTALL_LINE,
    NODE_SETUP_FAILED,
    SITE_HOST,
    UPGRADE_LINE,
    WORK,
    Site,
    aws,
    bumped_bundle,
    bundle_of,
    every_aws_call_a_node_made_is_allowed,
    health,
    leg_parts,
    php_refuses,
    run_database_role_function,
    running_site,
    sha256,
    tls,
    web_root,
)

LEG = os.environ.get("RIG_FAULT_LEG", "memcached-17-5.1")
FAULTS = CACHE / "faults.json"
OUTAGE_SECONDS = 60
# What the node files write on the shared disk (moodle-node-setup.sh).
MAINTENANCE_OWNER = ".moodle-cfn/maintenance-owner.json"
INSTALL_MARKER = ".moodle-cfn/install-started"
SPARE_ADDRESS = "127.0.0.13"


def record(scenario: str, **measured: object) -> None:
    """Keep one scenario's measurements in .rig/faults.json (the closing note and README quote them)."""
    results = json.loads(FAULTS.read_text()) if FAULTS.exists() else {}
    results[scenario] = measured
    FAULTS.parent.mkdir(parents=True, exist_ok=True)
    FAULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{scenario}: {measured}")


# Both nodes told they have one vCPU each (the machine's two cores are shared by both, the database and the
# caches): 8 page workers each, so the load of twice as many users stays within what the rig can drive.
FAULT_NODE_SIZE = {"RIG_VCPUS": "1"}


@pytest.fixture(scope="module")
def site(tls, aws: Aws) -> Iterator[Site]:  # noqa: F811
    refused = php_refuses(leg_parts(LEG)[2])
    assert refused is None, f"{LEG}: {refused} (RIG_FAULT_LEG picks a leg this machine runs)"
    # The shared disk through the EFS stand-in, which the stall scenario stops.
    with running_site(LEG, 0, tls, aws, efs_layer(EFS), node_size=FAULT_NODE_SIZE) as booted:
        for status, output in booted.boot:
            assert status == 0, output[-4000:]
        yield booted


def failures(output: str) -> list[str]:
    return [line for line in output.splitlines() if NODE_SETUP_FAILED in line]


def page_status(node: Node, browser: Browser, path: str = "/login/index.php") -> int:
    try:
        return browser.request(node, "GET", path)[0]
    except (OSError, http.client.HTTPException):
        return 0


@dataclass
class Sample:
    at: float
    node: str
    status: int


class Poller:
    """Threads that call `probe(node)` on each node in a loop, recording (time, node, status)."""

    def __init__(self, nodes: list[Node], probe: Callable[[Node], int], per_node: int, pause: float) -> None:
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.loop, args=(node, probe, pause), daemon=True)
            for node in nodes
            for _ in range(per_node)
        ]

    def loop(self, node: Node, probe: Callable[[Node], int], pause: float) -> None:
        while not self.stop.is_set():
            status = probe(node)
            self.samples.append(Sample(time.monotonic(), node.name, status))
            time.sleep(pause)

    def __enter__(self) -> Poller:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_the_caches_serve_before_any_fault(site: Site) -> None:
    """The site under test: sessions in the session cluster, Moodle's application cache in its own (on a
    memcached leg, through the memcached store plugin)."""
    browser = Browser(SITE_HOST)
    assert not browser.log_in(site.nodes[1], "admin", ADMIN_PASSWORD).startswith("/login/")
    assert page_status(site.nodes[0], browser, "/my/") == 200
    application = site.cache_keys("application")
    assert any(key.startswith("mdl_") for key in application), application[:20]
    assert not any(key.startswith("mdl_") for key in site.cache_keys("session"))


def test_the_health_path_answers_only_the_load_balancer(site: Site) -> None:
    node = site.nodes[0]

    def status(headers: dict[str, str]) -> int:
        connection = http.client.HTTPConnection(node.address, 80, timeout=30)
        connection.request("GET", "/lb-health", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    # The load balancer's own check: addressed to the node's IP, no relay headers.
    assert status({"Host": node.address}) == 200
    assert status({"Host": f"{node.address}:80"}) == 200
    refused = {
        "the site's name": {"Host": SITE_HOST},
        "relayed by the load balancer's listener": {"Host": node.address, "X-Forwarded-For": "203.0.113.7"},
        "through CloudFront": {
            "Host": SITE_HOST,
            "Via": "1.1 abc.cloudfront.net (CloudFront)",
            "X-Amz-Cf-Id": "x",
            "X-Forwarded-For": "203.0.113.7",
        },
        "CloudFront's id alone": {"Host": node.address, "X-Amz-Cf-Id": "x"},
    }
    seen = {case: status(headers) for case, headers in refused.items()}
    assert set(seen.values()) == {403}, seen


def test_a_database_outage_terminates_no_node_and_pages_come_back_at_once(site: Site) -> None:
    """PostgreSQL stopped for 60 s under load (what an Aurora failover or a minor-version patch does): the
    health checks Auto Scaling acts on stay 200 on every node; pages fail while the database is away and
    answer again as soon as it is back, each PHP-FPM worker reopening its persistent connection."""
    browsers = {}
    for node in site.nodes:
        browser = Browser(SITE_HOST)
        assert not browser.log_in(node, "admin", ADMIN_PASSWORD).startswith("/login/")
        browsers[node.name] = browser
    pages = Poller(site.nodes, lambda node: page_status(node, browsers[node.name], "/my/"), 2, 0.05)
    checks = Poller(site.nodes, health, 1, 1.0)
    with pages, checks:
        time.sleep(5)
        stopped = time.monotonic()
        site.postgres.pause()
        time.sleep(OUTAGE_SECONDS)
        site.postgres.resume()
        back = time.monotonic()
        time.sleep(30)
    before = [s for s in pages.samples if s.at < stopped]
    during = [s for s in pages.samples if stopped + 1 < s.at < back]
    after = [s for s in pages.samples if s.at > back]
    assert before and all(s.status == 200 for s in before), {s.status for s in before}
    assert during and all(s.status != 200 for s in during)
    # What Auto Scaling reads (the load balancer's health check): never unhealthy, so no node is replaced.
    unhealthy = [s for s in checks.samples if s.status != 200]
    assert not unhealthy, unhealthy[:5]
    recovered = {}
    errors_after_recovery = {}
    for node in site.nodes:
        mine = [s for s in after if s.node == node.name]
        first_ok = next(s for s in mine if s.status == 200)
        recovered[node.name] = round(first_ok.at - back, 2)
        errors_after_recovery[node.name] = sum(1 for s in mine if s.at > first_ok.at and s.status != 200)
    record(
        "database stopped for 60 s under load",
        health_checks=len(checks.samples),
        unhealthy_health_checks=len(unhealthy),
        pages_during_outage=len(during),
        outage_statuses=sorted({s.status for s in during}),
        seconds_to_first_page_after_return=recovered,
        error_pages_after_first_good_page=errors_after_recovery,
        pages_after_return=len(after),
    )
    assert all(seconds < 10 for seconds in recovered.values()), recovered
    assert all(count == 0 for count in errors_after_recovery.values()), errors_after_recovery


@pytest.mark.parametrize("role", ["application", "session"])
def test_a_lost_cache_node_terminates_no_node_and_pages_come_back(site: Site, role: str) -> None:
    """One cache cluster's node gone for 20 s (a node failure or replacement) and back empty: the health
    checks stay 200; what viewers see meanwhile is measured; pages answer again once it is back."""
    browser = Browser(SITE_HOST)
    assert not browser.log_in(site.nodes[0], "admin", ADMIN_PASSWORD).startswith("/login/")
    pages = Poller(site.nodes, lambda node: page_status(node, browser, "/my/"), 1, 0.1)
    checks = Poller(site.nodes, health, 1, 1.0)
    with pages, checks:
        time.sleep(3)
        stopped = time.monotonic()
        site.stop_cache(role)
        time.sleep(20)
        site.start_cache(role)
        back = time.monotonic()
        time.sleep(10)
    during = [s for s in pages.samples if stopped + 1 < s.at < back]
    after = [s for s in pages.samples if s.at > back + 1]
    unhealthy = [s for s in checks.samples if s.status != 200]
    assert not unhealthy, unhealthy[:5]
    assert during and after
    first_ok = next((s.at for s in pages.samples if s.at > back and s.status == 200), None)
    record(
        f"{site.engine} {role} cache node lost for 20 s",
        unhealthy_health_checks=len(unhealthy),
        pages_while_lost=len(during),
        statuses_while_lost=sorted({s.status for s in during}),
        share_of_pages_200_while_lost=round(sum(s.status == 200 for s in during) / len(during), 2),
        seconds_to_first_page_after_return=None if first_ok is None else round(first_ok - back, 2),
        statuses_after_return=sorted({s.status for s in after}),
    )
    # A lost session cache logs its users out (their sessions were there); the site itself answers.
    fresh = Browser(SITE_HOST)
    assert all(page_status(node, fresh) == 200 for node in site.nodes)
    assert not fresh.log_in(site.nodes[1], "admin", ADMIN_PASSWORD).startswith("/login/")


def bundle_with_broken_plugin(release: str) -> Path:
    """The release's bundle plus local_rigbroken, which depends on a plugin that does not exist."""
    target = WORK / f"moodle-{release}-broken-plugin.tar.gz"
    tree = WORK / "broken"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(bundle_of(release)), "-C", str(tree)], check=True)
    plugin = tree / "moodle" / f"{web_root(release)}local" / "rigbroken"
    (plugin / "lang" / "en").mkdir(parents=True)
    (plugin / "version.php").write_text(
        "<?php\ndefined('MOODLE_INTERNAL') || die();\n$plugin->component = 'local_rigbroken';\n"
        "$plugin->version = 2026113000;\n$plugin->requires = 2024100700;\n"
        "$plugin->dependencies = ['mod_rigmissing' => 2026010100];\n"
    )
    (plugin / "lang" / "en" / "local_rigbroken.php").write_text(
        "<?php\ndefined('MOODLE_INTERNAL') || die();\n$string['pluginname'] = 'Rig broken plugin';\n"
    )
    subprocess.run(["tar", "-czf", str(target), "-C", str(tree), "moodle"], check=True)
    shutil.rmtree(tree)
    return target


def use_bundle(site: Site, node: Node, bundle: Path, name: str) -> dict[str, str]:
    """Point `node`'s launch-template inputs at another code bundle; the inputs it had before."""
    previous = dict(site.parameters)
    uri = site.aws.upload("rig-code", name, str(bundle))
    # Through the site, so that the rig's AWS checks the node's calls against the policies of these inputs.
    site.write_init_files(node, MoodleCodeS3Uri=uri, MoodleCodeSha256=sha256(bundle))
    return previous | {"MoodleCodeS3Uri": uri, "MoodleCodeSha256": sha256(bundle)}


def test_an_upgrade_refused_by_a_plugin_dependency_leaves_the_site_serving(site: Site) -> None:
    node1, node2 = site.nodes
    maintenance = site.shared / "data" / "climaintenance.html"
    broken = bundle_with_broken_plugin(site.release)
    use_bundle(site, node2, broken, broken.name)
    browser = Browser(SITE_HOST)
    with Poller([node1], lambda node: page_status(node, browser), 1, 0.1) as old_node:
        started = time.monotonic()
        status, output = node2.setup()
        took = time.monotonic() - started
        time.sleep(2)
    assert status != 0
    (line,) = failures(output)
    assert "failed before changing the database" in line and "maintenance mode is off" in line, line
    assert "local_rigbroken" in line or "plugin" in line, line
    assert not maintenance.exists() and not (site.shared / MAINTENANCE_OWNER).exists()
    assert site.db("SELECT count(*) FROM mdl_config_plugins WHERE plugin = 'local_rigbroken'") == "0"
    # The node on the old code served throughout, but for the seconds maintenance mode was on.
    unavailable = [s for s in old_node.samples if s.status != 200]
    assert old_node.samples[-1].status == 200 and page_status(node1, Browser(SITE_HOST)) == 200
    assert health(node1) == 200 and health(node2) == 503
    record(
        "upgrade refused by a plugin's missing dependency",
        failure_line=line.split("moodle-node-setup: ", 1)[1],
        failed_node_setup_seconds=round(took, 1),
        old_node_pages=len(old_node.samples),
        old_node_pages_not_200=len(unavailable),
        old_node_seconds_not_200=round(len(unavailable) * 0.1, 1),
    )
    # The failed node, given its old inputs back (the stack's rollback), serves again.
    site.write_init_files(node2)
    status, output = node2.setup()
    assert status == 0 and health(node2) == 200, output[-3000:]


def test_a_node_killed_between_the_upgrade_and_maintenance_off_is_cleaned_up_by_the_next(site: Site) -> None:
    node1, node2 = site.nodes
    maintenance = site.shared / "data" / "climaintenance.html"
    upgrade_bundle = bumped_bundle(site.release)
    inputs = use_bundle(
        site, node2, upgrade_bundle.path, f"moodle-{site.release}-bumped-{site.leg}-faults.tar.gz"
    )
    process = node2.start_setup()
    killed_at = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        listing = subprocess.run(
            ["pgrep", "-af", "maintenance.php --disable"], capture_output=True, text=True
        )
        if listing.stdout.strip():
            node2.kill_all()
            killed_at = time.monotonic()
            break
        time.sleep(0.01)
    output, _ = process.communicate(timeout=60)
    assert killed_at is not None, output[-3000:]
    assert UPGRADE_LINE in output
    # The upgrade committed, maintenance mode stayed on, with the record of whose it is.
    assert site.db(
        "SELECT value FROM mdl_config_plugins WHERE plugin = 'mod_label' AND name = 'version'"
    ) == str(upgrade_bundle.version)
    assert maintenance.exists() and (site.shared / MAINTENANCE_OWNER).exists()
    assert page_status(node1, Browser(SITE_HOST)) == 503  # every node serves the maintenance page
    # The next node of the rolling update (node 1 with the new inputs) finds it on, nothing pending: off.
    site.parameters.update(inputs)
    site.write_init_files(node1)
    status, output = node1.setup()
    assert status == 0, output[-3000:]
    (line,) = [line for line in output.splitlines() if "maintenance mode was left on by" in line]
    assert "turning it off" in line and UPGRADE_LINE not in output
    assert not maintenance.exists() and not (site.shared / MAINTENANCE_OWNER).exists()
    assert page_status(node1, Browser(SITE_HOST)) == 200
    record(
        "node killed after the upgrade committed, before maintenance mode was turned off",
        cleared_by_next_node_seconds_after_the_kill=round(time.monotonic() - killed_at, 1),
        line=line.split("moodle-node-setup: ", 1)[1],
    )


def test_after_an_upgrade_a_node_with_the_previous_inputs_serves_the_database_code(site: Site) -> None:
    """A stack rollback after the upgrade above committed: the launch template goes back to the old bundle.
    The node serves the code the database runs (its archive on EFS) and signals success."""
    node2 = site.nodes[1]
    bumped = site.parameters["MoodleCodeS3Uri"]
    assert "bumped" in bumped  # the previous test upgraded the site
    original = {
        "MoodleCodeS3Uri": site.aws.upload(
            "rig-code", f"moodle-{site.release}.tar.gz", str(bundle_of(site.release))
        ),
        "MoodleCodeSha256": sha256(bundle_of(site.release)),
    }
    cases = {
        "the previous bundle": original,
        # MoodleVersion older than the database's release (a rollback across a major upgrade looks so).
        "an older MoodleVersion": {**original, "MoodleVersion": "4.4.0"},
    }
    for case, inputs in cases.items():
        site.write_init_files(node2, **inputs)
        instance = node2.imds.metadata["instance-id"]
        started = time.monotonic()
        status, output = node2.setup()
        assert status == 0, f"{case}: {output[-3000:]}"
        assert "the code the database runs" in output and INSTALL_LINE not in output, case
        assert site.aws.calls_of("SignalResource", instance)[-1]["Status"] == "SUCCESS"
        assert health(node2) == 200
        assert page_status(node2, Browser(SITE_HOST)) == 200
        line = next(line for line in output.splitlines() if "the code the database runs" in line)
        record(f"rollback: a node given {case}", boot_seconds=round(time.monotonic() - started, 1),
               line=line.split(": ", 1)[1])  # fmt: skip
    version = site.db("SELECT value FROM mdl_config_plugins WHERE plugin = 'mod_label' AND name = 'version'")
    assert version in node2.file(f"/var/www/moodle/{web_root(site.release)}mod/label/version.php")
    site.write_init_files(node2)


def test_an_interrupted_first_install_is_started_again_by_the_next_node(site: Site) -> None:
    """A new site whose first node dies part-way through the install (after mdl_config exists): the next
    node drops the half-made tables and installs the site, instead of dying with "a downgrade?"."""
    database, shared = "interrupted", site.shared.parent / "efs-interrupted"
    site.postgres.sql(f'CREATE DATABASE {database} OWNER "moodleadmin"')
    run_database_role_function(site, database)
    shared.mkdir()
    code = site.shared.parent / "efs-interrupted-code"
    code.mkdir()
    imds = Imds({**site.nodes[0].imds.metadata, "instance-id": "i-0interrupted"})
    environment = {**site.nodes[0].environment, "RIG_SHARED_DIR": str(shared), "RIG_CODE_DIR": str(code),
                   "RIG_IMDS_URL": imds.url, "RIG_NODE_ADDRESS": SPARE_ADDRESS}  # fmt: skip
    node = Node("interrupted", SPARE_ADDRESS, shared.parent / "interrupted", environment, imds=imds)
    try:
        node.boot_namespace()
        site.write_init_files(node, DatabaseName=database)
        process = node.start_setup()
        started = time.monotonic()
        tables_at = None
        while process.poll() is None and time.monotonic() - started < 900:
            exists = site.postgres.sql("SELECT to_regclass('public.mdl_config') IS NOT NULL", database)
            if exists == "t":
                tables_at = time.monotonic()
                time.sleep(3)  # well into the install: core's tables made, config being written
                node.kill_all()
                break
            time.sleep(0.1)
        output, _ = process.communicate(timeout=60)
        assert tables_at is not None, output[-3000:]
        assert INSTALL_LINE in output and "node ready" not in output
        assert (shared / INSTALL_MARKER).exists()
        half = site.postgres.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database)
        heartbeats_before = len(site.aws.calls_of("RecordLifecycleActionHeartbeat", "i-0interrupted"))
        started = time.monotonic()
        status, output = node.setup()
        took = time.monotonic() - started
        assert status == 0, output[-4000:]
        (line,) = [line for line in output.splitlines() if "did not finish" in line]
        assert "installing again" in line and INSTALL_LINE in output
        assert not (shared / INSTALL_MARKER).exists()
        assert site.postgres.sql("SELECT count(*) FROM mdl_user WHERE username = 'admin'", database) == "1"
        browser = Browser(SITE_HOST)
        assert not browser.log_in(node, "admin", ADMIN_PASSWORD).startswith("/login/index.php")
        # A long step keeps its lease: heartbeats all through the reinstall, before the hook's completion.
        heartbeats = site.aws.calls_of("RecordLifecycleActionHeartbeat", "i-0interrupted")[heartbeats_before:]
        assert len(heartbeats) >= took / HEARTBEAT_SECONDS / 2, (len(heartbeats), took)
        record(
            "first install killed after mdl_config existed",
            tables_left_by_the_killed_install=int(half),
            reinstall_seconds=round(took, 1),
            heartbeats_during_reinstall=len(heartbeats),
            line=line.split("moodle-node-setup: ", 1)[1],
        )
    finally:
        node.stop()
        imds.stop()


def test_a_stale_warmed_node_is_discarded_without_a_failure_signal(site: Site) -> None:
    node = site.nodes[0]
    instance = node.imds.metadata["instance-id"]
    group = node.imds.metadata["tags/instance/aws:autoscaling:groupName"]
    signals = len(site.aws.calls_of("SignalResource", instance))
    site.aws.groups[group] = "3"
    try:
        status, output = node.setup(first_boot=False)
    finally:
        site.aws.groups[group] = "1"
    assert status == 0 and "discarding this stale warmed node" in output
    assert site.aws.calls_of("CompleteLifecycleAction", instance)[-1]["LifecycleActionResult"] == "ABANDON"
    assert len(site.aws.calls_of("SignalResource", instance)) == signals
    record("stale warmed node", line=re.sub(r"^\S+ ", "", next(
        line for line in output.splitlines() if "discarding" in line)))  # fmt: skip
    status, output = node.setup(first_boot=False)
    assert status == 0, output[-3000:]


def test_a_tampered_code_archive_stops_the_node_with_one_line(site: Site) -> None:
    """The archive of the code the database runs, changed on EFS after its digest was taken (what a
    compromised node with root could do; Moodle's user cannot reach it): a node that would unpack it stops
    with one line and abandons its launch, and runs again once the archive is whole."""
    node = site.nodes[1]
    name = json.loads((site.shared / ".moodle-cfn" / "database-code.json").read_text())["archive"]
    archive = site.code_releases / f"{name}.tar.gz"
    whole = archive.read_bytes()
    instance = node.imds.metadata["instance-id"]
    archive.write_bytes(whole + b"tampered")
    try:
        status, output = node.setup()
    finally:
        archive.write_bytes(whole)
    failures = [line for line in output.splitlines() if NODE_SETUP_FAILED in line]
    assert status != 0 and len(failures) == 1, output[-3000:]
    assert "does not match its SHA-256" in failures[0], failures
    assert site.aws.calls_of("CompleteLifecycleAction", instance)[-1]["LifecycleActionResult"] == "ABANDON"
    record("tampered code archive", line=failures[0].split("moodle-node-setup: ", 1)[1])
    status, output = node.setup()
    assert status == 0, output[-3000:]
    assert health(node) == 200


# Last of the module: every call the faults above made, against the stack's own policies.
def test_every_aws_call_a_node_made_is_allowed(site: Site) -> None:
    every_aws_call_a_node_made_is_allowed(site)
