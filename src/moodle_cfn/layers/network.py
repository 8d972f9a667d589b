"""Network layer: VPC over 2 or 3 AZs, three subnet tiers, NAT, S3 endpoint, flow logs, tier security groups.

This module is the nested template as a whole: its parameters, flow logs, outputs and how a later layer
receives them. The pieces are address_plan.py (CIDRs and subnet tiers), vpc.py (VPC, subnets, routing, S3
endpoint), nat.py (NAT gateways) and security_groups.py (the tier groups and the rules between them).
"""

from __future__ import annotations

import functools

from troposphere import GetAtt, Output, Parameter, Ref, Sub, Template
from troposphere.ec2 import VPC, FlowLog, NatGateway, SecurityGroup, Subnet
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup

from moodle_cfn.azs import (
    AVAILABILITY_ZONE_COUNT,
    AZ_SLOTS,
    add_az_condition,
    availability_zone,
    per_slot_joined,
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
from moodle_cfn.layers.address_plan import PUBLIC, TIERS, VPC_CIDR, subnet_cidr_problem
from moodle_cfn.layers.nat import NAT_GATEWAY_MODE, add_nat_conditions, add_nat_gateways, nat_gateway_ids
from moodle_cfn.layers.security_groups import SECURITY_GROUPS, add_security_group_outputs, add_security_groups
from moodle_cfn.layers.vpc import (
    add_private_routing,
    add_public_routing,
    add_s3_endpoint,
    add_subnets,
    add_vpc,
)
from moodle_cfn.policies import log_delivery_policy, service_trust_policy

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

FLOW_LOG_RETENTION_DAYS = log_retention_parameter(
    "FlowLogRetentionDays",
    90,
    "Days CloudWatch Logs keeps the VPC flow logs.",
    label="Flow log retention (days)",
    group=GROUP_NETWORK,
)

PARAMETERS: tuple[OperatorParameter, ...] = (
    AVAILABILITY_ZONE_COUNT,
    NAT_GATEWAY_MODE,
    VPC_CIDR,
    *(tier.cidr_parameter(slot) for tier in TIERS for slot in AZ_SLOTS),
    FLOW_LOG_RETENTION_DAYS,
)


def add_conditions(template: Template) -> None:
    """AZ-count and NAT-mode conditions every per-AZ loop relies on."""
    add_az_condition(template)
    add_nat_conditions(template)


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
            Value=nat_gateway_ids(gateways),
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


CHECKS = (FindingCheck(subnet_cidr_problem),)
