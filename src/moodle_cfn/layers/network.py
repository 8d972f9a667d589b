"""Network layer: VPC over 2 or 3 AZs, three subnet tiers, NAT, S3 endpoint, flow logs, tier security groups.

Every per-AZ resource comes from a loop over `AZ_SLOTS`; the third slot exists only under the `HasAz3`
condition, and NAT gateways beyond the first only when `NatGatewayMode` is `per-az`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from troposphere import And as AndCondition
from troposphere import (
    AWSHelperFn,
    Equals,
    GetAtt,
    If,
    Output,
    Parameter,
    Ref,
    Sub,
    Template,
)
from troposphere.ec2 import (
    EIP,
    VPC,
    FlowLog,
    InternetGateway,
    NatGateway,
    Route,
    RouteTable,
    SecurityGroup,
    SecurityGroupIngress,
    SecurityGroupRule,
    Subnet,
    SubnetRouteTableAssociation,
    VPCEndpoint,
    VPCGatewayAttachment,
)
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup

from moodle_cfn.azs import (
    AVAILABILITY_ZONE_COUNT,
    AZ_SLOTS,
    add_az_condition,
    availability_zone,
    per_slot_joined,
    per_slot_list,
    slot_condition,
    three_azs,
)
from moodle_cfn.checks import FindingCheck
from moodle_cfn.common import (
    GROUP_NETWORK,
    RETAIN_EXCEPT_ON_CREATE,
    SITE_NAME,
    OperatorParameter,
    checkov_skips,
    declare_parameters,
    log_retention_parameter,
    tags,
)
from moodle_cfn.policies import log_delivery_policy, service_trust_policy

NAT_PER_AZ = "NatPerAz"
NAT_IN_AZ3 = "NatInAz3"

CIDR_PATTERN = (
    r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(1[6-9]|2[0-8])$"
)
CIDR_CONSTRAINT = "An IPv4 CIDR block with a prefix length from /16 to /28, such as 10.0.0.0/16."

# Ports between tiers.
HTTP_PORT = 80
HTTPS_PORT = 443
SMTP_SUBMISSION_PORT = 587
POSTGRES_PORT = 5432
MEMCACHED_PORT = 11211
VALKEY_PORT = 6379
NFS_PORT = 2049

# Outputs later layers read; each name is also the parameter name on the consuming side.
VPC_ID = "VpcId"
VPC_CIDR_OUTPUT = "VpcCidrBlock"
AVAILABILITY_ZONE_NAMES = "AvailabilityZoneNames"
NAT_GATEWAY_IDS = "NatGatewayIds"


# How a later layer declares a network output as its own parameter: same name, the type it needs there.
INPUT_TYPES = {
    VPC_ID: "AWS::EC2::VPC::Id",
    VPC_CIDR_OUTPUT: "String",
    AVAILABILITY_ZONE_NAMES: "CommaDelimitedList",
    NAT_GATEWAY_IDS: "CommaDelimitedList",
}


def _cidr_parameter(name: str, default: str, what: str) -> Parameter:
    return Parameter(
        name,
        Type="String",
        Default=default,
        AllowedPattern=CIDR_PATTERN,
        ConstraintDescription=CIDR_CONSTRAINT,
        Description=f"CIDR block of {what}.",
    )


NAT_GATEWAY_MODE = OperatorParameter(
    Parameter(
        "NatGatewayMode",
        Type="String",
        Default="per-az",
        AllowedValues=["per-az", "single"],
        Description="per-az: one NAT gateway in each AZ, so losing an AZ never cuts the others off (production). "
        "single: one NAT gateway shared by all AZs, cheaper, for non-production.",
    ),
    label="NAT gateways",
    group=GROUP_NETWORK,
)
VPC_CIDR = OperatorParameter(
    _cidr_parameter("VpcCidr", "10.0.0.0/16", "the VPC"), label="VPC CIDR block", group=GROUP_NETWORK
)
FLOW_LOG_RETENTION_DAYS = log_retention_parameter(
    "FlowLogRetentionDays",
    90,
    "Days CloudWatch Logs keeps the VPC flow logs.",
    label="Flow log retention (days)",
    group=GROUP_NETWORK,
)


@dataclass(frozen=True)
class SubnetTier:
    """One row of subnets, one subnet per AZ slot."""

    key: str
    description: str
    default_cidrs: tuple[str, str, str]

    def subnet_title(self, slot: int) -> str:
        """Logical id of the subnet in `slot`."""
        return f"{self.key}Subnet{slot}"

    def cidr_parameter(self, slot: int) -> OperatorParameter:
        """The operator parameter holding this tier's CIDR in `slot` (the same object on every call)."""
        return _subnet_cidr_parameter(self, slot)

    @property
    def ids_output(self) -> str:
        """Name of the output listing this tier's subnet ids, comma separated, in AZ order."""
        return f"{self.key}SubnetIds"


