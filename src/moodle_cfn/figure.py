"""The architecture figure operators recognise, drawn from the generated templates: the VPC with one
column per Availability Zone in order, the tiers (public, app, data) in rows, the edge services outside,
AWS service icons (the icon set of the `diagrams` package, rendered by Graphviz).

What is drawn comes from the templates: the AZ slots and the resources in each (subnets, NAT gateways,
Aurora instances, EFS mount targets, read from their Fn::Select indexes), the cache engines the cache
layer can run, and the services the app and data layers create. Resources that exist only under a
condition are labelled with it. The DOT source names icons relative to the icon set (Graphviz's
imagepath), so it is the same on every machine and a test can compare it with the committed one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from moodle_cfn.errors import InputError

TIERS = ("public", "app", "data")
TIER_LABELS = {"public": "public subnet", "app": "private app subnet", "data": "private data subnet"}
ICONS = {
    "viewers": "onprem/client/users.png",
    "route53": "aws/network/route-53.png",
    "cloudfront": "aws/network/cloudfront.png",
    "waf": "aws/security/waf.png",
    "acm": "aws/security/certificate-manager.png",
    "igw": "aws/network/internet-gateway.png",
    "nat": "aws/network/nat-gateway.png",
    "alb": "aws/network/elb-application-load-balancer.png",
    "ec2": "aws/compute/ec2-auto-scaling.png",
    "aurora": "aws/database/aurora-instance.png",
    "memcached": "aws/database/elasticache-for-memcached.png",
    "valkey": "aws/database/elasticache-for-redis.png",
    "efs-target": "aws/storage/elastic-file-system-efs.png",
    "efs": "aws/storage/elastic-file-system-efs-file-system.png",
    "backup": "aws/storage/backup.png",
    "s3": "aws/storage/simple-storage-service-s3.png",
    "secrets": "aws/security/secrets-manager.png",
}


@dataclass(frozen=True)
class Item:
    """One icon: its DOT id, icon key and label; `from_web` when the web node in its AZ uses it."""

    node_id: str
    icon: str
    label: str
    from_web: bool = False

    def dot(self) -> str:
        return (
            f'"{self.node_id}" [label="{self.label}", image="{ICONS[self.icon]}", shape=none, '
            "labelloc=b, imagescale=true, width=1.4, height=1.8, fixedsize=true, fontsize=11]"
        )


def select_slot(value: Any) -> int | None:
    """The AZ slot (1-3) an AvailabilityZone or SubnetId property picks with Fn::Select, if any."""
    if isinstance(value, dict) and "Fn::Select" in value:
        return int(value["Fn::Select"][0]) + 1
    return None


def when(resource: dict[str, Any]) -> str:
    """'(if Condition)' for a conditional resource."""
    return f"\\n(if {resource['Condition']})" if "Condition" in resource else ""


def per_az(templates: dict[str, dict[str, Any]]) -> dict[int, dict[str, list[Item]]]:
    """{slot: {tier: items}} from the network and data templates."""
    network, data = templates["network"]["Resources"], templates["data"]["Resources"]
    slots: dict[int, dict[str, list[Item]]] = {}
    for _, resource in sorted(network.items()):
        if resource["Type"] == "AWS::EC2::Subnet":
            slots.setdefault(select_slot(resource["Properties"]["AvailabilityZone"]), {t: [] for t in TIERS})
    for name, resource in sorted(network.items()):
        if resource["Type"] == "AWS::EC2::NatGateway":
            subnet = network[resource["Properties"]["SubnetId"]["Ref"]]
            slot = select_slot(subnet["Properties"]["AvailabilityZone"])
            slots[slot]["public"].append(Item(name, "nat", f"NAT gateway{when(resource)}"))
    for slot in slots:
        slots[slot]["public"].append(Item(f"LoadBalancerNode{slot}", "alb", "load balancer node"))
        slots[slot]["app"].append(Item(f"WebNode{slot}", "ec2", "web node\\n(Apache, PHP-FPM, Moodle)"))
    for name, resource in sorted(data.items()):
        if resource["Type"] == "AWS::RDS::DBInstance":
            slot = select_slot(resource["Properties"]["AvailabilityZone"])
            writer = resource["Properties"].get("PromotionTier") == 0
            label = f"Aurora {'writer' if writer else 'reader'}"
            slots[slot]["data"].append(Item(name, "aurora", label, from_web=writer))
        if resource["Type"] == "AWS::EFS::MountTarget":
            slot = select_slot(resource["Properties"]["SubnetId"])
            label = f"EFS mount target{when(resource)}"
            slots[slot]["data"].append(Item(name, "efs-target", label, from_web=True))
    for slot in slots:
        slots[slot]["data"].append(Item(f"CacheNodes{slot}", cache_engines(templates)[0], "cache nodes"))
    return dict(sorted(slots.items()))


def cache_engines(templates: dict[str, dict[str, Any]]) -> list[str]:
    """The engines the cache layer can run, as the parameter allows them."""
    engines = templates["cache"]["Parameters"]["SessionCacheEngine"]["AllowedValues"]
    return sorted(engines)


def az_conditions(templates: dict[str, dict[str, Any]]) -> dict[int, str]:
    """The condition of each AZ slot's subnets (the third AZ is optional)."""
    conditions = {}
    for resource in templates["network"]["Resources"].values():
        if resource["Type"] == "AWS::EC2::Subnet" and "Condition" in resource:
            conditions[select_slot(resource["Properties"]["AvailabilityZone"])] = resource["Condition"]
    return conditions


