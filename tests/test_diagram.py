"""The architecture figure and the detailed graph are drawn from the templates and the committed ones are
current; the figure reads as operators expect: AZ columns in order, tiers in rows, one load balancer in the
subnets it really sits in, the Auto Scaling group and the two cache clusters as named boundaries, an arrow
from the web tier to every store, conditions in words; the detailed graph draws its AZs in order too."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess

import pytest

from moodle_cfn import diagram, figure, figure_words
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
        ("network_AppSubnet1", "network_NatGateway1", ""),  # dotted: a default route, named in the title
        ("network_NatGateway1", "network_InternetGateway", ""),
        ("network_InternetGateway", "internet", ""),
        ("data_DatabaseCluster", "data_BackupVault", "daily backup"),
    ]
    assert [edge for edge in path if edge not in drawn] == []
    assert '"network_AppSubnet1" -> "network_NatGateway1" [label="", tooltip="0.0.0.0/0", style=dotted]' in (
        COMMITTED.read_text()
    )
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
    assert "(only when 3 AZs are chosen)" in zone3


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
    images = re.findall(r'SRC="([^"]+)"', FIGURE.read_text())
    assert images and all(not image.startswith("/") for image in images)
    assert all((figure.icon_directory() / image).is_file() for image in images)


def test_graphviz_is_installed_where_the_suite_runs_in_ci():
    if not os.environ.get("MOODLE_CFN_REQUIRE_GRAPHVIZ"):
        pytest.skip("Graphviz only required where MOODLE_CFN_REQUIRE_GRAPHVIZ is set (.ci/run)")
    assert DOT is not None, "install graphviz (apt-get install graphviz), as .ci/run does"


def cluster_body(dot: str, name: str) -> str:
    """The text of one DOT cluster, nested clusters included."""
    start = dot.index(f'subgraph "cluster_{name}" {{')
    depth = 0
    for end in range(start, len(dot)):
        depth += {"{": 1, "}": -1}.get(dot[end], 0)
        if depth == 0 and dot[end] == "}":
            return dot[start : end + 1]
    raise AssertionError(f"cluster_{name} is not closed")


def node_ids(dot: str) -> set[str]:
    return set(re.findall(r'^"([^"]+)" \[', dot, re.M))


def test_the_figure_draws_one_load_balancer_the_auto_scaling_group_and_two_cache_clusters():
    dot = FIGURE.read_text()
    balancers = re.findall(r'^"([^"]+)" \[.*aws/network/elb-application-load-balancer', dot, re.M)
    assert balancers == ["LoadBalancer"]
    assert node_ids(cluster_body(dot, "web_asg")) == {"WebNode1", "WebNode2", "WebNode3"}
    caches = re.findall(r'subgraph "cluster_cache_(\w+)" \{\nlabel="([^"]+)"', dot)
    assert caches == [
        ("Session", "ElastiCache: Moodle sessions"),
        ("Application", "ElastiCache: Moodle application cache (MUC)"),
    ]
    assert node_ids(cluster_body(dot, "aurora")) == {"DatabaseInstance1", "DatabaseInstance2"}


def test_the_figure_has_an_arrow_to_every_tier():
    arrows = {
        (
            a,
            b,
            attributes.split("lhead=")[-1].split(",")[0] if "lhead=" in attributes else "",
            "ltail" in attributes,
        )
        for a, b, attributes in re.findall(r'^"([^"]+)" -> "([^"]+)" \[(.*)\]$', FIGURE.read_text(), re.M)
        if "style=invis" not in attributes
    }
    assert {
        ("CloudFront", "LoadBalancer", "", False),
        ("LoadBalancer", "WebNode2", "cluster_web_asg", False),
        ("WebNode2", "DatabaseInstance1", "cluster_aurora", True),
        ("WebNode2", "FileSystem", "", True),
        ("WebNode2", "SessionCache", "cluster_cache_Session", True),
        ("WebNode2", "ApplicationCache", "cluster_cache_Application", True),
    } <= arrows


def test_every_service_drawn_from_a_list_is_one_the_templates_create():
    created = {r["Type"] for t in diagram.built_templates().values() for r in t["Resources"].values()}
    drawn = [i.node_id for i in (*figure.EDGE_SERVICES, *figure.SIDE_SERVICES, figure.INTERNET_GATEWAY)]
    assert sorted(drawn) == sorted(figure.SERVICE_TYPES)
    assert [t for t in figure.SERVICE_TYPES.values() if t not in created] == []


def test_the_load_balancer_is_drawn_in_the_subnets_the_template_puts_it_in():
    templates = diagram.built_templates()
    dot = figure.dot_source(templates)
    # With CloudFront (the default) it is internal, in the private app subnets, and says so.
    assert "LoadBalancer" in node_ids(cluster_body(dot, "app"))
    assert "LoadBalancer" not in node_ids(cluster_body(dot, "public"))
    assert "internal, in the private app subnets of every AZ" in dot
    # Were the template to put it in the public subnets under its condition, the figure would follow.
    swapped = copy.deepcopy(templates)
    balancer = swapped["app"]["Resources"]["LoadBalancer"]["Properties"]
    for key in ("Scheme", "Subnets"):
        condition, when_true, when_false = balancer[key]["Fn::If"]
        balancer[key] = {"Fn::If": [condition, when_false, when_true]}
    dot = figure.dot_source(swapped)
    assert "LoadBalancer" in node_ids(cluster_body(dot, "public"))
    assert "internet-facing, in the public subnets of every AZ" in dot


def labels(dot: str) -> list[str]:
    """Every label of a DOT source: quoted, HTML-like and external ones."""
    return re.findall(r'(?:x|head|tail)?label="((?:[^"\\]|\\.)*)"', dot) + re.findall(r"label=<(.*?)>\]", dot)


def test_no_label_names_a_template_condition():
    conditions = {c for t in diagram.built_templates().values() for c in t.get("Conditions", {})}
    for source in (FIGURE, COMMITTED):
        text = " ".join(labels(source.read_text()))
        assert [c for c in sorted(conditions) if re.search(rf"\b{c}\b", text)] == [], source.name
    assert "only when 3 AZs are chosen" in FIGURE.read_text()


def test_a_condition_without_words_still_reads_as_words():
    assert figure_words.in_words("HasAz3") == "only when 3 AZs are chosen"
    assert figure_words.in_words("UseExistingVpc") == "only when use existing vpc"


def plain_positions(dot_file, *options: str) -> dict[str, tuple[float, float]]:
    plain = subprocess.run(
        [DOT, *options, "-Tplain", str(dot_file)], capture_output=True, text=True, check=True
    ).stdout
    return {
        m[0]: (float(m[1]), float(m[2])) for m in re.findall(r"^node (\S+) ([\d.]+) ([\d.]+)", plain, re.M)
    }


@pytest.mark.skipif(DOT is None, reason="Graphviz is not installed (.ci/run installs it)")
def test_the_figure_draws_az_columns_in_order_and_tiers_in_rows():
    position = plain_positions(FIGURE, f"-Gimagepath={figure.icon_directory()}")
    for kind in ("Az", "NatGateway", "WebNode", "DatabaseInstance"):
        xs = [position[f"{kind}{slot}"][0] for slot in (1, 2, 3) if f"{kind}{slot}" in position]
        assert len(xs) >= 2 and xs == sorted(xs), f"{kind}: AZ columns out of order {xs}"
    rows = ["Az1", "NatGateway1", "LoadBalancer", "WebNode1", "DatabaseInstance1"]
    ys = [position[n][1] for n in rows]
    assert ys == sorted(ys, reverse=True), (
        f"tiers out of order {dict(zip(rows, ys, strict=True))}"
    )  # dot's y grows upwards
    # The load balancer spans the AZ columns; the edge services left of the VPC, the side services right.
    assert position["WebNode1"][0] < position["LoadBalancer"][0] < position["WebNode3"][0]
    assert position["CloudFront"][0] < position["WebNode1"][0]
    assert min(position[n][0] for n in ("AccessLogs", "CloudWatch", "Secrets", "BackupVault")) > max(
        position[n][0] for n in ("WebNode3", "DatabaseInstance2", "InternetGateway")
    )


@pytest.mark.skipif(DOT is None, reason="Graphviz is not installed (.ci/run installs it)")
def test_the_detailed_graph_draws_the_azs_in_order():
    position = plain_positions(COMMITTED)
    for kind in (
        "network_AppSubnet",
        "network_PublicSubnet",
        "network_NatGateway",
        "data_FileSystemMountTarget",
    ):
        ys = [position[f"{kind}{slot}"][1] for slot in (1, 2, 3)]
        assert ys == sorted(ys, reverse=True), f"{kind}: AZs not 1 above 2 above 3 {ys}"


def text_boxes(drawing: list[dict]) -> list[tuple[str, float, float, float, float]]:
    """(text, left, bottom, right, top) of each text an xdot drawing writes, in points."""
    boxes, size = [], 14.0
    for op in drawing:
        if op["op"] == "F":
            size = op["size"]
        elif op["op"] == "T" and op["text"].strip():
            x, y = op["pt"]
            left = {"l": x, "r": x - op["width"]}.get(op["align"], x - op["width"] / 2)
            boxes.append((op["text"], left, y - 0.25 * size, left + op["width"], y + 0.8 * size))
    return boxes


def overlapping(a: tuple[str, float, float, float, float], b: tuple[str, float, float, float, float]) -> bool:
    return a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]


@pytest.mark.skipif(DOT is None, reason="Graphviz is not installed (.ci/run installs it)")
def test_no_label_of_the_figure_overlaps_another_or_a_node():
    layout = json.loads(
        subprocess.run(
            [DOT, f"-Gimagepath={figure.icon_directory()}", "-Tjson", str(FIGURE)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    labels_ = text_boxes(layout.get("_ldraw_", []))
    nodes = []
    for item in layout["objects"]:
        if item["name"].startswith("cluster_"):
            labels_ += text_boxes(item.get("_ldraw_", []))
        elif "pos" in item and item.get("style") != "invis":
            x, y = (float(v) for v in item["pos"].split(","))
            half_width, half_height = float(item["width"]) * 36, float(item["height"]) * 36
            nodes.append((item["name"], x - half_width, y - half_height, x + half_width, y + half_height))
    for edge in layout.get("edges", []):
        for key in ("_ldraw_", "_xldraw_", "_hldraw_", "_tldraw_"):
            labels_ += text_boxes(edge.get(key, []))
    assert len(labels_) > 20
    clashes = [(a[0], b[0]) for i, a in enumerate(labels_) for b in labels_[i + 1 :] if overlapping(a, b)]
    clashes += [(a[0], n[0]) for a in labels_ for n in nodes if overlapping(a, n)]
    assert clashes == []
