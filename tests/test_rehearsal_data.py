"""Deploy rehearsal of the data layer in moto, fed the network layer's real outputs through the master's wiring.

moto cannot create the Aurora cluster, its instances, its parameter group or the Secrets Manager secret:
they are replaced by named placeholders (tests/rehearsal.py), so this proves what moto can: the template
deploys against a real network stack, the DB subnet group spans the data subnets, the file system is
encrypted with a mount target per AZ in those subnets, the access point belongs to the web server user,
and the PostgreSQL log group exists before the cluster. Aurora itself is covered by test_data.py and the
cfn-lint / checkov gates.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest


@pytest.fixture(scope="module", params=["dev.yaml", "production.yaml"])
def stacks(request, rehearsal) -> dict[str, Any]:
    return rehearsal(request.param)


def test_data_stack_receives_network_outputs_through_the_master_wiring(stacks):
    network, data = stacks["NetworkStack"], stacks["DataStack"]
    assert data["parameters"]["DataSubnetIds"] == network["outputs"]["DataSubnetIds"]
    assert data["parameters"]["FileSystemSecurityGroupId"] == network["outputs"]["FileSystemSecurityGroupId"]
    assert data["parameters"]["AvailabilityZoneCount"] == network["parameters"]["AvailabilityZoneCount"]


def test_db_subnet_group_spans_the_data_subnets(aws, stacks):
    # moto leaves the subnet group's physical id empty, so find it by its VPC.
    rds = boto3.client("rds", **aws)
    vpc_id = stacks["NetworkStack"]["outputs"]["VpcId"]
    (group,) = [g for g in rds.describe_db_subnet_groups()["DBSubnetGroups"] if g["VpcId"] == vpc_id]
    subnets = {s["SubnetIdentifier"] for s in group["Subnets"]}
    assert subnets == set(stacks["NetworkStack"]["outputs"]["DataSubnetIds"].split(","))


def test_file_system_is_encrypted_with_a_mount_target_per_az(aws, stacks):
    efs = boto3.client("efs", **aws)
    file_system_id = stacks["DataStack"]["outputs"]["FileSystemId"]
    (file_system,) = efs.describe_file_systems(FileSystemId=file_system_id)["FileSystems"]
    assert file_system["Encrypted"] is True
    assert file_system["ThroughputMode"] == stacks["DataStack"]["parameters"]["FileSystemThroughputMode"]
    targets = efs.describe_mount_targets(FileSystemId=file_system_id)["MountTargets"]
    data_subnets = stacks["NetworkStack"]["outputs"]["DataSubnetIds"].split(",")
    assert sorted(t["SubnetId"] for t in targets) == sorted(data_subnets)
    assert len({t["AvailabilityZoneName"] for t in targets}) == len(data_subnets)


def test_access_points_give_moodledata_to_the_web_server_user_and_the_code_to_another(aws, stacks):
    efs = boto3.client("efs", **aws)
    file_system_id = stacks["DataStack"]["outputs"]["FileSystemId"]
    points = efs.describe_access_points(FileSystemId=file_system_id)["AccessPoints"]
    # By path: moto's Ref of an access point is not its id.
    by_path = {point["RootDirectory"]["Path"]: point for point in points}
    assert set(by_path) == {"/moodledata", "/moodle-code"}
    assert by_path["/moodledata"]["PosixUser"] == {"Uid": 48, "Gid": 48}
    assert by_path["/moodle-code"]["PosixUser"]["Uid"] not in (0, 48)


def test_postgresql_log_group_exists_with_its_retention(aws, stacks):
    logs = boto3.client("logs", **aws)
    name = stacks["DataStack"]["physical"]["DatabaseLogGroup"]
    (group,) = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    expected = int(stacks["DataStack"]["parameters"]["DatabaseLogRetentionDays"])
    assert group["retentionInDays"] == expected


def test_database_outputs_are_placeholders_not_secrets(stacks):
    outputs = stacks["DataStack"]["outputs"]
    assert outputs["DatabaseEndpoint"] == "moto-placeholder:DatabaseCluster.Endpoint.Address"
    assert outputs["DatabaseAppUserSecretArn"] == "moto-placeholder:DatabaseAppUserSecret"