def cluster(name: str, label: str, body: Iterable[str], style: str) -> list[str]:
    return [f'subgraph "cluster_{name}" {{', f'label="{label}"; {style}', *body, "}"]


EDGE_SERVICES = (
    Item("Route53", "route53", "Route 53\\n(your domain)"),
    Item("CloudFront", "cloudfront", "CloudFront"),
    Item("Waf", "waf", "AWS WAF"),
    Item("Certificate", "acm", "ACM certificate"),
)
REGIONAL_SERVICES = (
    Item("FileSystem", "efs", "EFS moodledata"),
    Item("BackupVault", "backup", "AWS Backup"),
    Item("Secrets", "secrets", "Secrets Manager"),
    Item("AccessLogs", "s3", "S3 access logs"),
    Item("InternetGateway", "igw", "Internet gateway"),
)
VIEWERS = Item("Viewers", "viewers", "viewers")
SUBNET_STYLE = {
    "public": 'style="rounded,filled"; fillcolor="#F2F8EC"; color="#7AA116"',
    "app": 'style="rounded,filled"; fillcolor="#E6F2F8"; color="#147EBA"',
    "data": 'style="rounded,filled"; fillcolor="#E6F2F8"; color="#147EBA"',
}


def az_clusters(slots: dict[int, dict[str, list[Item]]], conditions: dict[int, str]) -> list[str]:
    """One cluster per AZ, a subnet cluster per tier inside. Written last AZ first, which (with the rows'
    flat edges of `grid`) makes dot draw AZ 1, 2, 3 from the left; tests/test_diagram.py checks the drawn
    order with dot itself."""
    lines: list[str] = []
    for slot, tiers in reversed(slots.items()):
        condition = f" (if {conditions[slot]})" if slot in conditions else ""
        body: list[str] = []
        for tier in TIERS:
            body += cluster(
                f"az{slot}_{tier}", TIER_LABELS[tier], [i.dot() for i in tiers[tier]], SUBNET_STYLE[tier]
            )
        lines += cluster(f"az{slot}", f"Availability Zone {slot}{condition}", body,
                         'style="dashed,rounded"; color="#147EBA"; fontcolor="#147EBA"')  # fmt: skip
    return lines