@functools.cache
def _subnet_cidr_parameter(tier: SubnetTier, slot: int) -> OperatorParameter:
    return OperatorParameter(
        _cidr_parameter(
            f"{tier.key}Subnet{slot}Cidr",
            tier.default_cidrs[slot - 1],
            f"the {tier.description} subnet in AZ {slot}" + (" (used only with 3 AZs)" if slot == 3 else ""),
        ),
        label=f"{tier.description.capitalize()} subnet {slot} CIDR",
        group=GROUP_NETWORK,
    )


PUBLIC = SubnetTier("Public", "public", ("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"))
APP = SubnetTier("App", "private application", ("10.0.16.0/20", "10.0.32.0/20", "10.0.48.0/20"))
DATA = SubnetTier("Data", "private data", ("10.0.64.0/24", "10.0.65.0/24", "10.0.66.0/24"))
TIERS = (PUBLIC, APP, DATA)


@dataclass(frozen=True)
class TierSecurityGroup:
    """A security group for one tier; `key` prefixes its logical id and its output."""

    key: str
    description: str

    @property
    def title(self) -> str:
        """Logical id of the security group."""
        return f"{self.key}SecurityGroup"

    @property
    def id_output(self) -> str:
        """Name of the output carrying the group id."""
        return f"{self.key}SecurityGroupId"


ALB_SG = TierSecurityGroup(
    "Alb", "Application Load Balancer: from CloudFront, or from viewers without CloudFront"
)
WEB_SG = TierSecurityGroup("Web", "Moodle web nodes: HTTP from the load balancer only")
DATABASE_SG = TierSecurityGroup("Database", "Aurora PostgreSQL: from the web nodes only")
CACHE_SG = TierSecurityGroup("Cache", "ElastiCache session and application caches: from the web nodes only")
FILE_SYSTEM_SG = TierSecurityGroup(
    "FileSystem", "EFS mount targets for moodledata: NFS from the web nodes only"
)
DATABASE_ROLE_FUNCTION_SG = TierSecurityGroup(
    "DatabaseRoleFunction",
    "Database-role and rotation function: PostgreSQL to the database, HTTPS to Secrets Manager and S3",
)
# Destinations after their sources: add_security_groups builds them in reverse.
SECURITY_GROUPS = (ALB_SG, WEB_SG, DATABASE_ROLE_FUNCTION_SG, DATABASE_SG, CACHE_SG, FILE_SYSTEM_SG)


@dataclass(frozen=True)
class PeerRule:
    """Traffic allowed from one tier's group to another's on one TCP port."""

    source: TierSecurityGroup
    destination: TierSecurityGroup
    port: int
    what: str


# The whole east-west policy. Both cache ports are open because each cache cluster picks its engine
# (memcached or valkey) independently; nothing else listens in the cache group.
PEER_RULES = (
    PeerRule(ALB_SG, WEB_SG, HTTP_PORT, "HTTP from the load balancer to Apache"),
    PeerRule(WEB_SG, DATABASE_SG, POSTGRES_PORT, "PostgreSQL from the web nodes"),
    PeerRule(WEB_SG, CACHE_SG, MEMCACHED_PORT, "memcached from the web nodes"),
    PeerRule(WEB_SG, CACHE_SG, VALKEY_PORT, "valkey from the web nodes"),
    PeerRule(WEB_SG, FILE_SYSTEM_SG, NFS_PORT, "NFS from the web nodes"),
    PeerRule(
        DATABASE_ROLE_FUNCTION_SG, DATABASE_SG, POSTGRES_PORT, "PostgreSQL from the database-role function"
    ),
)

