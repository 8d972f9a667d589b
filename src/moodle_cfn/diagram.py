"""The architecture diagram, drawn from the generated templates (never from a hand-kept list).

Nodes are the resources of the types in NODE_TYPES, clustered by layer, and in the network layer by
Availability Zone (read from each subnet's Fn::Select index). Edges come from the templates too:
- traffic allowed between tiers: each SecurityGroupIngress of the network template, from the resources
  placed in its source group to those in its destination group (a resource is in a group when it refers to
  the group's id parameter, directly or through its launch template);
- routes: each default route, from its subnets to the NAT or Internet gateway it points at;
- a few references that are data paths (CloudFront's origin, instances' subnets, members of a cluster).
Resources that exist only under a condition are drawn dashed, with the condition in words
(figure_words.py). The AZs are drawn in order, 1 above 2 above 3.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from moodle_cfn import figure
from moodle_cfn.errors import InputError
from moodle_cfn.figure_words import in_words
from moodle_cfn.files import write_atomic
from moodle_cfn.layers import LAYERS

NODE_TYPES = {
    "AWS::CloudFront::Distribution": ("CloudFront", "#8C4FFF"),
    "AWS::WAFv2::WebACL": ("WAF web ACL", "#DD344C"),
    "AWS::CertificateManager::Certificate": ("ACM certificate", "#DD344C"),
    "AWS::Route53::RecordSet": ("Route 53 record", "#8C4FFF"),
    "AWS::ElasticLoadBalancingV2::LoadBalancer": ("Application Load Balancer", "#8C4FFF"),
    "AWS::AutoScaling::AutoScalingGroup": ("Auto Scaling group (Apache + PHP-FPM + Moodle)", "#ED7100"),
    "AWS::RDS::DBCluster": ("Aurora PostgreSQL cluster", "#C925D1"),
    "AWS::RDS::DBInstance": ("Aurora instance", "#C925D1"),
    "AWS::ElastiCache::CacheCluster": ("ElastiCache memcached", "#C925D1"),
    "AWS::ElastiCache::ReplicationGroup": ("ElastiCache valkey", "#C925D1"),
    "AWS::EFS::FileSystem": ("EFS moodledata", "#7AA116"),
    "AWS::EFS::MountTarget": ("EFS mount target", "#7AA116"),
    "AWS::Backup::BackupVault": ("AWS Backup vault", "#7AA116"),
    "AWS::S3::Bucket": ("S3 access logs", "#7AA116"),
    "AWS::EC2::InternetGateway": ("Internet gateway", "#8C4FFF"),
    "AWS::EC2::NatGateway": ("NAT gateway", "#8C4FFF"),
    "AWS::EC2::Subnet": ("subnet", "#8C4FFF"),
    "AWS::SNS::Topic": ("SNS alarm topic", "#E7157B"),
    "AWS::CloudWatch::Dashboard": ("CloudWatch dashboard", "#E7157B"),
}
# References drawn as edges: (from type, to type) -> label.
REFERENCE_EDGES = {
    ("AWS::CloudFront::Distribution", "AWS::ElasticLoadBalancingV2::LoadBalancer"): "origin",
    ("AWS::RDS::DBInstance", "AWS::RDS::DBCluster"): "member",
    ("AWS::EFS::MountTarget", "AWS::EFS::FileSystem"): "",
    ("AWS::Route53::RecordSet", "AWS::CloudFront::Distribution"): "alias",
    ("AWS::Route53::RecordSet", "AWS::ElasticLoadBalancingV2::LoadBalancer"): "alias",
    ("AWS::CloudFront::Distribution", "AWS::WAFv2::WebACL"): "filtered by",
    ("AWS::CloudFront::Distribution", "AWS::CertificateManager::Certificate"): "TLS",
    ("AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::S3::Bucket"): "access logs",
}
VIEWERS = "viewers"
DEFAULT_ROUTE = "0.0.0.0/0"
INTERNET = "internet"


@dataclass(frozen=True)
class Node:
    """One resource on the diagram."""

    layer: str
    logical_id: str
    resource_type: str
    condition: str | None

    @property
    def dot_id(self) -> str:
        """Its id in the DOT source."""
        return f"{self.layer}_{self.logical_id}"


def references(node: Any) -> Iterator[str]:
    """Every logical id or parameter a template fragment refers to (Ref, GetAtt, and ${X} in Sub)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value
            elif key == "Fn::GetAtt":
                yield value[0] if isinstance(value, list) else value.split(".")[0]
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                yield from re.findall(r"\$\{([A-Za-z0-9]+)[.}]", text)
                if isinstance(value, list):
                    yield from references(value[1])
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def az_slot(resource: dict[str, Any], template: dict[str, Any]) -> int | None:
    """The AZ slot (1-3) of a subnet, or of a resource placed in a subnet or in the Nth of a subnet list."""
    props = resource.get("Properties", {})
    zone = props.get("AvailabilityZone")
    if isinstance(zone, dict) and "Fn::Select" in zone:
        return int(zone["Fn::Select"][0]) + 1
    subnet = props.get("SubnetId")
    if isinstance(subnet, dict) and "Ref" in subnet and subnet["Ref"] in template["Resources"]:
        return az_slot(template["Resources"][subnet["Ref"]], template)
    if isinstance(subnet, dict) and "Fn::Select" in subnet:
        return int(subnet["Fn::Select"][0]) + 1
    return None


