"""Deploying into an existing VPC: the operator's parameters, the master's condition and Rules, the checks
`moodle-cfn validate` runs, and the one nested stack that takes the network layer's place (its security groups).

With `ExistingVpcId` given the master creates no network stack. Every layer still receives the network
layer's outputs by the same names: the VPC, subnet and Availability Zone ids from the parameters below, the
security groups from this layer's stack, which builds exactly the network layer's groups (the same code) in
the operator's VPC. What the network layer would have built around them is then the operator's: a route to
the Internet (NAT) from the app subnets, an Internet gateway route for the public subnets, DNS support and
hostnames on, flow logs, and an S3 gateway endpoint (optional; it keeps S3 traffic off the NAT).

Why the groups live in a stack of their own instead of leaving the network stack to make only them: a site
built before this existed keeps its network stack unchanged (no group is replaced on update), and an
existing-VPC site has no stack that claims to own a network it does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from troposphere import Equals, Join, Not, Parameter, Ref, Template

from moodle_cfn.azs import AVAILABILITY_ZONE_COUNT
from moodle_cfn.checks import FindingCheck
from moodle_cfn.common import GROUP_NETWORK, SITE_NAME, OperatorParameter, declare_parameters
from moodle_cfn.layers import security_groups
from moodle_cfn.layers.address_plan import APP, DATA, PUBLIC
from moodle_cfn.layers.network import AVAILABILITY_ZONE_NAMES, VPC_ID
from moodle_cfn.layers.site import ENABLE_CLOUDFRONT

# Master conditions: exactly one of the network stack and this layer's stack exists.
CREATES_VPC = "CreatesVpc"
USES_EXISTING_VPC = "UsesExistingVpc"

_SAME_ORDER = "in the same Availability Zone order as the other Existing* lists (the Nth id of every list in the Nth AZ)"
_NAT = (
    "Outbound Internet access from these subnets (NAT gateway, or a route to your campus) is yours to provide: "
    "the web nodes install packages and download Moodle when they boot, and reach AWS APIs."
)

EXISTING_VPC_ID = OperatorParameter(
    Parameter(
        "ExistingVpcId",
        Type="String",
        Default="",
        AllowedPattern=r"^(vpc-[0-9a-f]{8,17})?$",
        ConstraintDescription="Empty, or a VPC id such as vpc-0123456789abcdef0.",
        Description="Empty: the stack creates its own VPC (the settings above). A VPC id: deploy into that VPC "
        "instead, with the four Existing* lists below; no VPC, subnet, NAT gateway, flow log or endpoint is "
        "created, and the VpcCidr, subnet CIDR, NatGatewayMode and FlowLogRetentionDays settings are not used. "
        "The VPC needs DNS support and DNS hostnames enabled (EFS and Aurora endpoints resolve through it). "
        "Choose at the first deploy: changing it later would move the database and file system.",
    ),
    label="Existing VPC id (instead of a new VPC)",
    group=GROUP_NETWORK,
)


def _id_list(name: str, what: str, holds: str, label: str) -> OperatorParameter:
    return OperatorParameter(
        Parameter(
            name,
            Type="CommaDelimitedList",
            Default="",
            Description=f"With ExistingVpcId: the {what} subnet ids, one per Availability Zone, exactly "
            f"AvailabilityZoneCount of them, {_SAME_ORDER}. They hold {holds}. Empty without ExistingVpcId.",
        ),
        label=label,
        group=GROUP_NETWORK,
    )


EXISTING_PUBLIC_SUBNET_IDS = _id_list(
    "ExistingPublicSubnetIds",
    "public",
    "the load balancer only when CloudFront is off, and then need a default route to an Internet gateway. "
    "With CloudFront the load balancer is internal, in the app subnets: a VPC without public subnets may "
    "repeat ExistingAppSubnetIds here",
    "Existing public subnet ids",
)
EXISTING_APP_SUBNET_IDS = _id_list(
    "ExistingAppSubnetIds",
    "private application",
    f"the web nodes and the database-role function. {_NAT}",
    "Existing app subnet ids",
)
EXISTING_DATA_SUBNET_IDS = _id_list(
    "ExistingDataSubnetIds",
    "private data",
    "Aurora, the caches and the EFS mount targets, which need no Internet access",
    "Existing data subnet ids",
)
EXISTING_AVAILABILITY_ZONE_NAMES = OperatorParameter(
    Parameter(
        "ExistingAvailabilityZoneNames",
        Type="CommaDelimitedList",
        Default="",
        Description="With ExistingVpcId: the Availability Zones of the subnets, such as eu-west-1a,eu-west-1b, "
        f"{_SAME_ORDER}. Aurora places one instance in each. Empty without ExistingVpcId.",
    ),
    label="Existing subnets' Availability Zones",
    group=GROUP_NETWORK,
)
SUBNET_LISTS = (
    (PUBLIC, EXISTING_PUBLIC_SUBNET_IDS),
    (APP, EXISTING_APP_SUBNET_IDS),
    (DATA, EXISTING_DATA_SUBNET_IDS),
)
LISTS = (*(p for _, p in SUBNET_LISTS), EXISTING_AVAILABILITY_ZONE_NAMES)
PARAMETERS = (EXISTING_VPC_ID, *LISTS)

# Network outputs the operator's parameters stand for; the security-group outputs come from this layer.
FROM_PARAMETERS: dict[str, OperatorParameter] = {
    VPC_ID: EXISTING_VPC_ID,
    AVAILABILITY_ZONE_NAMES: EXISTING_AVAILABILITY_ZONE_NAMES,
    **{tier.ids_output: parameter for tier, parameter in SUBNET_LISTS},
}


def uses_existing_vpc() -> Not:
    """The condition expression "an existing VPC was given"."""
    return Not(Equals(Ref(EXISTING_VPC_ID.parameter), ""))


def add_conditions(template: Template) -> None:
    """CreatesVpc and UsesExistingVpc, for the master."""
    template.add_condition(CREATES_VPC, Equals(Ref(EXISTING_VPC_ID.parameter), ""))
    template.add_condition(USES_EXISTING_VPC, uses_existing_vpc())


def from_parameter(output: str) -> object | None:
    """What replaces network output `output` in an existing VPC, as a nested-stack parameter value (a string:
    lists joined), or None when this layer's stack provides it instead (the security groups)."""
    parameter = FROM_PARAMETERS.get(output)
    if parameter is None:
        return None
    if parameter.parameter.Type == "CommaDelimitedList":
        return Join(",", Ref(parameter.parameter))
    return Ref(parameter.parameter)


