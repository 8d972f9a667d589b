"""The architecture figure operators recognise, drawn from the generated templates (figure_model.py reads
them): the VPC with the tiers in rows (public subnets, private app subnets, private data subnets) and the
AZs in columns, in order; one Application Load Balancer spanning the AZs, drawn in the subnets it really
sits in; the Auto Scaling group as a boundary around the web nodes of every AZ; Aurora and the two
ElastiCache clusters (sessions, application cache) as named clusters and EFS as one file system, with an
arrow and its port from the web tier to each; the edge services on the left and the Region's side
services (logs, secrets, alarms, backups) in a column on the right, so no edge crosses the figure. AWS
service icons come from the `diagrams` package's icon set.

Graphviz notes, measured while drawing it (2.43): a flat edge orders two nodes of one cluster but is
ignored between nodes of different clusters, so each row is kept in order inside its own cluster; the
side services go right of the VPC because their cluster is written first; labels at the middle of the
arrows into the data tier would share one narrow row, so those are external labels (xlabel).

The DOT source names icons relative to the icon set (Graphviz's imagepath), so it is the same on every
machine and a test can compare it with the committed one.
"""

from __future__ import annotations

import html
import importlib.util
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path
from typing import Any

from moodle_cfn.errors import InputError
from moodle_cfn.figure_model import (
    Item,
    Placement,
    Templates,
    Zone,
    cache_groups,
    database_port,
    file_system,
    load_balancer_placement,
    zones,
)
from moodle_cfn.figure_words import in_words
from moodle_cfn.layers.security_groups import HTTP_PORT, NFS_PORT

ICONS = {
    "viewers": "onprem/client/users.png",
    "route53": "aws/network/route-53.png",
    "cloudfront": "aws/network/cloudfront.png",
    "waf": "aws/security/waf.png",
    "acm": "aws/security/certificate-manager.png",
    "igw": "aws/network/internet-gateway.png",
    "nat": "aws/network/nat-gateway.png",
    "alb": "aws/network/elb-application-load-balancer.png",
    "ec2": "aws/compute/ec2-instance.png",
    "aurora": "aws/database/aurora-instance.png",
    "elasticache": "aws/database/elasticache.png",
    "efs": "aws/storage/elastic-file-system-efs-file-system.png",
    "backup": "aws/storage/backup.png",
    "s3": "aws/storage/simple-storage-service-s3.png",
    "secrets": "aws/security/secrets-manager.png",
    "cloudwatch": "aws/management/cloudwatch.png",
    "sns": "aws/integration/simple-notification-service-sns.png",
}
ICON_SIZE = 64  # points
COLUMN_WIDTH = 1.9  # inches: the NAT gateways and web nodes, one column per AZ
TIER_LABELS = {"public": "public subnets", "app": "private app subnets", "data": "private data subnets"}
CACHE_TITLES = {"Session": "Moodle sessions", "Application": "Moodle application cache (MUC)"}
LOAD_BALANCER = "LoadBalancer"
ASG_CLUSTER = "cluster_web_asg"
AURORA_CLUSTER = "cluster_aurora"