def collect(templates: dict[str, dict[str, Any]]) -> list[Node]:
    """The resources to draw, in layer order."""
    return [
        Node(layer, name, resource["Type"], resource.get("Condition"))
        for layer, template in templates.items()
        for name, resource in sorted(template["Resources"].items())
        if resource["Type"] in NODE_TYPES
    ]


def security_group_members(templates: dict[str, dict[str, Any]]) -> dict[str, list[Node]]:
    """{security group id parameter: nodes placed in that group} across the layers."""
    members: dict[str, list[Node]] = {}
    for layer, template in templates.items():
        group_parameters = {p for p in template.get("Parameters", {}) if p.endswith("SecurityGroupId")}
        for name, resource in sorted(template["Resources"].items()):
            if resource["Type"] not in NODE_TYPES:
                continue
            referred = set(references(resource.get("Properties", {})))
            for via in list(referred):  # the web group's security group sits in its launch template
                target = template["Resources"].get(via)
                if target and target["Type"] == "AWS::EC2::LaunchTemplate":
                    referred |= set(references(target["Properties"]))
            for parameter in sorted(referred & group_parameters):
                members.setdefault(parameter, []).append(
                    Node(layer, name, resource["Type"], resource.get("Condition"))
                )
    return members


def tier_edges(templates: dict[str, dict[str, Any]]) -> list[tuple[Node, Node, str]]:
    """Allowed traffic between tiers, from the network template's ingress rules."""
    network = templates["network"]
    output_of = {
        o["Value"]["Fn::GetAtt"][0]: name
        for name, o in network["Outputs"].items()
        if "Fn::GetAtt" in o["Value"]
    }
    members = security_group_members(templates)
    edges = []
    for resource in network["Resources"].values():
        if resource["Type"] != "AWS::EC2::SecurityGroupIngress":
            continue
        props = resource["Properties"]
        source = output_of.get(props["SourceSecurityGroupId"]["Ref"])
        destination = output_of.get(props["GroupId"]["Ref"])
        for a in members.get(source, []):
            for b in members.get(destination, []):
                # A destination that states its port (a database or cache) only takes traffic on that port.
                port = templates[b.layer]["Resources"][b.logical_id]["Properties"].get("Port")
                if port in (None, props["FromPort"]):
                    edges.append((a, b, f"TCP {props['FromPort']}"))
    return edges


def connector_edges(template: dict[str, Any], layer: str) -> list[tuple[str, str, str]]:
    """Edges drawn from resources that only connect two others: a web ACL association (ACL -> load
    balancer) and a backup selection (each selected store -> the plan's vault)."""
    resources = template["Resources"]
    edges = []
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::WAFv2::WebACLAssociation":
            acl = next(references(props["WebACLArn"]))
            edges += [
                (f"{layer}_{acl}", f"{layer}_{target}", "protects")
                for target in references(props["ResourceArn"])
            ]
        if resource["Type"] == "AWS::Backup::BackupSelection":
            plan = resources[props["BackupPlanId"]["Ref"]]["Properties"]["BackupPlan"]
            vaults = {v for rule in plan["BackupPlanRule"] for v in references(rule["TargetBackupVault"])}
            for store in references(props["BackupSelection"]["Resources"]):
                edges += [
                    (f"{layer}_{store}", f"{layer}_{vault}", "daily backup") for vault in sorted(vaults)
                ]
    return edges


