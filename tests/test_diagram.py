"""The architecture diagram is drawn from the templates and the committed one is current."""

from __future__ import annotations

import re

from moodle_cfn import diagram
from moodle_cfn.cli import main
from tests.conftest import ROOT

COMMITTED = ROOT / "docs" / "architecture.dot"


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
    assert (tmp_path / "architecture.dot").read_text() == COMMITTED.read_text()
    nodes, count = diagram.counts(COMMITTED.read_text())
    assert capsys.readouterr().out.endswith(f"{nodes} nodes, {count} edges\n")
