"""The VPC and how its subnets route: the Internet gateway, one subnet per tier and AZ slot, the route
tables, and the S3 gateway endpoint on the private ones.

Every per-AZ resource comes from a loop over `AZ_SLOTS`; the third slot exists only under the `HasAz3`
condition. The NAT gateways the application subnets route through are nat.py's.
"""

from __future__ import annotations

from troposphere import AWSHelperFn, If, Ref, Sub, Template
from troposphere.ec2 import (
    VPC,
    InternetGateway,
    NatGateway,
    Route,
    RouteTable,
    Subnet,
    SubnetRouteTableAssociation,
    VPCEndpoint,
    VPCGatewayAttachment,
)

from moodle_cfn.azs import AZ_SLOTS, availability_zone, per_slot_list, slot_condition
from moodle_cfn.common import tags
from moodle_cfn.layers.address_plan import ANYWHERE, APP, DATA, TIERS, VPC_CIDR
from moodle_cfn.layers.nat import nat_for_slot


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
