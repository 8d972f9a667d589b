"""Deploy rehearsal of the network layer in a local moto server, with the values each params file gives it.

The network stack receives exactly what the master passes it (`tests/rehearsal.py: child_parameters`).
What this rehearsal is not: moto creates the VPC, subnets, route tables, routes, NAT gateways, EIPs,
security groups, the S3 endpoint, the flow log, its role and log group, and evaluates Conditions and Fn::If.
It does not model routing or reachability, it ignores AWS::EC2::SecurityGroupEgress, and it records
AWS::EC2::SubnetRouteTableAssociation without showing it in DescribeRouteTables, so the subnet -> route
table link is read from the stack's resources while the routes and NAT placement come from the EC2 API.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from moodle_cfn.layers import address_plan, security_groups


@pytest.fixture(scope="module", params=["dev.yaml", "production.yaml"])
def deployed(request, aws, rehearsal) -> dict[str, Any]:
    return {**rehearsal(request.param)["NetworkStack"], "ec2": boto3.client("ec2", **aws)}


def az_of_subnets(ec2: Any, vpc_id: str) -> dict[str, str]:
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    return {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}


def test_each_tier_spans_distinct_azs(deployed):
    azs = int(deployed["parameters"]["AvailabilityZoneCount"])
    subnet_azs = az_of_subnets(deployed["ec2"], deployed["outputs"]["VpcId"])
    assert len(subnet_azs) == 3 * azs
    for tier in address_plan.TIERS:
        ids = deployed["outputs"][tier.ids_output].split(",")
        assert len(ids) == azs
        assert len({subnet_azs[i] for i in ids}) == azs, f"{tier.key} subnets share an AZ"
    assert deployed["outputs"]["AvailabilityZoneNames"].split(",") == [
        subnet_azs[i] for i in deployed["outputs"]["AppSubnetIds"].split(",")
    ]


def test_nat_gateways_match_the_mode(deployed):
    azs = int(deployed["parameters"]["AvailabilityZoneCount"])
    per_az = deployed["parameters"]["NatGatewayMode"] == "per-az"
    gateways = deployed["ec2"].describe_nat_gateways(
        Filters=[{"Name": "vpc-id", "Values": [deployed["outputs"]["VpcId"]]}]
    )["NatGateways"]
    assert len(gateways) == (azs if per_az else 1)
    public = set(deployed["outputs"]["PublicSubnetIds"].split(","))
    assert all(g["SubnetId"] in public for g in gateways)


def test_each_app_subnet_routes_to_the_nat_in_its_own_az(deployed):
    ec2, physical = deployed["ec2"], deployed["physical"]
    per_az = deployed["parameters"]["NatGatewayMode"] == "per-az"
    subnet_azs = az_of_subnets(ec2, deployed["outputs"]["VpcId"])
    nat_subnet = {
        g["NatGatewayId"]: g["SubnetId"]
        for g in ec2.describe_nat_gateways(
            Filters=[{"Name": "vpc-id", "Values": [deployed["outputs"]["VpcId"]]}]
        )["NatGateways"]
    }
    for slot, app_subnet in enumerate(deployed["outputs"]["AppSubnetIds"].split(","), start=1):
        assert physical[f"AppSubnet{slot}"] == app_subnet
        (table,) = ec2.describe_route_tables(RouteTableIds=[physical[f"AppRouteTable{slot}"]])["RouteTables"]
        (default,) = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        nat_az = subnet_azs[nat_subnet[default["NatGatewayId"]]]
        expected = subnet_azs[app_subnet] if per_az else subnet_azs[physical["PublicSubnet1"]]
        assert nat_az == expected, f"AppSubnet{slot} in {subnet_azs[app_subnet]} routes via NAT in {nat_az}"


def test_data_subnets_have_no_internet_route(deployed):
    (table,) = deployed["ec2"].describe_route_tables(RouteTableIds=[deployed["physical"]["DataRouteTable"]])[
        "RouteTables"
    ]
    assert not [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert [r for r in table["Routes"] if r.get("GatewayId", "").startswith("vpce-")], "no S3 endpoint route"


def test_tier_security_groups_admit_only_their_peer(deployed):
    outputs = deployed["outputs"]
    groups = deployed["ec2"].describe_security_groups(
        GroupIds=[outputs[g.id_output] for g in security_groups.SECURITY_GROUPS]
    )["SecurityGroups"]
    by_id = {g["GroupId"]: g for g in groups}
    database = by_id[outputs["DatabaseSecurityGroupId"]]
    (rule,) = database["IpPermissions"]
    sources = {pair["GroupId"] for pair in rule["UserIdGroupPairs"]}
    assert rule["FromPort"] == 5432
    assert sources == {outputs["WebSecurityGroupId"], outputs["DatabaseRoleFunctionSecurityGroupId"]}
    web = by_id[outputs["WebSecurityGroupId"]]
    (rule,) = web["IpPermissions"]
    assert (rule["FromPort"], rule["UserIdGroupPairs"][0]["GroupId"]) == (80, outputs["AlbSecurityGroupId"])


def test_flow_log_writes_to_the_stack_log_group(deployed):
    logs = deployed["ec2"].describe_flow_logs(
        Filters=[{"Name": "resource-id", "Values": [deployed["outputs"]["VpcId"]]}]
    )["FlowLogs"]
    assert len(logs) == 1
    assert logs[0]["LogGroupName"] == deployed["physical"]["FlowLogGroup"]
    assert logs[0]["TrafficType"] == "ALL"