EDGE_SERVICES = (
    Item("Route53", "route53", "Route 53\\n(your domain)"),
    Item("CloudFront", "cloudfront", "CloudFront\\n(on by default)"),
    Item("Waf", "waf", "AWS WAF (when enabled;\\non the load balancer\\noutside us-east-1)"),
    Item("Certificate", "acm", "ACM certificate"),
)
SIDE_SERVICES = (
    Item("AccessLogs", "s3", "S3 access logs"),
    Item("CloudWatch", "cloudwatch", "CloudWatch logs,\\nmetrics, alarms"),
    Item("Secrets", "secrets", "Secrets Manager"),
    Item("AlarmTopic", "sns", "SNS alarm e-mail"),
    Item("BackupVault", "backup", "AWS Backup"),
)
# The resource type behind each service drawn from these lists (a test checks the templates create it).
SERVICE_TYPES = {
    "Route53": "AWS::Route53::RecordSet",
    "CloudFront": "AWS::CloudFront::Distribution",
    "Waf": "AWS::WAFv2::WebACL",
    "Certificate": "AWS::CertificateManager::Certificate",
    "AccessLogs": "AWS::S3::Bucket",
    "CloudWatch": "AWS::Logs::LogGroup",
    "Secrets": "AWS::SecretsManager::Secret",
    "AlarmTopic": "AWS::SNS::Topic",
    "BackupVault": "AWS::Backup::BackupVault",
    "InternetGateway": "AWS::EC2::InternetGateway",
}
VIEWERS = Item("Viewers", "viewers", "viewers")
INTERNET_GATEWAY = Item("InternetGateway", "igw", "Internet gateway")
STYLES = {
    "edge": 'style=rounded; color="#8C4FFF"; fontcolor="#8C4FFF"; labelloc=b',
    "region": 'style=rounded; color="#232F3E"',
    "vpc": 'style=rounded; color="#8C4FFF"; fontcolor="#8C4FFF"',
    "public": 'style="rounded,filled"; fillcolor="#F2F8EC"; color="#7AA116"; fontcolor="#3F6B00"',
    "app": 'style="rounded,filled"; fillcolor="#E6F2F8"; color="#147EBA"; fontcolor="#147EBA"',
    "data": 'style="rounded,filled"; fillcolor="#E6F2F8"; color="#147EBA"; fontcolor="#147EBA"; labelloc=b',
    "group": 'style="dashed,rounded,filled"; fillcolor="white"; color="#ED7100"; fontcolor="#ED7100"',
    "store": 'style="rounded,filled"; fillcolor="white"; color="#C925D1"; fontcolor="#C925D1"',
    "side": 'style="rounded"; color="#7D8998"; fontcolor="#545B64"',
}


def node(item: Item, width: float = 1.6) -> str:
    """An icon with its label under it (an HTML-like label: the text never runs over the icon); at least
    `width` inches wide, so the AZ columns line up."""
    lines = "<BR/>".join(html.escape(line) for line in item.label.split("\\n"))
    return (
        f'"{item.node_id}" [shape=none, margin=0, width={width}, fontsize=10, label=<<TABLE BORDER="0" CELLSPACING="2">'
        f'<TR><TD FIXEDSIZE="TRUE" WIDTH="{ICON_SIZE}" HEIGHT="{ICON_SIZE}"><IMG SRC="{ICONS[item.icon]}" SCALE="TRUE"/></TD></TR>'
        f"<TR><TD>{lines}</TD></TR></TABLE>>]"
    )


def cluster(name: str, label: str, body: Iterable[str], style: str) -> list[str]:
    """A DOT cluster named cluster_<name>."""
    return [f'subgraph "cluster_{name}" {{', f'label="{label}"; {style}', *body, "}"]


def in_zone(item: Item, zone: Zone) -> Item:
    """The item with its AZ named on the first line of its label."""
    first, _, rest = item.label.partition("\\n")
    return Item(item.node_id, item.icon, f"{first}, AZ {zone.slot}" + (f"\\n{rest}" if rest else ""))


def zone_header(zone: Zone) -> str:
    """The column heading of an AZ, its condition in words."""
    note = f"\\n({in_words(zone.condition)})" if zone.condition else ""
    return (
        f'"Az{zone.slot}" [label="Availability Zone {zone.slot}{note}", shape=box, style="dashed,rounded", '
        'color="#147EBA", fontcolor="#147EBA", fontsize=12, width=1.5]'
    )


def load_balancer(placement: Placement, slots: int) -> str:
    """The one load balancer, as wide as the AZ columns it has a node in, its placement in words."""
    label = (
        f"Application Load Balancer: one, {placement.scheme}, in the {TIER_LABELS[placement.tier]} of every AZ"
        f"\\n({in_words(placement.condition)}; otherwise {placement.other_scheme}, "
        f"in the {TIER_LABELS[placement.other_tier]})"
    )
    wide = node(Item(LOAD_BALANCER, "alb", label), width=slots * COLUMN_WIDTH + (slots - 1) * 0.4)
    return wide.replace(
        "shape=none, margin=0", 'shape=box, style="rounded,dashed", color="#8C4FFF", margin=0'
    )


