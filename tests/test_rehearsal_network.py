"""Deploy rehearsal of the network layer in a local moto server, with the values each params file gives it.

The network stack receives exactly what the master passes it: every network parameter is a plain Ref to
the master parameter of the same name (asserted in test_master), so its values are the params file's over
the master's defaults.

What this rehearsal is not: moto creates the VPC, subnets, route tables, routes, NAT gateways, EIPs,
security groups, the S3 endpoint, the flow log, its role and log group, and evaluates Conditions and Fn::If.
It does not model routing or reachability, it ignores AWS::EC2::SecurityGroupEgress, and it records
AWS::EC2::SubnetRouteTableAssociation without showing it in DescribeRouteTables, so the subnet -> route
table link is read from the stack's resources while the routes and NAT placement come from the EC2 API.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from moodle_cfn.build import build_all
from moodle_cfn.layers import network
from moodle_cfn.params import load
from moodle_cfn.rules import effective_values
from tests.conftest import PARAMS_DIR

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    """A moto server on 127.0.0.1 at a free port, and client settings pointing at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "region_name": REGION}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def network_parameters(params_file: str, master_template: dict[str, Any]) -> dict[str, str]:
    """The values the master would pass the network stack for this params file."""
    given = load(PARAMS_DIR / params_file, master_template)
    values = effective_values(master_template["Parameters"], given)
    child_parameters = network.build().to_dict()["Parameters"]
    return {name: values[name] for name in child_parameters}


def deploy(aws: dict[str, Any], name: str, parameters: dict[str, str]) -> dict[str, Any]:
    """Create the network stack; return its outputs and logical -> physical resource ids."""
    cloudformation = boto3.client("cloudformation", **aws)
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=build_all()["network.yaml"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    resources = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    return {
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]},
        "physical": {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources},
        "types": Counter(r["ResourceType"] for r in resources),
    }


@pytest.fixture(scope="module", params=["dev.yaml", "production.yaml"])
def deployed(request, aws, master_template) -> dict[str, Any]:
    parameters = network_parameters(request.param, master_template)
    stack = deploy(aws, request.param.removesuffix(".yaml"), parameters)
    return {**stack, "parameters": parameters, "ec2": boto3.client("ec2", **aws)}


def az_of_subnets(ec2: Any, vpc_id: str) -> dict[str, str]:
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    return {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}


def test_each_tier_spans_distinct_azs(deployed):
    azs = int(deployed["parameters"]["AvailabilityZoneCount"])
    subnet_azs = az_of_subnets(deployed["ec2"], deployed["outputs"]["VpcId"])
    assert len(subnet_azs) == 3 * azs
    for tier in network.TIERS:
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
        GroupIds=[outputs[g.id_output] for g in network.SECURITY_GROUPS]
    )["SecurityGroups"]
    by_id = {g["GroupId"]: g for g in groups}
    database = by_id[outputs["DatabaseSecurityGroupId"]]
    (rule,) = database["IpPermissions"]
    assert (rule["FromPort"], rule["UserIdGroupPairs"][0]["GroupId"]) == (5432, outputs["WebSecurityGroupId"])
    alb = by_id[outputs["AlbSecurityGroupId"]]
    assert sorted(p["FromPort"] for p in alb["IpPermissions"]) == [80, 443]


def test_flow_log_writes_to_the_stack_log_group(deployed):
    logs = deployed["ec2"].describe_flow_logs(
        Filters=[{"Name": "resource-id", "Values": [deployed["outputs"]["VpcId"]]}]
    )["FlowLogs"]
    assert len(logs) == 1
    assert logs[0]["LogGroupName"] == deployed["physical"]["FlowLogGroup"]
    assert logs[0]["TrafficType"] == "ALL"