def nat_egress_edges(template: dict[str, Any], layer: str) -> list[tuple[str, str, str]]:
    """Each NAT gateway leaves through the route of the public subnet it sits in."""
    routes = route_edges(template, layer)
    edges = []
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::EC2::NatGateway":
            subnet = f"{layer}_{resource['Properties']['SubnetId']['Ref']}"
            edges += [
                (f"{layer}_{name}", target, label) for source, target, label in routes if source == subnet
            ]
    return edges


def route_edges(template: dict[str, Any], layer: str) -> list[tuple[str, str, str]]:
    """(from node id, to node id, label) for each default route: subnets -> NAT / Internet gateway."""
    resources = template["Resources"]
    associations = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"
    ]
    edges = []
    for route in (r for r in resources.values() if r["Type"] == "AWS::EC2::Route"):
        props = route["Properties"]
        table = props["RouteTableId"]["Ref"]
        targets = sorted(
            set(references(props.get("NatGatewayId", {}))) | set(references(props.get("GatewayId", {})))
        )
        for association in associations:
            if association["RouteTableId"]["Ref"] == table:
                for target in targets:
                    edges.append(
                        (
                            f"{layer}_{association['SubnetId']['Ref']}",
                            f"{layer}_{target}",
                            props["DestinationCidrBlock"],
                        )
                    )
    return sorted(set(edges))


def node_line(node: Node, indent: str) -> str:
    """The DOT statement of a node."""
    kind, color = NODE_TYPES[node.resource_type]
    label = f"{node.logical_id}\\n{kind}"
    style = "rounded,filled"
    if node.condition:
        label += "\\n" + "\\n".join(textwrap.wrap(f"({in_words(node.condition)})", 34))
        style += ",dashed"
    return f'{indent}"{node.dot_id}" [label="{label}", style="{style}", fillcolor="white", color="{color}"];'


def az_order(layer: str, by_slot: dict[int, list[Node]]) -> list[str]:
    """Invisible anchors that keep a layer's AZs in order, 1 above 2 above 3: one anchor per AZ, linked to
    every node of its AZ, the anchors chained by flat edges (dot honours a flat edge between two nodes of
    one cluster, not between nodes of different AZ clusters, so the AZ clusters follow their anchors).
    In this left-to-right layout a flat edge puts its head above its tail."""
    if len(by_slot) < 2:
        return []
    anchors = {slot: f"{layer}_az{slot}_order" for slot in sorted(by_slot)}
    lines = [f'    "{a}" [style=invis, shape=point, width=0];' for a in anchors.values()]
    lines.append("    {rank=same; " + "; ".join(f'"{a}"' for a in anchors.values()) + "}")
    lines += [f'    "{b}" -> "{a}" [style=invis];' for a, b in pairwise(anchors.values())]
    lines += [
        f'    "{anchors[slot]}" -> "{n.dot_id}" [style=invis];' for slot in anchors for n in by_slot[slot]
    ]
    return lines


