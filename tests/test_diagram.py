"""The architecture figure and the detailed graph are drawn from the templates and the committed ones are
current; the figure reads as operators expect (AZ columns in order, tiers in rows)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from moodle_cfn import diagram, figure
from moodle_cfn.cli import main
from tests.conftest import ROOT

COMMITTED = ROOT / "docs" / "architecture-details.dot"
FIGURE = ROOT / "docs" / "architecture.dot"
DOT = shutil.which("dot")


def edges(dot: str) -> set[tuple[str, str, str]]:
    return set(re.findall(r'^\s+"([^"]+)" -> "([^"]+)" \[label="([^"]*)"', dot, re.M))


def test_committed_diagram_is_current():
    assert COMMITTED.read_text() == diagram.dot_source(diagram.built_templates()), "run `moodle-cfn diagram`"


def test_the_request_path_and_the_data_paths_are_drawn():
    drawn = edges(COMMITTED.read_text())
    path = [
        ("viewers", "app_Distribution", "HTTPS"),
        ("app_Distribution", "app_LoadBalancer", "origin"),
        ("app_LoadBalancer", "app_WebAutoScalingGroup", "TCP 80"),
        ("app_WebAutoScalingGroup", "data_DatabaseCluster", "TCP 5432"),
        ("app_WebAutoScalingGroup", "cache_SessionMemcachedCluster", "TCP 11211"),
        ("app_WebAutoScalingGroup", "cache_SessionValkeyReplicationGroup", "TCP 6379"),
        ("app_WebAutoScalingGroup", "data_FileSystemMountTarget1", "TCP 2049"),
        ("network_AppSubnet1", "network_NatGateway1", "0.0.0.0/0"),
        ("network_NatGateway1", "network_InternetGateway", "0.0.0.0/0"),
        ("network_InternetGateway", "internet", ""),
        ("data_DatabaseCluster", "data_BackupVault", "daily backup"),
    ]
    assert [edge for edge in path if edge not in drawn] == []
    # A cache only takes traffic on its own engine's port.
    assert ("app_WebAutoScalingGroup", "cache_SessionMemcachedCluster", "TCP 6379") not in drawn


def test_per_az_resources_sit_in_their_az():
    dot = COMMITTED.read_text()
    zone3 = dot.split('subgraph "cluster_network_az3"')[1].split("}")[0]
    assert {
        "network_AppSubnet3",
        "network_DataSubnet3",
        "network_PublicSubnet3",
        "network_NatGateway3",
    } == set(re.findall(r'"(network_[A-Za-z0-9]+)" \[label', zone3))
    assert "(if HasAz3)" in zone3


def test_the_command_writes_the_dot_source(tmp_path, capsys):
    assert main(["diagram", "--out", str(tmp_path), "--dot-only"]) == 0
    assert (tmp_path / "architecture-details.dot").read_text() == COMMITTED.read_text()
    assert (tmp_path / "architecture.dot").read_text() == FIGURE.read_text()
    nodes, count = diagram.counts(COMMITTED.read_text())
    assert capsys.readouterr().out.endswith(f"{nodes} nodes, {count} edges\n")


def test_committed_figure_is_current():
    assert FIGURE.read_text() == figure.dot_source(diagram.built_templates()), "run `moodle-cfn diagram`"


def test_the_figure_names_icons_relative_to_the_icon_set():
    # The same DOT on every machine: Graphviz finds the icons through -Gimagepath at render time.
    images = re.findall(r'image="([^"]+)"', FIGURE.read_text())
    assert images and all(not image.startswith("/") for image in images)
    assert all((figure.icon_directory() / image).is_file() for image in images)


def test_graphviz_is_installed_where_the_suite_runs_in_ci():
    if not os.environ.get("MOODLE_CFN_REQUIRE_GRAPHVIZ"):
        pytest.skip("Graphviz only required where MOODLE_CFN_REQUIRE_GRAPHVIZ is set (.ci/run)")
    assert DOT is not None, "install graphviz (apt-get install graphviz), as .ci/run does"


@pytest.mark.skipif(DOT is None, reason="Graphviz is not installed (.ci/run installs it)")
def test_the_figure_draws_az_columns_in_order_and_tiers_in_rows():
    plain = subprocess.run([DOT, f"-Gimagepath={figure.icon_directory()}", "-Tplain", str(FIGURE)],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    position = {
        m[0]: (float(m[1]), float(m[2])) for m in re.findall(r"^node (\S+) ([\d.]+) ([\d.]+)", plain, re.M)
    }
    for kind in ("LoadBalancerNode", "WebNode", "CacheNodes"):
        xs = [position[f"{kind}{slot}"][0] for slot in (1, 2, 3)]
        assert xs == sorted(xs), f"{kind}: AZ columns out of order {xs}"
    for slot in (1, 2, 3):
        ys = [position[f"{kind}{slot}"][1] for kind in ("LoadBalancerNode", "WebNode", "CacheNodes")]
        assert ys == sorted(ys, reverse=True), f"AZ {slot}: tiers out of order {ys}"  # dot's y grows upwards
    assert position["InternetGateway"][1] > position["LoadBalancerNode1"][1] > position["FileSystem"][1]
    assert position["CloudFront"][0] < position["LoadBalancerNode1"][0]