# Where the web nodes may reach outside the VPC (through the NAT gateways): package repositories, the Moodle
# download, AWS APIs, and mail submission to Amazon SES or another smarthost.
WEB_INTERNET_PORTS = (
    (HTTPS_PORT, "HTTPS to package repositories, Moodle downloads and AWS APIs"),
    (HTTP_PORT, "HTTP to package mirrors that do not redirect to HTTPS"),
    (SMTP_SUBMISSION_PORT, "SMTP submission (STARTTLS) to Amazon SES or the site's mail relay"),
)
# The database-role function (in the app subnets) calls Secrets Manager through the NAT gateways and answers
# CloudFormation at an S3 URL (through the S3 gateway endpoint); nothing else.
FUNCTION_INTERNET_PORTS = ((HTTPS_PORT, "HTTPS to Secrets Manager and CloudFormation's S3 response URL"),)
INTERNET_PORTS = {WEB_SG: WEB_INTERNET_PORTS, DATABASE_ROLE_FUNCTION_SG: FUNCTION_INTERNET_PORTS}
ANYWHERE = "0.0.0.0/0"
# A security group with explicit egress loses the default allow-all rule; this one matches nothing routable.
NO_EGRESS = SecurityGroupRule(
    IpProtocol="icmp", FromPort=-1, ToPort=-1, CidrIp="127.0.0.1/32", Description="No outbound traffic"
)

PARAMETERS: tuple[OperatorParameter, ...] = (
    AVAILABILITY_ZONE_COUNT,
    NAT_GATEWAY_MODE,
    VPC_CIDR,
    *(tier.cidr_parameter(slot) for tier in TIERS for slot in AZ_SLOTS),
    FLOW_LOG_RETENTION_DAYS,
)


def nat_condition(slot: int) -> str | None:
    """Condition under which a NAT gateway exists in AZ `slot` (None: always; slot 1 serves single mode)."""
    return {1: None, 2: NAT_PER_AZ, 3: NAT_IN_AZ3}[slot]


def add_nat_conditions(template: Template) -> None:
    """Which NAT gateways exist: per AZ or one, and the third only with three AZs."""
    nat_per_az = Equals(Ref(NAT_GATEWAY_MODE.parameter), "per-az")
    template.add_condition(NAT_PER_AZ, nat_per_az)
    # Spelled out rather than And(Condition(...), ...): same meaning, and moto evaluates it correctly.
    template.add_condition(NAT_IN_AZ3, AndCondition(three_azs(), nat_per_az))


def add_conditions(template: Template) -> None:
    """AZ-count and NAT-mode conditions every per-AZ loop relies on."""
    add_az_condition(template)
    add_nat_conditions(template)


def add_vpc(template: Template) -> tuple[VPC, InternetGateway, VPCGatewayAttachment]:
    """The VPC and its attached Internet gateway."""
    vpc = template.add_resource(
        VPC(
            "Vpc",
            CidrBlock=Ref(VPC_CIDR.parameter),
            EnableDnsHostnames=True,  # EFS mount helper and RDS endpoints resolve through VPC DNS
            EnableDnsSupport=True,
            Tags=tags("vpc"),
        )
    )
    gateway = template.add_resource(InternetGateway("InternetGateway", Tags=tags("igw")))
    attachment = template.add_resource(
        VPCGatewayAttachment("InternetGatewayAttachment", VpcId=Ref(vpc), InternetGatewayId=Ref(gateway))
    )
    return vpc, gateway, attachment


def add_subnets(template: Template, vpc: VPC) -> dict[str, dict[int, Subnet]]:
    """One subnet per tier and AZ slot; returns {tier key: {slot: subnet}}."""
    subnets: dict[str, dict[int, Subnet]] = {}
    for tier in TIERS:
        subnets[tier.key] = {}
        for slot in AZ_SLOTS:
            subnet = Subnet(
                tier.subnet_title(slot),
                VpcId=Ref(vpc),
                AvailabilityZone=availability_zone(slot),
                CidrBlock=Ref(tier.cidr_parameter(slot).parameter),
                # Nothing is launched with a public address: the ALB and NAT gateways get theirs explicitly.
                MapPublicIpOnLaunch=False,
                Tags=tags(f"{tier.key.lower()}-{slot}", Tier=tier.key.lower()),
            )
            if slot_condition(slot):
                subnet.Condition = slot_condition(slot)
            subnets[tier.key][slot] = template.add_resource(subnet)
    return subnets