def grid(slots: dict[int, dict[str, list[Item]]]) -> list[str]:
    """Invisible structure: each tier one rank across the AZs (rows), each AZ's tiers stacked (columns),
    the Internet gateway above the public row and the regional services in a row under the data row."""
    lines: list[str] = []
    first = {tier: [tiers[tier][0].node_id for tiers in slots.values()] for tier in TIERS}
    for tier in TIERS:
        row = [item.node_id for tiers in slots.values() for item in tiers[tier]]
        lines.append("{rank=same; " + "; ".join(f'"{n}"' for n in row) + "}")
        # With newrank, dot puts the head of a flat edge left of its tail: these keep each row in AZ order.
        lines += [f'"{b}" -> "{a}" [style=invis]' for a, b in pairwise(row)]
    for tiers in slots.values():
        lines += [
            f'"{tiers[a][0].node_id}" -> "{tiers[b][0].node_id}" [style=invis]' for a, b in pairwise(TIERS)
        ]
    lines.append(f'"InternetGateway" -> "{first["public"][0]}" [style=invis]')
    lines.append(f'"{first["data"][0]}" -> "FileSystem" [style=invis]')
    lines.append('{rank=same; "FileSystem"; "BackupVault"; "Secrets"; "AccessLogs"}')
    return lines


def data_paths(slots: dict[int, dict[str, list[Item]]]) -> list[tuple[str, str, str]]:
    """(from, to, label) of the paths drawn inside the Region; they follow the grid, never move it."""
    edges = [
        ("CloudFront", "Waf", "filtered by"),
        ("CloudFront", "Certificate", "TLS"),
        ("CloudFront", "LoadBalancerNode1", "origin (HTTPS)"),
    ]
    for slot, tiers in slots.items():
        nat = next((i.node_id for i in tiers["public"] if i.icon == "nat"), None)
        edges.append((f"LoadBalancerNode{slot}", f"WebNode{slot}", "HTTP" if slot == 1 else ""))
        for item in tiers["data"]:
            if item.from_web:
                edges.append((f"WebNode{slot}", item.node_id, ""))
            if item.icon == "efs-target":
                edges.append((item.node_id, "FileSystem", ""))
        if nat:
            edges.append((nat, "InternetGateway", "egress"))
    return [*edges, ("FileSystem", "BackupVault", "daily"), ("LoadBalancerNode1", "AccessLogs", "logs")]


def dot_source(templates: dict[str, dict[str, Any]]) -> str:
    """The figure as DOT."""
    slots = per_az(templates)
    engines = " or ".join(cache_engines(templates))
    vpc = cluster("vpc", "VPC", az_clusters(slots, az_conditions(templates)),
                  'style=rounded; color="#8C4FFF"; fontcolor="#8C4FFF"')  # fmt: skip
    lines = [
        "digraph architecture {",
        'graph [rankdir=TB, newrank=true, compound=true, nodesep=0.35, ranksep=0.55, fontname="Helvetica", '
        f'fontsize=13, labelloc=t, label="moodle-cfn: Moodle on AWS (drawn from templates/; caches: {engines})"];',
        'node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=10, color="#545B64"];',
        *cluster(
            "edge", "AWS edge (global)", [i.dot() for i in EDGE_SERVICES], 'style=rounded; color="#8C4FFF"'
        ),
        VIEWERS.dot(),
        *cluster(
            "region",
            "AWS Region",
            [*(i.dot() for i in REGIONAL_SERVICES), *vpc],
            'style=rounded; color="#232F3E"',
        ),
        *grid(slots),
        *(f'"{a}" -> "{b}" [label="{label}", constraint=false]' for a, b, label in data_paths(slots)),
        # The viewers' two paths are the only edges that place nodes (viewers above the edge services).
        '"Viewers" -> "Route53" [label="DNS"]',
        '"Viewers" -> "CloudFront" [label="HTTPS"]',
        "}",
    ]
    return "\n".join(lines) + "\n"


def icon_directory() -> Path:
    """Where the `diagrams` package keeps its icon set (a package of its own named `resources`)."""
    spec = importlib.util.find_spec("diagrams")
    if spec is None or spec.origin is None:
        raise InputError("diagrams", "the AWS icon set is missing (pip install diagrams)")
    return Path(spec.origin).parent.parent / "resources"