def store(name: str, title: str, items: Iterable[Item]) -> list[str]:
    """A named store cluster of the data tier (Aurora, an ElastiCache cluster)."""
    return cluster(name, title, [node(i) for i in items], STYLES["store"])


def tiers(zones_: list[Zone], placement: Placement, templates: Templates) -> dict[str, list[str]]:
    """The body of each tier's cluster: NAT gateways; the load balancer (in its real tier) and the Auto
    Scaling group; the caches, EFS and Aurora, left to right (Aurora and EFS next to their backups)."""
    body: dict[str, list[str]] = {"public": [], "app": [], "data": []}
    body["public"] += [node(in_zone(z.nat, z), width=COLUMN_WIDTH) for z in zones_ if z.nat]
    body[placement.tier].append(load_balancer(placement, len(zones_)))
    web_nodes = [node(in_zone(z.web, z), width=COLUMN_WIDTH) for z in zones_]
    body["app"] += cluster(
        "web_asg", "Auto Scaling group: the web nodes, over the AZs", web_nodes, STYLES["group"]
    )
    for group in cache_groups(templates):
        title = f"ElastiCache: {CACHE_TITLES.get(group.key, group.purpose)}"
        body["data"] += store(f"cache_{group.key}", title, [group.item])
    body["data"].append(node(file_system(templates), width=2.2))
    body["data"] += store(
        "aurora", "Aurora PostgreSQL cluster", (in_zone(d, z) for z in zones_ for d in z.databases)
    )
    return body


def invisible(a: str, b: str, weight: int = 1) -> str:
    """An edge that only places nodes."""
    return f'"{a}" -> "{b}" [style=invis, weight={weight}]'


def same_rank(ids: Iterable[str]) -> str:
    """Nodes on one row."""
    return "{rank=same; " + "; ".join(f'"{i}"' for i in ids) + "}"


def grid(zones_: list[Zone], templates: Templates) -> list[str]:
    """Invisible structure: the rows (AZ headings, NAT gateways, load balancer, web nodes, stores, backups),
    each AZ's column under its heading, the edge services in a column left of the rows they serve and the
    side services right of them. A flat edge puts its tail left of its head: they keep each row in order."""
    databases = [d.node_id for z in zones_ for d in z.databases]
    stores = [*(g.item.node_id for g in cache_groups(templates)), "FileSystem", *databases]
    rows = [
        ["Route53", *(f"Az{z.slot}" for z in zones_), "InternetGateway"],
        [z.nat.node_id for z in zones_ if z.nat],
        ["CloudFront", LOAD_BALANCER, "AccessLogs"],
        ["Waf", *(z.web.node_id for z in zones_), "CloudWatch"],
        ["Certificate", *stores, "Secrets", "AlarmTopic"],
        ["BackupVault"],
    ]
    lines = [same_rank(row) for row in rows]
    in_order = [
        [*(f"Az{z.slot}" for z in zones_), "InternetGateway"],
        [z.nat.node_id for z in zones_ if z.nat],
        [z.web.node_id for z in zones_],
        stores,
    ]
    for row in in_order:
        lines += [invisible(a, b) for a, b in pairwise(row)]
    for zone in zones_:
        column = [f"Az{zone.slot}", *(i.node_id for i in (zone.nat,) if i), LOAD_BALANCER, zone.web.node_id]
        lines += [invisible(a, b, weight=10) for a, b in pairwise(column)]
    # The side services right of the VPC.
    lines += [invisible(LOAD_BALANCER, "AccessLogs"), invisible(zones_[-1].web.node_id, "CloudWatch")]
    return [*lines, invisible(databases[0], "BackupVault")]


def edge(a: str, b: str, label: str, **attributes: str) -> str:
    """A drawn edge."""
    extra = "".join(f", {k}={v}" for k, v in attributes.items())
    return f'"{a}" -> "{b}" [label="{label}"{extra}]'


