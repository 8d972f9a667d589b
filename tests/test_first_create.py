"""A failed first deploy rolls back cleanly and can be retried with the same SiteName.

Two things used to stop that: resources kept with `DeletionPolicy: Retain` survived the rollback (a log
group named /moodle/<SiteName>/..., the <SiteName>-backups vault) and made the retry fail with "already
exists"; and the Aurora cluster, created with deletion protection, could not be deleted by the rollback at
all (ROLLBACK_FAILED). Now what the site keeps is `RetainExceptOnCreate`, the cluster is created
unprotected, and the protection layer's custom resource, created after everything else, switches the
protection to DatabaseDeletionProtection.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from moodle_cfn import functions
from moodle_cfn.layers import LAYERS, database, protection

RETAIN_EXCEPT_ON_CREATE = ("RetainExceptOnCreate", "Retain")
# Kept even when the create that made it rolls back, and why; nothing here may have a fixed name.
KEPT_THROUGH_ROLLBACK = {
    "AccessLogBucket": "ELB writes a test object as soon as access logging is enabled, and S3 refuses to "
    "delete a bucket that is not empty: deleting it would fail the rollback. Its name is generated.",
}
CLUSTER = "moodle-db"


@pytest.fixture(scope="module")
def templates() -> dict[str, dict[str, Any]]:
    return {layer.name: json.loads(layer.build().to_json()) for layer in LAYERS}


def retained(templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(layer, logical id, resource) of every resource some stack operation keeps when it deletes it."""
    for layer, template in templates.items():
        for name, resource in template["Resources"].items():
            if resource.get("DeletionPolicy", "").startswith("Retain"):
                yield layer, name, resource


def fixed_names(resource: dict[str, Any]) -> dict[str, Any]:
    """The name-like properties the template sets itself (a string or a Sub, not a reference to another
    resource): what a second stack would collide with."""
    return {
        key: value
        for key, value in resource.get("Properties", {}).items()
        if key.endswith(("Name", "Identifier"))
        and (isinstance(value, str) or (isinstance(value, dict) and set(value) & {"Fn::Sub", "Fn::Join"}))
    }


# Retention ------------------------------------------------------------------------------------------------


def test_every_kept_resource_goes_with_the_rollback_of_the_create_that_made_it(templates):
    seen = set()
    for layer, name, resource in retained(templates):
        policies = (resource["DeletionPolicy"], resource.get("UpdateReplacePolicy"))
        if name in KEPT_THROUGH_ROLLBACK:
            seen.add(name)
            assert policies == ("Retain", "Retain"), f"{layer}: {name}"
        else:
            assert policies == RETAIN_EXCEPT_ON_CREATE, f"{layer}: {name} is kept after a failed create"
    assert seen == set(KEPT_THROUGH_ROLLBACK), "the exception list names a resource that no longer exists"


def test_every_kept_resource_with_a_fixed_name_goes_with_a_failed_create(templates):
    named = {}
    for layer, name, resource in retained(templates):
        if fixed_names(resource):
            named[name] = layer
            assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == RETAIN_EXCEPT_ON_CREATE, (
                name
            )
            assert name not in KEPT_THROUGH_ROLLBACK, f"{name} would block a retry with the same SiteName"
    # The names a retry collided with: the PostgreSQL log group, the vault, the web nodes' log groups.
    assert {"DatabaseLogGroup", "BackupVault"} <= set(named)
    web_log_groups = {
        name
        for name, resource in templates["app"]["Resources"].items()
        if "/moodle/${SiteName}/" in json.dumps(resource.get("Properties", {}).get("LogGroupName", ""))
    }
    assert web_log_groups and web_log_groups <= set(named)


# The cluster, created unprotected -------------------------------------------------------------------------


def test_the_cluster_is_created_without_deletion_protection(templates):
    data = templates["data"]
    cluster = data["Resources"]["DatabaseCluster"]
    # Left out, not false: RDS's CloudFormation handler would send a false with every later cluster update.
    assert "DeletionProtection" not in cluster["Properties"]
    skips = {s["id"]: s["comment"] for s in cluster["Metadata"]["checkov"]["skip"]}
    assert "protection layer" in skips["CKV_AWS_139"]
    assert "DatabaseDeletionProtection" not in data["Parameters"]