def dot_source(templates: dict[str, dict[str, Any]]) -> str:
    """The whole diagram as Graphviz DOT, deterministic for the same templates."""
    nodes = collect(templates)
    ids = {n.dot_id for n in nodes}
    lines = [
        "digraph moodle_cfn {",
        '  graph [rankdir=LR, fontname="Helvetica", compound=true, newrank=true, label="moodle-cfn architecture '
        f'(generated from templates/; dotted: a default route, {DEFAULT_ROUTE}; dashed: conditional)", '
        "labelloc=t];",
        '  node [shape=box, fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
        f'  "{VIEWERS}" [label="Viewers", shape=ellipse];',
        f'  "{INTERNET}" [label="Internet\\n(packages, Moodle downloads, AWS APIs)", shape=ellipse];',
    ]
    for layer in templates:
        members = [n for n in nodes if n.layer == layer]
        if not members:
            continue
        lines.append(f'  subgraph "cluster_{layer}" {{')
        lines.append(f'    label="{layer} layer"; style=rounded; color="#7D8998";')
        by_slot: dict[int | None, list[Node]] = {}
        for node in members:
            by_slot.setdefault(
                az_slot(templates[layer]["Resources"][node.logical_id], templates[layer]), []
            ).append(node)
        lines += az_order(layer, {slot: nodes for slot, nodes in by_slot.items() if slot is not None})
        for slot in sorted(by_slot, key=lambda s: (s is not None, s or 0)):
            if slot is None:
                lines += [node_line(n, "    ") for n in by_slot[slot]]
                continue
            lines.append(f'    subgraph "cluster_{layer}_az{slot}" {{')
            lines.append(f'      label="Availability Zone {slot}"; style=dashed; color="#147EBA";')
            lines += [node_line(n, "      ") for n in by_slot[slot]]
            lines.append("    }")
        lines.append("  }")

    edges: list[tuple[str, str, str, str]] = []
    for node in nodes:
        if node.resource_type == "AWS::CloudFront::Distribution":
            edges.append((VIEWERS, node.dot_id, "HTTPS", "solid"))
        if node.resource_type == "AWS::ElasticLoadBalancingV2::LoadBalancer":
            edges.append((VIEWERS, node.dot_id, "HTTPS without CloudFront", "dashed"))
        if node.resource_type == "AWS::EC2::InternetGateway":
            edges.append((node.dot_id, INTERNET, "", "solid"))
        resource = templates[node.layer]["Resources"][node.logical_id]
        for target in sorted(set(references(resource.get("Properties", {})))):
            target_resource = templates[node.layer]["Resources"].get(target)
            if target_resource is None:
                continue
            label = REFERENCE_EDGES.get((node.resource_type, target_resource["Type"]))
            if label is not None:
                edges.append((node.dot_id, f"{node.layer}_{target}", label, "solid"))
    for a, b, label in tier_edges(templates):
        edges.append((a.dot_id, b.dot_id, label, "bold"))
    for layer, template in templates.items():
        for a, b, label in (*route_edges(template, layer), *nat_egress_edges(template, layer)):
            if a in ids and b in ids:
                edges.append((a, b, label, "dotted"))
        for a, b, label in connector_edges(template, layer):
            if a in ids and b in ids:
                edges.append((a, b, label, "solid"))
    for a, b, label, style in sorted(set(edges)):
        if style == "dotted" and label == DEFAULT_ROUTE:
            # A dozen identical labels crowd the network layer: the title says what a dotted edge is.
            lines.append(f'  "{a}" -> "{b}" [label="", tooltip="{label}", style={style}];')
        else:
            lines.append(f'  "{a}" -> "{b}" [label="{label}", style={style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def built_templates() -> dict[str, dict[str, Any]]:
    """Every layer's template as data, in deployment order (the master only wires them)."""
    return {layer.name: layer.build().to_dict() for layer in LAYERS}


def counts(dot: str) -> tuple[int, int]:
    """(nodes, edges) of a DOT source written by dot_source."""
    node_count = len(re.findall(r"^\s+\"[^\"]+\" \[label=", dot, re.M))
    edge_count = len(re.findall(r"^\s+\"[^\"]+\" -> (?!.*style=invis)", dot, re.M))
    return node_count, edge_count


def render_dot(executable: str, dot: str, fmt: str, target: Path, *options: str) -> Path:
    """`dot -T<fmt>` of a DOT source into `target`, atomically; a Graphviz error is one line."""
    rendered = subprocess.run(
        [executable, *options, f"-T{fmt}"], input=dot.encode(), capture_output=True, check=False
    )
    if rendered.returncode != 0:
        raise InputError("dot", rendered.stderr.decode(errors="replace").strip().splitlines()[-1])
    tmp = target.with_suffix(f".{fmt}.tmp")
    tmp.write_bytes(rendered.stdout)
    tmp.replace(target)
    return target


def write_diagram(out_dir: Path, render: bool = True) -> list[Path]:
    """The figure (architecture.dot and .png: AZ columns, tier rows, AWS icons; figure.py) and the detailed
    graph (architecture-details.dot and .svg: every tier rule, route and data path); the renderings need
    Graphviz."""
    templates = built_templates()
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {"architecture": figure.dot_source(templates), "architecture-details": dot_source(templates)}
    written = []
    for name, dot in sources.items():
        write_atomic(out_dir / f"{name}.dot", dot)
        written.append(out_dir / f"{name}.dot")
    if not render:
        return written
    executable = shutil.which("dot")
    if executable is None:
        raise InputError("dot", "Graphviz is not installed (apt-get install graphviz), or use --dot-only")
    icons = f"-Gimagepath={figure.icon_directory()}"
    written.append(
        render_dot(executable, sources["architecture"], "png", out_dir / "architecture.png", icons)
    )
    written.append(
        render_dot(executable, sources["architecture-details"], "svg", out_dir / "architecture-details.svg")
    )
    return written