def store_edge(web: str, store: str, port: str, **attributes: str) -> str:
    """From the Auto Scaling group to a store. The port is an external label, which Graphviz places clear
    of other labels: these arrows' middles share one narrow row."""
    extra = "".join(f", {k}={v}" for k, v in attributes.items())
    return f'"{web}" -> "{store}" [xlabel="{port}", ltail={ASG_CLUSTER}{extra}]'


def paths(zones_: list[Zone], templates: Templates) -> list[str]:
    """The data paths: viewers to the web nodes, the web tier to every store, the side services."""
    web = zones_[len(zones_) // 2].web.node_id  # the arrows leave the group's middle
    last_web = zones_[-1].web.node_id
    first_db = zones_[0].databases[0].node_id
    lines = [
        edge("Viewers", "Route53", "DNS"),
        edge("Viewers", "CloudFront", "HTTPS"),
        edge("CloudFront", "Waf", "filtered by"),
        edge("Waf", "Certificate", "", style="invis"),
        edge("CloudFront", "Certificate", "TLS", constraint="false"),
        edge("CloudFront", LOAD_BALANCER, "VPC origin"),
        edge(LOAD_BALANCER, web, f"HTTP {HTTP_PORT}", lhead=ASG_CLUSTER),
        store_edge(web, first_db, f"TCP {database_port(templates)}", lhead=AURORA_CLUSTER),
        store_edge(web, "FileSystem", f"NFS {NFS_PORT}"),
    ]
    for group in cache_groups(templates):
        ports = " or ".join(str(p) for p in group.ports)
        lines.append(store_edge(web, group.item.node_id, f"TCP {ports}", lhead=f"cluster_cache_{group.key}"))
    nats = [z.nat.node_id for z in zones_ if z.nat]  # one label where the edges meet
    lines += [
        edge(n, "InternetGateway", "egress" if n == nats[-1] else "", constraint="false", tailport="n")
        for n in nats
    ]
    return [
        *lines,
        edge(LOAD_BALANCER, "AccessLogs", "access logs", constraint="false"),
        edge(last_web, "Secrets", "secrets", ltail=ASG_CLUSTER, constraint="false"),
        edge(last_web, "CloudWatch", "logs", ltail=ASG_CLUSTER, constraint="false"),
        edge("CloudWatch", "AlarmTopic", "alarms"),
        edge(first_db, "BackupVault", "daily", ltail=AURORA_CLUSTER),
        edge("FileSystem", "BackupVault", "daily", constraint="false"),
    ]


def dot_source(templates: dict[str, dict[str, Any]]) -> str:
    """The figure as DOT."""
    zones_ = zones(templates)
    body = tiers(zones_, load_balancer_placement(templates), templates)
    vpc = [*(zone_header(z) for z in zones_), node(INTERNET_GATEWAY)]
    for tier in ("public", "app", "data"):
        vpc += cluster(tier, TIER_LABELS[tier] + " (one per AZ)", body[tier], STYLES[tier])
    side = cluster("side", "Region services", [node(i) for i in SIDE_SERVICES], STYLES["side"])
    lines = [
        "digraph architecture {",
        'graph [rankdir=TB, newrank=true, compound=true, nodesep=0.4, ranksep=0.45, fontname="Helvetica", '
        'fontsize=13, labelloc=t, label="moodle-cfn: Moodle on AWS (drawn from templates/)"];',
        'node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=10, color="#545B64"];',
        node(VIEWERS),
        *cluster("edge", "AWS edge (global)", [node(i) for i in EDGE_SERVICES], STYLES["edge"]),
        *cluster(
            "region", "AWS Region", [*side, *cluster("vpc", "VPC", vpc, STYLES["vpc"])], STYLES["region"]
        ),
        *grid(zones_, templates),
        *paths(zones_, templates),
        "}",
    ]
    return "\n".join(lines) + "\n"


def icon_directory() -> Path:
    """Where the `diagrams` package keeps its icon set (a package of its own named `resources`)."""
    spec = importlib.util.find_spec("diagrams")
    if spec is None or spec.origin is None:
        raise InputError("diagrams", "the AWS icon set is missing (pip install diagrams)")
    return Path(spec.origin).parent.parent / "resources"