def associate(template: Template, subnet: Subnet, route_table: RouteTable) -> None:
    """Associate a subnet with a route table, under the subnet's own condition."""
    association = SubnetRouteTableAssociation(
        f"{subnet.title}RouteTableAssociation", SubnetId=Ref(subnet), RouteTableId=Ref(route_table)
    )
    if getattr(subnet, "Condition", None):
        association.Condition = subnet.Condition
    template.add_resource(association)


def add_public_routing(
    template: Template,
    vpc: VPC,
    gateway: InternetGateway,
    attachment: VPCGatewayAttachment,
    public: dict[int, Subnet],
) -> None:
    """One public route table, default route to the Internet gateway."""
    table = template.add_resource(RouteTable("PublicRouteTable", VpcId=Ref(vpc), Tags=tags("public")))
    template.add_resource(
        Route(
            "PublicDefaultRoute",
            DependsOn=attachment.title,  # a route to a detached gateway fails
            RouteTableId=Ref(table),
            DestinationCidrBlock=ANYWHERE,
            GatewayId=Ref(gateway),
        )
    )
    for subnet in public.values():
        associate(template, subnet, table)


def add_nat_gateways(
    template: Template, attachment: VPCGatewayAttachment, public: dict[int, Subnet]
) -> dict[int, NatGateway]:
    """A NAT gateway with its Elastic IP in each slot's public subnet (only slot 1 in single mode)."""
    gateways: dict[int, NatGateway] = {}
    for slot in AZ_SLOTS:
        eip = EIP(f"NatEip{slot}", DependsOn=attachment.title, Domain="vpc", Tags=tags(f"nat-{slot}"))
        gateway = NatGateway(
            f"NatGateway{slot}",
            AllocationId=GetAtt(eip, "AllocationId"),
            SubnetId=Ref(public[slot]),
            Tags=tags(f"nat-{slot}"),
        )
        condition = nat_condition(slot)
        if condition:
            eip.Condition = gateway.Condition = condition
        template.add_resource(eip)
        gateways[slot] = template.add_resource(gateway)
    return gateways


def nat_for_slot(slot: int, gateways: dict[int, NatGateway]) -> AWSHelperFn:
    """The NAT gateway the app subnet in `slot` routes through: its own AZ's, or slot 1's in single mode."""
    if nat_condition(slot) is None:
        return Ref(gateways[slot])
    return If(NAT_PER_AZ, Ref(gateways[slot]), Ref(gateways[1]))


def add_private_routing(
    template: Template,
    vpc: VPC,
    subnets: dict[str, dict[int, Subnet]],
    gateways: dict[int, NatGateway],
) -> If:
    """Route tables of the private tiers; returns the ids of all of them, for the S3 endpoint.

    App subnets get one table per AZ with a default route to their AZ's NAT gateway. Data subnets hold only
    managed services (Aurora, ElastiCache, EFS) that need no Internet access, so they share one table
    without a default route.
    """
    app_tables: dict[int, AWSHelperFn] = {}
    for slot, subnet in subnets[APP.key].items():
        table = RouteTable(f"AppRouteTable{slot}", VpcId=Ref(vpc), Tags=tags(f"app-{slot}"))
        route = Route(
            f"AppDefaultRoute{slot}",
            RouteTableId=Ref(table),
            DestinationCidrBlock=ANYWHERE,
            NatGatewayId=nat_for_slot(slot, gateways),
        )
        if slot_condition(slot):
            table.Condition = route.Condition = slot_condition(slot)
        app_tables[slot] = Ref(table)
        template.add_resource(table)
        template.add_resource(route)
        associate(template, subnet, table)

    data_table = template.add_resource(RouteTable("DataRouteTable", VpcId=Ref(vpc), Tags=tags("data")))
    for subnet in subnets[DATA.key].values():
        associate(template, subnet, data_table)
    return per_slot_list(app_tables, extra=(Ref(data_table),))


def add_s3_endpoint(template: Template, vpc: VPC, route_table_ids: If) -> None:
    """Gateway endpoint: S3 traffic (packages, code bundles, backups) skips the NAT gateways, at no cost."""
    template.add_resource(
        VPCEndpoint(
            "S3GatewayEndpoint",
            VpcId=Ref(vpc),
            ServiceName=Sub("com.amazonaws.${AWS::Region}.s3"),
            VpcEndpointType="Gateway",
            RouteTableIds=route_table_ids,
        )
    )


