"""What the architecture figure shows, read from the generated templates (figure.py draws it).

Read, never kept by hand: the AZ slots and their conditions (the network template's subnets), the NAT
gateway in each slot, the Aurora instances and EFS mount targets in each slot (their Fn::Select indexes),
where the load balancer sits with and without CloudFront (its Scheme and Subnets), and the two cache
clusters with the engines each can run (the cache template's clusters and replication groups).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from moodle_cfn.figure_words import in_words
from moodle_cfn.layers.cache import ROLES

Templates = dict[str, dict[str, Any]]

# The subnet list parameter a resource is placed in -> the tier it names.
SUBNET_TIERS = {"PublicSubnetIds": "public", "AppSubnetIds": "app", "DataSubnetIds": "data"}


@dataclass(frozen=True)
class Item:
    """One drawn node: its DOT id, icon key and label lines."""

    node_id: str
    icon: str
    label: str


@dataclass(frozen=True)
class Zone:
    """One AZ slot: the condition its subnets exist under, and what sits in it (EFS and the caches span the
    AZs: file_system, cache_groups)."""

    slot: int
    condition: str | None
    nat: Item | None
    web: Item
    databases: tuple[Item, ...]


@dataclass(frozen=True)
class Placement:
    """Where the load balancer is: its scheme and tier under `condition`, and otherwise."""

    condition: str
    scheme: str
    tier: str
    other_scheme: str
    other_tier: str


@dataclass(frozen=True)
class CacheGroup:
    """One of the two ElastiCache clusters: its role (Session, Application), purpose, its node (naming the
    engines it can run) and the ports they listen on."""

    key: str
    purpose: str
    item: Item
    ports: tuple[int, ...]


def select_slot(value: Any) -> int | None:
    """The AZ slot (1-3) an AvailabilityZone or SubnetId property picks with Fn::Select, if any."""
    if isinstance(value, dict) and "Fn::Select" in value:
        return int(value["Fn::Select"][0]) + 1
    return None


def condition_note(resource: dict[str, Any], width: int = 24) -> str:
    """The resource's condition in words, wrapped under its label ('' when it always exists)."""
    if "Condition" not in resource:
        return ""
    return "\\n" + "\\n".join(textwrap.wrap(f"({in_words(resource['Condition'])})", width))


def zone_conditions(templates: Templates) -> dict[int, str | None]:
    """{slot: the condition of its subnets (None: always)}, from the network template, in slot order."""
    conditions: dict[int, str | None] = {}
    for _, resource in sorted(templates["network"]["Resources"].items()):
        if resource["Type"] == "AWS::EC2::Subnet":
            slot = select_slot(resource["Properties"]["AvailabilityZone"])
            conditions[slot] = resource.get("Condition", conditions.get(slot))
    return dict(sorted(conditions.items()))


def nat_gateways(templates: Templates) -> dict[int, Item]:
    """{slot: its NAT gateway}, from the public subnet each gateway sits in."""
    network = templates["network"]["Resources"]
    gateways = {}
    for name, resource in sorted(network.items()):
        if resource["Type"] == "AWS::EC2::NatGateway":
            subnet = network[resource["Properties"]["SubnetId"]["Ref"]]
            slot = select_slot(subnet["Properties"]["AvailabilityZone"])
            gateways[slot] = Item(name, "nat", f"NAT gateway{condition_note(resource)}")
    return gateways


def zones(templates: Templates) -> list[Zone]:
    """Every AZ slot with its NAT gateway, web node and Aurora instances, in order."""
    data = templates["data"]["Resources"]
    gateways = nat_gateways(templates)
    databases: dict[int, list[Item]] = {}
    for name, resource in sorted(data.items()):
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::RDS::DBInstance":
            role = "writer" if props.get("PromotionTier") == 0 else "reader"
            item = Item(name, "aurora", f"Aurora {role}{condition_note(resource)}")
            databases.setdefault(select_slot(props["AvailabilityZone"]), []).append(item)
    return [
        Zone(
            slot,
            condition,
            gateways.get(slot),
            Item(f"WebNode{slot}", "ec2", "web node\\nApache, PHP-FPM,\\nMoodle"),
            tuple(databases.get(slot, ())),
        )
        for slot, condition in zone_conditions(templates).items()
    ]


def load_balancer_placement(templates: Templates) -> Placement:
    """The load balancer's scheme and subnets, both an Fn::If on the same condition (CloudFront or not)."""
    (balancer,) = (
        r
        for r in templates["app"]["Resources"].values()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::LoadBalancer"
    )
    condition, scheme, other_scheme = balancer["Properties"]["Scheme"]["Fn::If"]
    subnets_condition, subnets, other_subnets = balancer["Properties"]["Subnets"]["Fn::If"]
    if subnets_condition != condition:
        raise ValueError(f"the load balancer's scheme follows {condition}, its subnets {subnets_condition}")
    return Placement(
        condition, scheme, SUBNET_TIERS[subnets["Ref"]], other_scheme, SUBNET_TIERS[other_subnets["Ref"]]
    )


def engine_line(resource: dict[str, Any]) -> str:
    """How one engine alternative spreads over the AZs, e.g. 'memcached: nodes across the AZs'."""
    props = resource["Properties"]
    if resource["Type"] == "AWS::ElastiCache::CacheCluster":
        spread = "nodes across the AZs" if props.get("AZMode") == "cross-az" else "nodes in one AZ"
    else:
        spread = "primary, replicas in other AZs" if props.get("MultiAZEnabled") else "nodes in one AZ"
    return f"{props['Engine']}: {spread}"


def cache_groups(templates: Templates) -> list[CacheGroup]:
    """The two cache clusters (sessions, application cache), each drawn as one node naming the engines it
    can run (one resource each, under an engine condition: exactly one exists)."""
    resources = templates["cache"]["Resources"]
    groups = []
    for role in ROLES:
        members = [
            resource
            for name, resource in sorted(resources.items())
            if name.startswith(role.key)
            and resource["Type"] in ("AWS::ElastiCache::CacheCluster", "AWS::ElastiCache::ReplicationGroup")
        ]
        label = "\\nor ".join(engine_line(r) for r in members) + f"\\n(the {role.key.lower()} cache engine)"
        ports = tuple(dict.fromkeys(r["Properties"]["Port"] for r in members))
        groups.append(
            CacheGroup(role.key, role.purpose, Item(f"{role.key}Cache", "elasticache", label), ports)
        )
    return groups


def file_system(templates: Templates) -> Item:
    """The EFS file system as one node: its mount targets' AZs, and when the conditional ones exist."""
    slots, notes = [], []
    for _, resource in sorted(templates["data"]["Resources"].items()):
        if resource["Type"] == "AWS::EFS::MountTarget":
            slot = select_slot(resource["Properties"]["SubnetId"])
            slots.append(f"AZ {slot}")
            if "Condition" in resource:
                notes.append(f"AZ {slot} {in_words(resource['Condition'])}")
    label = "EFS file system: moodledata\\na mount target in " + ", ".join(slots)
    return Item("FileSystem", "efs", label + "".join(f"\\n({note})" for note in notes))


def database_port(templates: Templates) -> int:
    """The Aurora cluster's port."""
    (cluster,) = (r for r in templates["data"]["Resources"].values() if r["Type"] == "AWS::RDS::DBCluster")
    return int(cluster["Properties"]["Port"])