def test_the_parameter_defaults_to_protected_and_reaches_the_switch(master_template, templates):
    parameter = master_template["Parameters"]["DatabaseDeletionProtection"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("true", ["true", "false"])
    passed = master_template["Resources"]["ProtectionStack"]["Properties"]["Parameters"]
    assert passed["DatabaseDeletionProtection"] == {"Ref": "DatabaseDeletionProtection"}
    assert passed["DatabaseClusterId"] == {
        "Fn::GetAtt": ["DataStack", f"Outputs.{database.DATABASE_CLUSTER_ID}"]
    }
    switch = templates["protection"]["Resources"][protection.SWITCH_TITLE]
    assert switch["Type"] == "AWS::CloudFormation::CustomResource"
    assert switch["Properties"] == {
        "ServiceToken": {"Fn::GetAtt": [protection.FUNCTION_TITLE, "Arn"]},
        "ClusterId": {"Ref": "DatabaseClusterId"},
        "DeletionProtection": {"Ref": "DatabaseDeletionProtection"},
    }
    function = templates["protection"]["Resources"][protection.FUNCTION_TITLE]["Properties"]
    assert function["Code"]["ZipFile"] == functions.read(protection.FUNCTION_SOURCE)
    assert function["Timeout"] > FUNCTION.ATTEMPTS * FUNCTION.PAUSE_SECONDS


# Order: the switch comes after everything that can fail ---------------------------------------------------


def stack_dependencies(master_template: dict[str, Any], title: str) -> set[str]:
    """The nested stacks a nested stack waits for: its DependsOn and the stacks whose outputs it reads."""
    stack = master_template["Resources"][title]
    depends = stack.get("DependsOn", [])
    found = set([depends] if isinstance(depends, str) else depends)
    for value in stack["Properties"]["Parameters"].values():
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
    return found


def test_the_protection_stack_waits_for_every_other_stack_and_none_waits_for_it(master_template):
    titles = {layer.stack_title for layer in LAYERS}
    assert LAYERS[-1].name == "protection"
    # The network stack, or the existing-VPC security stack, may not exist: it cannot be named in DependsOn,
    # and the data stack, which the protection stack waits for, reads one of them.
    conditional = {layer.stack_title for layer in LAYERS if layer.condition}
    assert conditional == {"NetworkStack", "SecurityStack"}
    assert stack_dependencies(master_template, "ProtectionStack") == titles - conditional - {
        "ProtectionStack"
    }
    data = master_template["Resources"]["DataStack"]["Properties"]["Parameters"]["DataSubnetIds"]
    assert data["Fn::If"][2]["Fn::GetAtt"][0] == "NetworkStack"
    security = master_template["Resources"]["DataStack"]["Properties"]["Parameters"][
        "DatabaseSecurityGroupId"
    ]
    assert security["Fn::If"][1]["Fn::GetAtt"][0] == "SecurityStack"
    for title in titles - {"ProtectionStack"}:
        assert "ProtectionStack" not in stack_dependencies(master_template, title), title


def test_the_web_nodes_and_the_alarms_are_up_before_the_cluster_is_protected(master_template, templates):
    # The commonest failure of a first deploy: a web node that never signals (CreationPolicy on the group).
    group_layers = {
        layer.stack_title
        for layer in LAYERS
        for resource in templates[layer.name]["Resources"].values()
        if resource["Type"] == "AWS::AutoScaling::AutoScalingGroup" and "CreationPolicy" in resource
    }
    assert group_layers == {"AppStack"}
    waits_for = stack_dependencies(master_template, "ProtectionStack")
    assert {"AppStack", "MonitoringStack"} <= waits_for


def test_the_protection_layer_holds_nothing_that_outlives_a_failed_create(templates):
    resources = templates["protection"]["Resources"]
    assert set(resources) == {
        "DeletionProtectionLogGroup",
        "DeletionProtectionFunctionRole",
        protection.FUNCTION_TITLE,
        protection.SWITCH_TITLE,
    }
    log_group = resources["DeletionProtectionLogGroup"]
    assert (log_group["DeletionPolicy"], log_group["UpdateReplacePolicy"]) == RETAIN_EXCEPT_ON_CREATE
    assert "LogGroupName" not in log_group["Properties"]


# IAM ------------------------------------------------------------------------------------------------------


def test_the_function_may_modify_this_cluster_and_nothing_else(templates):
    role = templates["protection"]["Resources"]["DeletionProtectionFunctionRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    by_action = {action: s for s in statements for action in s["Action"]}
    assert set(by_action) == {"rds:ModifyDBCluster", "logs:CreateLogStream", "logs:PutLogEvents"}
    assert all(s["Effect"] == "Allow" for s in statements)
    assert by_action["rds:ModifyDBCluster"]["Action"] == ["rds:ModifyDBCluster"]
    assert by_action["rds:ModifyDBCluster"]["Resource"] == [
        {
            "Fn::Sub": [
                "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:cluster:${Cluster}",
                {"Cluster": {"Ref": "DatabaseClusterId"}},
            ]
        }
    ]
    assert by_action["logs:PutLogEvents"]["Resource"] == [
        {"Fn::GetAtt": ["DeletionProtectionLogGroup", "Arn"]}
    ]


# The function ---------------------------------------------------------------------------------------------


def load_function() -> types.ModuleType:
    """The inline source as Lambda runs it: a module named index."""
    module = types.ModuleType("index")
    exec(compile(functions.read(protection.FUNCTION_SOURCE), "index.py", "exec"), module.__dict__)
    return module


FUNCTION = load_function()


def test_the_inline_code_fits_a_zipfile():
    assert len(functions.read(protection.FUNCTION_SOURCE)) <= functions.ZIPFILE_LIMIT


class Responses:
    """A stand-in for CloudFormation's cfnresponse module that records what the handler sends."""

    SUCCESS, FAILED = "SUCCESS", "FAILED"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, event, context, status, data, physical_id, reason=None) -> None:
        self.sent.append({"status": status, "data": data, "physical_id": physical_id, "reason": reason})


@pytest.fixture
def rds() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "rds", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber


@pytest.fixture
def run(monkeypatch, rds):
    """run(request type, value) -> what the handler sent CloudFormation, with boto3's RDS client stubbed."""
    client, _ = rds
    responses = Responses()
    monkeypatch.setitem(sys.modules, "cfnresponse", responses)
    monkeypatch.setattr(FUNCTION, "boto3", types.SimpleNamespace(client=lambda service: client))

    def invoke(request_type: str, value: str) -> dict[str, Any]:
        event = {
            "RequestType": request_type,
            "ResourceProperties": {"ServiceToken": "arn", "ClusterId": CLUSTER, "DeletionProtection": value},
        }
        if request_type != "Create":
            event["PhysicalResourceId"] = CLUSTER
        FUNCTION.handler(event, None)
        (sent,) = responses.sent
        return sent

    return invoke


@pytest.mark.parametrize("request_type", ["Create", "Update"])
@pytest.mark.parametrize(("value", "protect"), [("true", True), ("false", False)])
def test_create_and_update_switch_protection_to_the_parameter(rds, run, request_type, value, protect):
    _, stubber = rds
    stubber.add_response(
        "modify_db_cluster",
        {"DBCluster": {}},
        {"DBClusterIdentifier": CLUSTER, "DeletionProtection": protect},
    )
    sent = run(request_type, value)
    assert (sent["status"], sent["physical_id"], sent["reason"]) == ("SUCCESS", CLUSTER, None)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("value", ["true", "false"])
def test_delete_leaves_the_protection_as_it_is(rds, run, value):
    # Nothing is stubbed: any RDS call would fail the request.
    sent = run("Delete", value)
    assert (sent["status"], sent["physical_id"]) == ("SUCCESS", CLUSTER)


@pytest.mark.parametrize("value", ["True", "yes", ""])
def test_a_value_other_than_true_or_false_fails_without_touching_the_cluster(run, value):
    sent = run("Create", value)
    assert sent["status"] == "FAILED"
    assert "must be 'true' or 'false'" in sent["reason"]


def test_a_refused_call_fails_the_resource_with_the_reason(rds, run):
    _, stubber = rds
    stubber.add_client_error(
        "modify_db_cluster", "AccessDenied", "not authorized to perform rds:ModifyDBCluster"
    )
    sent = run("Update", "false")
    assert sent["status"] == "FAILED"
    assert "AccessDenied" in sent["reason"]


def test_a_busy_cluster_is_waited_for(rds):
    client, stubber = rds
    expected = {"DBClusterIdentifier": CLUSTER, "DeletionProtection": True}
    stubber.add_client_error("modify_db_cluster", "InvalidDBClusterStateFault", "modifying", 400, expected)
    stubber.add_response("modify_db_cluster", {"DBCluster": {}}, expected)
    pauses: list[float] = []
    FUNCTION.set_protection(client, CLUSTER, True, sleep=pauses.append)
    assert pauses == [FUNCTION.PAUSE_SECONDS]
    stubber.assert_no_pending_responses()


def test_a_cluster_busy_for_too_long_fails(rds):
    client, stubber = rds
    for _ in range(FUNCTION.ATTEMPTS):
        stubber.add_client_error("modify_db_cluster", "InvalidDBClusterStateFault", "upgrading", 400)
    pauses: list[float] = []
    with pytest.raises(client.exceptions.InvalidDBClusterStateFault):
        FUNCTION.set_protection(client, CLUSTER, True, sleep=pauses.append)
    assert len(pauses) == FUNCTION.ATTEMPTS - 1