def _is_empty(parameter: OperatorParameter) -> object:
    """Rules: the list or string parameter is empty (an empty CommaDelimitedList is the one-item list [""])."""
    if parameter.parameter.Type == "CommaDelimitedList":
        return {"Fn::EachMemberEquals": [Ref(parameter.parameter), ""]}
    return Equals(Ref(parameter.parameter), "")


def master_rules() -> dict[str, dict[str, object]]:
    """All or none of the Existing* parameters. CloudFormation Rules cannot count a list's items or compare
    them with AvailabilityZoneCount; `moodle-cfn validate` does (`existing_vpc_problem`)."""
    return {
        "ExistingVpcNeedsItsSubnets": {
            "RuleCondition": uses_existing_vpc(),
            "Assertions": [
                {
                    "Assert": Not(_is_empty(parameter)),
                    "AssertDescription": f"{parameter.name} is empty: with ExistingVpcId, give it too "
                    "(one per Availability Zone, in the same order as the other lists).",
                }
                for parameter in LISTS
            ],
        },
        "ExistingSubnetsNeedExistingVpc": {
            "RuleCondition": Equals(Ref(EXISTING_VPC_ID.parameter), ""),
            "Assertions": [
                {
                    "Assert": _is_empty(parameter),
                    "AssertDescription": f"{parameter.name} applies only with ExistingVpcId: give the VPC id, or "
                    f"empty {parameter.name} to create a new VPC.",
                }
                for parameter in LISTS
            ],
        },
    }


ID_PATTERNS = {
    **{parameter.name: r"subnet-[0-9a-f]{8,17}" for _, parameter in SUBNET_LISTS},
    EXISTING_AVAILABILITY_ZONE_NAMES.name: r"[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]",
}