def add_flow_logs(template: Template, vpc: VPC) -> None:
    """VPC flow logs (all traffic) into a log group with retention, written by a role scoped to that group."""
    log_group = template.add_resource(
        LogGroup(
            "FlowLogGroup",
            RetentionInDays=Ref(FLOW_LOG_RETENTION_DAYS.parameter),
            Metadata=checkov_skips(
                CKV_AWS_158="Flow logs hold connection metadata only, and CloudWatch Logs already encrypts them "
                "at rest with service-owned keys; a customer key would add a key policy to maintain and "
                "per-request KMS cost without protecting anything more."
            ),
            **RETAIN_EXCEPT_ON_CREATE,  # audit evidence outlives the stack
        )
    )
    role = template.add_resource(
        Role(
            "FlowLogRole",
            AssumeRolePolicyDocument=service_trust_policy(
                "vpc-flow-logs.amazonaws.com",
                Sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:vpc-flow-log/*"),
            ),
            Policies=[
                Policy(
                    PolicyName="deliver-flow-logs",
                    PolicyDocument=log_delivery_policy(GetAtt(log_group, "Arn")),
                )
            ],
            Tags=tags("flow-logs"),
        )
    )
    template.add_resource(
        FlowLog(
            "VpcFlowLog",
            ResourceId=Ref(vpc),
            ResourceType="VPC",
            TrafficType="ALL",
            LogDestinationType="cloud-watch-logs",
            LogGroupName=Ref(log_group),
            DeliverLogsPermissionArn=GetAtt(role, "Arn"),
            MaxAggregationInterval=60,
            Tags=tags("flow-log"),
        )
    )


def egress_rules(group: TierSecurityGroup, groups: dict[str, SecurityGroup]) -> list[SecurityGroupRule]:
    """Inline egress of one group: its peer rules, plus its Internet ports if it has any (else nothing)."""
    rules = [
        SecurityGroupRule(
            IpProtocol="tcp",
            FromPort=rule.port,
            ToPort=rule.port,
            DestinationSecurityGroupId=Ref(groups[rule.destination.key]),
            Description=rule.what,
        )
        for rule in PEER_RULES
        if rule.source == group
    ]
    rules += [
        SecurityGroupRule(IpProtocol="tcp", FromPort=port, ToPort=port, CidrIp=ANYWHERE, Description=what)
        for port, what in INTERNET_PORTS.get(group, ())
    ]
    return rules or [NO_EGRESS]


def add_security_groups(template: Template, vpc_id: AWSHelperFn) -> dict[str, SecurityGroup]:
    """One group per tier in the VPC `vpc_id`. Egress is inline, ingress between tiers is standalone, so no two
    groups form a cycle. The network layer calls it for its own VPC, the existing-VPC layer for the operator's.

    Who may reach the load balancer depends on whether CloudFront fronts it: the app layer adds that ingress.
    """
    groups: dict[str, SecurityGroup] = {}
    # Destinations first: a group's inline egress refers to the groups it talks to.
    for group in reversed(SECURITY_GROUPS):
        resource = SecurityGroup(
            group.title,
            GroupDescription=group.description,
            VpcId=vpc_id,
            SecurityGroupEgress=egress_rules(group, groups),
            Tags=tags(f"{group.key.lower()}-sg"),
        )
        groups[group.key] = template.add_resource(resource)

    for rule in PEER_RULES:
        template.add_resource(
            SecurityGroupIngress(
                f"{rule.destination.key}From{rule.source.key}Port{rule.port}",
                GroupId=Ref(groups[rule.destination.key]),
                IpProtocol="tcp",
                FromPort=rule.port,
                ToPort=rule.port,
                SourceSecurityGroupId=Ref(groups[rule.source.key]),
                Description=rule.what,
            )
        )
    return groups


def add_outputs(
    template: Template,
    vpc: VPC,
    subnets: dict[str, dict[int, Subnet]],
    groups: dict[str, SecurityGroup],
    gateways: dict[int, NatGateway],
) -> None:
    """Every id a later layer needs; subnet lists are comma-joined in AZ order."""
    template.add_output(
        Output(
            NAT_GATEWAY_IDS,
            Description="NAT gateways in use, comma separated, in AZ order (one in single mode)",
            Value=If(
                NAT_PER_AZ, per_slot_joined({slot: Ref(g) for slot, g in gateways.items()}), Ref(gateways[1])
            ),
        )
    )
    template.add_output(Output(VPC_ID, Description="VPC id", Value=Ref(vpc)))
    template.add_output(Output(VPC_CIDR_OUTPUT, Description="VPC CIDR block", Value=GetAtt(vpc, "CidrBlock")))
    template.add_output(
        Output(
            AVAILABILITY_ZONE_NAMES,
            Description="The Availability Zones in use, comma separated, in subnet order",
            Value=per_slot_joined({slot: availability_zone(slot) for slot in AZ_SLOTS}),
        )
    )
    for tier in TIERS:
        template.add_output(
            Output(
                tier.ids_output,
                Description=f"Ids of the {tier.description} subnets, comma separated, in AZ order",
                Value=per_slot_joined({slot: Ref(subnet) for slot, subnet in subnets[tier.key].items()}),
            )
        )
    add_security_group_outputs(template, groups)


def add_security_group_outputs(template: Template, groups: dict[str, SecurityGroup]) -> None:
    """The id of each tier's group, for the layers that place resources in it."""
    for group in SECURITY_GROUPS:
        template.add_output(
            Output(group.id_output, Description=group.description, Value=GetAtt(groups[group.key], "GroupId"))
        )


def build() -> Template:
    """The network nested template."""
    template = Template(
        Description="moodle-cfn network: VPC, subnets over 2-3 AZs, NAT, flow logs, security groups"
    )
    declare_parameters(template, (SITE_NAME, *PARAMETERS))
    add_conditions(template)
    vpc, gateway, attachment = add_vpc(template)
    subnets = add_subnets(template, vpc)
    add_public_routing(template, vpc, gateway, attachment, subnets[PUBLIC.key])
    gateways = add_nat_gateways(template, attachment, subnets[PUBLIC.key])
    add_s3_endpoint(template, vpc, add_private_routing(template, vpc, subnets, gateways))
    add_flow_logs(template, vpc)
    groups = add_security_groups(template, Ref(vpc))
    add_outputs(template, vpc, subnets, groups, gateways)
    return template


@functools.cache
def as_parameter(output: str) -> Parameter:
    """The parameter a later layer declares to receive network output `output` (one object per name)."""
    types = {
        **INPUT_TYPES,
        **{tier.ids_output: "List<AWS::EC2::Subnet::Id>" for tier in TIERS},
        **{group.id_output: "AWS::EC2::SecurityGroup::Id" for group in SECURITY_GROUPS},
    }
    description = build().outputs[output].Description
    return Parameter(output, Type=types[output], Description=f"{description} (network layer output)")


def active_subnet_cidrs(values: Mapping[str, str]) -> dict[str, str]:
    """{parameter name: CIDR} of the subnets the AZ count puts to use."""
    slots = [slot for slot in AZ_SLOTS if slot != 3 or values[AVAILABILITY_ZONE_COUNT.name] == "3"]
    return {tier.cidr_parameter(s).name: values[tier.cidr_parameter(s).name] for tier in TIERS for s in slots}


def subnet_cidr_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """(parameter, reason) for the first subnet in use outside the VPC or overlapping another, else None.

    CloudFormation would only find out when creating the second subnet; this finds it before deploying.
    """
    blocks = {VPC_CIDR.name: values[VPC_CIDR.name], **active_subnet_cidrs(values)}
    for name, cidr in blocks.items():
        network = ipaddress.ip_network(cidr, strict=False)
        if str(network) != cidr:
            return name, f"{cidr} has host bits set; the block is {network}"
    vpc = ipaddress.ip_network(values[VPC_CIDR.name])
    networks = [(n, ipaddress.ip_network(c)) for n, c in active_subnet_cidrs(values).items()]
    for index, (name, network) in enumerate(networks):
        if not network.subnet_of(vpc):
            return name, f"{network} is not inside VpcCidr {vpc}"
        for other, other_network in networks[index + 1 :]:
            if network.overlaps(other_network):
                return other, f"{other_network} overlaps {name} ({network})"
    return None


CHECKS = (FindingCheck(subnet_cidr_problem),)
