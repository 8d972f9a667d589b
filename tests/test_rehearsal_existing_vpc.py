"""Deploy rehearsal of params/existing-vpc.yaml in moto: a VPC and subnets made first with the EC2 API (as a
university has them), then the layers the master creates for that file, each fed what the master passes it.

What it proves in moto: no network stack is created, and nothing of a network (VPC, subnet, Internet or NAT
gateway, route table, flow log, endpoint) appears; the security stack builds the tier groups in the given
VPC; the data, cache, app and monitoring stacks deploy with the given subnets (DB subnet group, EFS mount
targets, instances). The example ids of the file are replaced by moto's own (tests/conftest.py:
campus_network). What moto does not model (routing, so whether the app subnets reach the Internet through
the operator's NAT) is the operator's, as the parameter descriptions say; the master's Rules and Fn::Ifs are
checked on the template (tests/test_existing_vpc.py), because the rehearsal deploys layer by layer.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from moodle_cfn.layers import address_plan, security_groups

PARAMS_FILE = "existing-vpc.yaml"


@pytest.fixture(scope="module")
def stacks(rehearsal) -> dict[str, Any]:
    return rehearsal(PARAMS_FILE)


@pytest.fixture(scope="module")
def given(stacks) -> dict[str, str]:
    """The existing ids the layers received (the security stack's VPC, the data stack's subnets...)."""
    received = {name: value for stack in stacks.values() for name, value in stack["parameters"].items()}
    return {
        "vpc": stacks["SecurityStack"]["parameters"]["ExistingVpcId"],
        **{tier.key: received[tier.ids_output] for tier in address_plan.TIERS},
    }


def test_no_network_stack_is_created(aws, stacks):
    assert "NetworkStack" not in stacks
    assert list(stacks) == [
        "SecurityStack",
        "DataStack",
        "CacheStack",
        "AppStack",
        "MonitoringStack",
        "ProtectionStack",
    ]
    names = {s["StackName"] for s in boto3.client("cloudformation", **aws).describe_stacks()["Stacks"]}
    assert "existing-vpc-network" not in names and "existing-vpc-security" in names


def test_nothing_of_a_network_is_added_to_the_existing_vpc(aws, stacks, given):
    ec2 = boto3.client("ec2", **aws)
    in_vpc = [{"Name": "vpc-id", "Values": [given["vpc"]]}]
    subnets = {s["SubnetId"] for s in ec2.describe_subnets(Filters=in_vpc)["Subnets"]}
    assert subnets == {i for tier in address_plan.TIERS for i in given[tier.key].split(",")}
    assert ec2.describe_nat_gateways(Filters=in_vpc)["NatGateways"] == []
    attached = [{"Name": "attachment.vpc-id", "Values": [given["vpc"]]}]
    assert ec2.describe_internet_gateways(Filters=attached)["InternetGateways"] == []
    (main_table,) = ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]  # the VPC's own, nothing added
    assert main_table["Associations"][0]["Main"] is True
    assert ec2.describe_vpc_endpoints(Filters=in_vpc)["VpcEndpoints"] == []
    assert (
        ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [given["vpc"]]}])["FlowLogs"] == []
    )
    types = {r["Type"] for stack in stacks.values() for r in stack["template"]["Resources"].values()}
    assert not types & {"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::FlowLog"}


def test_the_tier_groups_are_in_the_existing_vpc_and_admit_only_their_peer(aws, stacks, given):
    outputs = stacks["SecurityStack"]["outputs"]
    groups = boto3.client("ec2", **aws).describe_security_groups(
        GroupIds=[outputs[g.id_output] for g in security_groups.SECURITY_GROUPS]
    )["SecurityGroups"]
    assert {g["VpcId"] for g in groups} == {given["vpc"]}
    by_id = {g["GroupId"]: g for g in groups}
    (rule,) = by_id[outputs["DatabaseSecurityGroupId"]]["IpPermissions"]
    assert rule["FromPort"] == 5432
    assert {p["GroupId"] for p in rule["UserIdGroupPairs"]} == {
        outputs["WebSecurityGroupId"],
        outputs["DatabaseRoleFunctionSecurityGroupId"],
    }
    assert stacks["DataStack"]["parameters"]["DatabaseSecurityGroupId"] == outputs["DatabaseSecurityGroupId"]
    assert stacks["AppStack"]["parameters"]["WebSecurityGroupId"] == outputs["WebSecurityGroupId"]


def test_the_data_layer_uses_the_existing_data_subnets(aws, stacks, given):
    rds = boto3.client("rds", **aws)
    (group,) = [g for g in rds.describe_db_subnet_groups()["DBSubnetGroups"] if g["VpcId"] == given["vpc"]]
    assert {s["SubnetIdentifier"] for s in group["Subnets"]} == set(given["Data"].split(","))
    efs = boto3.client("efs", **aws)
    targets = efs.describe_mount_targets(FileSystemId=stacks["DataStack"]["outputs"]["FileSystemId"])
    # One mount target per AZ, the Nth in the Nth data subnet.
    assert [t["SubnetId"] for t in targets["MountTargets"]] == given["Data"].split(",")
    zones = stacks["DataStack"]["parameters"]["AvailabilityZoneNames"].split(",")
    assert [t["AvailabilityZoneName"] for t in targets["MountTargets"]] == zones


def test_the_web_nodes_launch_into_the_existing_app_subnets(aws, stacks, given):
    app = stacks["AppStack"]
    (group,) = boto3.client("autoscaling", **aws).describe_auto_scaling_groups(
        AutoScalingGroupNames=[app["outputs"]["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    assert set(group["VPCZoneIdentifier"].split(",")) == set(given["App"].split(","))
    ec2 = boto3.client("ec2", **aws)
    ids = [i["InstanceId"] for i in group["Instances"]]
    assert ids
    instances = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    assert {i["SubnetId"] for i in instances} <= set(given["App"].split(","))
    assert {i["VpcId"] for i in instances} == {given["vpc"]}


def test_monitoring_watches_no_nat_gateway(stacks):
    monitoring = stacks["MonitoringStack"]
    assert monitoring["parameters"]["NatGatewayIds"] == ""
    assert monitoring["parameters"]["ExistingVpcId"] != ""
    assert not [name for name in monitoring["physical"] if name.startswith("NatGateway")]