def _items(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def public_subnets_unused(values: Mapping[str, str]) -> bool:
    """With CloudFront the load balancer sits in the app subnets, so the public list may repeat the app list
    (a campus VPC without public subnets); the check then skips it."""
    same = values.get(EXISTING_PUBLIC_SUBNET_IDS.name) == values.get(EXISTING_APP_SUBNET_IDS.name)
    return same and values.get(ENABLE_CLOUDFRONT.name) == "true"


def existing_vpc_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """(key, reason) for the first Existing* list that cannot work: not an id, not AvailabilityZoneCount
    items, or an id used twice (one subnet per AZ and per tier). None without ExistingVpcId (the Rules
    already refuse lists given without it), or when all is well."""
    if not values.get(EXISTING_VPC_ID.name):
        return None
    count = int(values[AVAILABILITY_ZONE_COUNT.name])
    seen: dict[str, str] = {}
    for parameter in LISTS:
        if parameter is EXISTING_PUBLIC_SUBNET_IDS and public_subnets_unused(values):
            continue
        items = _items(values.get(parameter.name, ""))
        for item in items:
            if not re.fullmatch(ID_PATTERNS[parameter.name], item):
                kind = (
                    "a subnet id"
                    if parameter in (p for _, p in SUBNET_LISTS)
                    else "an Availability Zone name"
                )
                return parameter.name, f"{item!r} is not {kind}"
        if len(items) != count:
            return (
                parameter.name,
                f"has {len(items)} item(s); AvailabilityZoneCount is {count}: give one per Availability Zone",
            )
        for item in items:
            if item in seen:
                return parameter.name, f"{item} is also in {seen[item]}: one subnet per tier and AZ"
            seen[item] = parameter.name
    return None


CHECKS = (FindingCheck(existing_vpc_problem),)


# The AWS types this layer declares the operator's ids with: CloudFormation then checks they exist in the
# account and Region before creating anything, and the Rules below can read the subnets' attributes.
AWS_TYPES = {
    EXISTING_VPC_ID.name: "AWS::EC2::VPC::Id",
    **{parameter.name: "List<AWS::EC2::Subnet::Id>" for _, parameter in SUBNET_LISTS},
    EXISTING_AVAILABILITY_ZONE_NAMES.name: "List<AWS::EC2::AvailabilityZone::Name>",
}


def subnet_rules() -> dict[str, dict[str, object]]:
    """What only the account knows, checked by CloudFormation when this stack is created, before any other
    layer: every subnet is in the VPC and in one of the listed AZs. `Fn::ValueOf` reads a subnet parameter's
    VpcId and AvailabilityZone ("Supported attributes" of AWS::EC2::Subnet::Id and List<AWS::EC2::Subnet::Id>,
    CloudFormation Template Reference, Rule functions). The AZs' order is beyond Rules: a subnet listed at the
    wrong position fails later, when the data layer pins an Aurora instance to the AZ of that position.
    (The condition always holds here, the master passes the lists only with a VPC; it also tells cfn-lint the
    parameter is used, which a name inside Fn::ValueOf does not.)"""
    vpc, zones = Ref(EXISTING_VPC_ID.parameter), Ref(EXISTING_AVAILABILITY_ZONE_NAMES.parameter)
    return {
        f"{parameter.name}InTheVpc": {
            "RuleCondition": Not(_is_empty(parameter)),
            "Assertions": [
                {
                    "Assert": {"Fn::EachMemberEquals": [{"Fn::ValueOf": [parameter.name, "VpcId"]}, vpc]},
                    "AssertDescription": f"Every subnet of {parameter.name} must be in ExistingVpcId.",
                },
                {
                    "Assert": {
                        "Fn::EachMemberIn": [{"Fn::ValueOf": [parameter.name, "AvailabilityZone"]}, zones]
                    },
                    "AssertDescription": f"Every subnet of {parameter.name} must be in one of "
                    "ExistingAvailabilityZoneNames.",
                },
            ],
        }
        for _, parameter in SUBNET_LISTS
    }


def build() -> Template:
    """The existing-VPC layer: the network layer's security groups, in the operator's VPC."""
    template = Template(
        Description="moodle-cfn security groups in an existing VPC (deployed instead of the network layer)"
    )
    declare_parameters(template, (SITE_NAME,))
    # The master creates this stack only with the ids given, so here their AWS types can check them.
    for parameter in PARAMETERS:
        template.add_parameter(
            Parameter(
                parameter.name,
                Type=AWS_TYPES[parameter.name],
                Description=f"{parameter.name} (master parameter; CloudFormation checks it exists)",
            )
        )
    for name, rule in subnet_rules().items():
        template.add_rule(name, rule)
    groups = security_groups.add_security_groups(template, Ref(EXISTING_VPC_ID.parameter))
    security_groups.add_security_group_outputs(template, groups)
    return template
