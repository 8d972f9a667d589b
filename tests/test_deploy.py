"""`moodle-cfn deploy` and `status`: the preview, the data guard, progress and the root cause of a failure.

moto answers change sets for one stack (create, update); nested change sets and a failed nested stack are
beyond it, so those go through botocore's Stubber with responses shaped like the CloudFormation API
reference's examples (DescribeChangeSet with a nested ChangeSetId, DescribeStackEvents).
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber

from moodle_cfn import deploy
from moodle_cfn.cli import main

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
ROOT_ID = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/moodle-cfn-1/aaaa"
DATA_ID = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/moodle-cfn-1-DataStack/bbbb"
STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/moodle/cccc"


def root_change_set() -> dict:
    """The site's change set: the data stack changes (its own change set), the app stack adds a resource."""
    return {
        "ChangeSetId": ROOT_ID, "StackId": STACK_ID, "Status": "CREATE_COMPLETE", "ExecutionStatus": "AVAILABLE",
        "Changes": [
            {"Type": "Resource", "ResourceChange": {
                "Action": "Modify", "LogicalResourceId": "DataStack", "ResourceType": "AWS::CloudFormation::Stack",
                "Replacement": "False", "ChangeSetId": DATA_ID,
                "Details": [{"Target": {"Attribute": "Properties", "Name": "Parameters"}, "Evaluation": "Dynamic",
                             "ChangeSource": "ParameterReference", "CausingEntity": "DatabaseEngineVersion"}]}},
            {"Type": "Resource", "ResourceChange": {
                "Action": "Add", "LogicalResourceId": "AlarmTopic", "ResourceType": "AWS::SNS::Topic"}},
        ],
    }  # fmt: skip


def data_change_set(replacement: str = "True") -> dict:
    return {
        "ChangeSetId": DATA_ID, "Status": "CREATE_COMPLETE", "ExecutionStatus": "AVAILABLE",
        "Changes": [
            {"Type": "Resource", "ResourceChange": {
                "Action": "Modify", "LogicalResourceId": "DatabaseCluster", "ResourceType": "AWS::RDS::DBCluster",
                "PhysicalResourceId": "moodle-db", "Replacement": replacement, "Scope": ["Properties"],
                "Details": [{"Target": {"Attribute": "Properties", "Name": "EngineVersion",
                                        "RequiresRecreation": "Always"},
                             "Evaluation": "Static", "ChangeSource": "DirectModification"},
                            {"Target": {"Attribute": "Properties", "Name": "EngineVersion",
                                        "RequiresRecreation": "Always"},
                             "Evaluation": "Dynamic", "ChangeSource": "ParameterReference",
                             "CausingEntity": "DatabaseEngineVersion"}]}},
        ],
    }  # fmt: skip


def describer(*answers: dict):
    by_id = {answer["ChangeSetId"]: answer for answer in answers}
    return lambda identifier: by_id[identifier]


def test_the_preview_flattens_nested_change_sets_and_says_why():
    changes = deploy.changes_of(describer(root_change_set(), data_change_set()), ROOT_ID)
    assert [(c.stack, c.kind, c.logical_id) for c in changes] == [
        ("DataStack", "replace", "DatabaseCluster"),
        ("(site)", "add", "AlarmTopic"),
    ]
    assert changes[0].why == "EngineVersion, EngineVersion <- DatabaseEngineVersion"
    table = deploy.preview_table(changes)
    assert table.splitlines()[0].split() == ["STACK", "CHANGE", "RESOURCE", "TYPE", "WHY"]
    assert "replace !" in table and "AWS::RDS::DBCluster" in table and table.endswith("1 add, 1 replace\n")


@pytest.mark.parametrize(
    ("replacement", "action", "refused"),
    [
        ("True", "Modify", True),
        ("Conditional", "Modify", True),
        ("False", "Modify", False),
        ("", "Remove", True),
    ],
)
def test_the_guard_refuses_replacing_or_removing_data(replacement, action, refused):
    change = deploy.Change("DataStack", action, "DatabaseCluster", "AWS::RDS::DBCluster", replacement, "")
    assert bool(deploy.refused([change], set())) is refused
    assert deploy.refused([change], {"DatabaseCluster"}) == []
    harmless = deploy.Change(
        "AppStack", "Modify", "WebLaunchTemplate", "AWS::EC2::LaunchTemplate", "True", ""
    )
    assert deploy.refused([harmless], set()) == []


def stubbed_site(stub_calls) -> tuple[deploy.Site, Stubber]:
    client = boto3.client(
        "cloudformation", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stub_calls(stubber)
    stubber.activate()
    return deploy.Site(client, "moodle"), stubber


def test_a_replacement_of_the_database_cluster_is_refused_before_anything_runs():
    def calls(stubber: Stubber) -> None:
        stubber.add_response("describe_stacks", {"Stacks": [{
            "StackName": "moodle", "StackId": STACK_ID, "CreationTime": T0, "StackStatus": "UPDATE_COMPLETE"}]},
            {"StackName": "moodle"})  # fmt: skip
        stubber.add_response("list_change_sets", {"Summaries": []}, {"StackName": "moodle"})
        stubber.add_response("describe_stacks", stack(STACK_ID, "UPDATE_COMPLETE"), {"StackName": "moodle"})
        stubber.add_response("create_change_set", {"Id": ROOT_ID, "StackId": STACK_ID}, {
            "StackName": "moodle", "ChangeSetName": ANY, "ChangeSetType": "UPDATE", "TemplateURL": ANY,
            "Parameters": ANY, "Capabilities": ANY, "IncludeNestedStacks": True})  # fmt: skip
        stubber.add_response(
            "describe_change_set", root_change_set(), {"ChangeSetName": ROOT_ID}
        )  # the waiter
        stubber.add_response("describe_change_set", root_change_set(), {"ChangeSetName": ROOT_ID})
        stubber.add_response("describe_change_set", data_change_set(), {"ChangeSetName": DATA_ID})
        stubber.add_response("delete_change_set", {}, {"ChangeSetName": ROOT_ID})
        # No execute_change_set: the Stubber would fail on any call not listed here.

    site, stubber = stubbed_site(calls)
    out = io.StringIO()
    code = deploy.run_deploy(site, "https://b.s3.amazonaws.com/master.yaml", {"SiteName": "moodle"},
                             deploy.DeployOptions(assume_yes=True), out)  # fmt: skip
    stubber.assert_no_pending_responses()
    assert code == deploy.EXIT_REFUSED
    assert (
        "refused: this change would replace data the site keeps: DatabaseCluster (AWS::RDS::DBCluster"
        in out.getvalue()
    )


def event(stack: str, logical: str, kind: str, status: str, reason: str, seconds: int) -> dict:
    return {"StackName": stack, "LogicalResourceId": logical, "ResourceType": kind, "ResourceStatus": status,
            "ResourceStatusReason": reason, "Timestamp": T0 + timedelta(seconds=seconds)}  # fmt: skip


def test_the_root_cause_is_the_first_real_failure_across_nested_stacks():
    events = [
        event("moodle", "AppStack", "AWS::CloudFormation::Stack", "CREATE_FAILED",
              "Embedded stack arn:...AppStack... was not successfully created: The following resource(s) failed "
              "to create: [WebAutoScalingGroup].", 900),
        event("moodle-AppStack-1", "WebAutoScalingGroup", "AWS::AutoScaling::AutoScalingGroup", "CREATE_FAILED",
              "Received 1 FAILURE signal(s) out of 2. Unable to satisfy 100% MinSuccessfulInstancesPercent "
              "requirement", 600),
        event("moodle-AppStack-1", "Distribution", "AWS::CloudFront::Distribution", "CREATE_FAILED",
              "Resource creation cancelled", 610),
        event("moodle-DataStack-1", "BackupPlan", "AWS::Backup::BackupPlan", "CREATE_FAILED",
              "Resource creation cancelled", 620),
        event("moodle-AppStack-1", "LoadBalancer", "AWS::ElasticLoadBalancingV2::LoadBalancer", "CREATE_COMPLETE",
              "", 300),
    ]  # fmt: skip
    cause = deploy.root_cause(events)
    assert (cause["StackName"], cause["LogicalResourceId"]) == ("moodle-AppStack-1", "WebAutoScalingGroup")
    assert deploy.root_cause([e for e in events if "cancelled" in e["ResourceStatusReason"]]) is None


def test_progress_counts_done_resources_and_names_the_one_in_progress():
    resources = [
        {"LogicalResourceId": "Vpc", "ResourceStatus": "CREATE_COMPLETE", "LastUpdatedTimestamp": T0},
        {"LogicalResourceId": "NatGateway1", "ResourceStatus": "CREATE_IN_PROGRESS", "LastUpdatedTimestamp": T0},
        {"LogicalResourceId": "NatGateway2", "ResourceStatus": "CREATE_IN_PROGRESS",
         "LastUpdatedTimestamp": T0 + timedelta(seconds=5)},
        {"LogicalResourceId": "Flow", "ResourceStatus": "CREATE_FAILED", "LastUpdatedTimestamp": T0},
    ]  # fmt: skip
    line = deploy.progress_of("NetworkStack", "CREATE_IN_PROGRESS", resources).line()
    assert line.startswith("NetworkStack") and "[#####...............]   1/4" in line
    assert line.endswith("CREATE_IN_PROGRESS  NatGateway2")


# Against a moto server: one stack, created and updated through the same command path -------------------

TEMPLATE = {
    "Parameters": {"TopicName": {"Type": "String"}},
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Ref": "TopicName"}}}},
    "Outputs": {"SiteUrl": {"Value": {"Fn::Sub": "https://${TopicName}.example.edu"}}},
}


# The next release of the template: one more resource (moto computes changes from templates, not parameters).
TEMPLATE_2 = {**TEMPLATE, "Resources": {**TEMPLATE["Resources"], "Queue": {"Type": "AWS::SQS::Queue"}}}


@pytest.fixture
def template_urls(aws) -> tuple[str, str]:
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="deploy-rehearsal")
    for key, body in (("site.json", TEMPLATE), ("site-2.json", TEMPLATE_2)):
        s3.put_object(Bucket="deploy-rehearsal", Key=key, Body=json.dumps(body).encode())
    return ("https://deploy-rehearsal.s3.amazonaws.com/site.json",
            "https://deploy-rehearsal.s3.amazonaws.com/site-2.json")  # fmt: skip


def test_deploy_creates_then_previews_then_updates_a_stack(aws, template_urls):
    first, second = template_urls
    site = deploy.Site(boto3.client("cloudformation", **aws), "deploy-rehearsal")
    options = deploy.DeployOptions(assume_yes=True, interval=0.01)
    out = io.StringIO()
    assert deploy.run_deploy(site, first, {"TopicName": "first"}, options, out) == deploy.EXIT_OK
    assert "(site)  add" in out.getvalue() and "CREATE_COMPLETE in" in out.getvalue()
    # moto gives a stack made through a change set no Outputs (a moto gap): outputs_text is tested alone.

    preview = io.StringIO()
    only = deploy.DeployOptions(preview_only=True)
    assert deploy.run_deploy(site, second, {"TopicName": "first"}, only, preview) == deploy.EXIT_OK
    assert "Queue" in preview.getvalue() and preview.getvalue().endswith(
        "preview only: nothing was changed\n"
    )
    assert [r["LogicalResourceId"] for r in site.resources("deploy-rehearsal")] == ["Topic"]

    update = io.StringIO()
    assert deploy.run_deploy(site, second, {"TopicName": "first"}, options, update) == deploy.EXIT_OK
    assert site.describe()["StackStatus"] == "UPDATE_COMPLETE"
    assert sorted(r["LogicalResourceId"] for r in site.resources("deploy-rehearsal")) == ["Queue", "Topic"]
    assert "deploy-rehearsal: UPDATE_COMPLETE in" in update.getvalue()
    status = deploy.status_text(site)
    assert status.startswith("(site)") and "UPDATE_COMPLETE" in status


def test_the_end_of_a_run_shows_the_outputs_that_matter():
    stack = {"Outputs": [
        {"OutputKey": "VpcId", "OutputValue": "vpc-1"},
        {"OutputKey": "MoodleAdminSecretArn", "OutputValue": "arn:aws:secretsmanager:us-east-1:1:secret:admin"},
        {"OutputKey": "SiteUrl", "OutputValue": "https://moodle.example.edu"},
    ]}  # fmt: skip
    assert deploy.outputs_text(stack) == (
        "  SiteUrl: https://moodle.example.edu\n"
        "  MoodleAdminSecretArn: arn:aws:secretsmanager:us-east-1:1:secret:admin\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--stack", "no-such-site", "--region", "us-east-1"], "no-such-site: no such stack"),
        (["deploy", "missing.yaml", "--stack", "s", "--bucket", "deploy-rehearsal"], "missing.yaml"),
    ],
)
def test_bad_input_is_one_line(aws, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_no_credentials_is_one_line(monkeypatch, capsys, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["status", "--stack", "moodle", "--region", "us-east-1"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "moodle-cfn: error: moodle: no AWS credentials found (set AWS_PROFILE, use --profile, or run aws configure)\n"
    )


APP_STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/moodle-AppStack-1ABC/dddd"
APP_CHANGE_SET_ID = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/moodle-cfn-1-AppStack/eeee"


def stack(stack_id: str, status: str) -> dict:
    return {"Stacks": [{"StackName": stack_id.split("/")[1], "StackId": stack_id, "CreationTime": T0,
                        "StackStatus": status}]}  # fmt: skip


def summaries(*rows: tuple[str, str, str, str]) -> dict:
    return {"StackResourceSummaries": [
        {"LogicalResourceId": logical, "PhysicalResourceId": physical, "ResourceType": kind,
         "ResourceStatus": status, "LastUpdatedTimestamp": T0}
        for logical, physical, kind, status in rows
    ]}  # fmt: skip


def test_a_failed_update_reports_the_root_cause_from_the_nested_stack():
    """The whole command path through a failed update: the result line and the first real failure, found
    in the app stack's events, not the root stack's "embedded stack" message or the cancellations."""
    root_resources = summaries(("AppStack", APP_STACK_ID, "AWS::CloudFormation::Stack", "UPDATE_FAILED"))
    app_resources = summaries(("WebLaunchTemplate", "lt-1", "AWS::EC2::LaunchTemplate", "UPDATE_COMPLETE"),
                              ("WebAutoScalingGroup", "g", "AWS::AutoScaling::AutoScalingGroup", "UPDATE_FAILED"))  # fmt: skip
    root_events = {"StackEvents": [
        {**event("moodle", "AppStack", "AWS::CloudFormation::Stack", "UPDATE_FAILED",
                 "Embedded stack was not successfully updated.", 700), "StackId": STACK_ID, "EventId": "1"},
    ]}  # fmt: skip
    app_events = {"StackEvents": [
        {**event("moodle-AppStack-1ABC", "WebAutoScalingGroup", "AWS::AutoScaling::AutoScalingGroup", "UPDATE_FAILED",
                 "Received 1 FAILURE signal(s) out of 1.", 600), "StackId": APP_STACK_ID, "EventId": "2"},
        {**event("moodle-AppStack-1ABC", "Distribution", "AWS::CloudFront::Distribution", "UPDATE_FAILED",
                 "Resource update cancelled", 650), "StackId": APP_STACK_ID, "EventId": "3"},
    ]}  # fmt: skip
    root_changes = {
        "ChangeSetId": ROOT_ID, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource", "ResourceChange": {
            "Action": "Modify", "LogicalResourceId": "AppStack", "ResourceType": "AWS::CloudFormation::Stack",
            "Replacement": "False", "ChangeSetId": APP_CHANGE_SET_ID}}]}  # fmt: skip
    app_changes = {
        "ChangeSetId": APP_CHANGE_SET_ID, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource",
            "ResourceChange": {"Action": "Modify", "LogicalResourceId": "WebLaunchTemplate",
                               "ResourceType": "AWS::EC2::LaunchTemplate", "Replacement": "False",
                               "Details": [{"Target": {"Attribute": "Properties", "Name": "LaunchTemplateData"},
                                            "CausingEntity": "MoodleVersion", "ChangeSource": "ParameterReference"}]}}]}  # fmt: skip

    def calls(stubber: Stubber) -> None:
        stubber.add_response("describe_stacks", stack(STACK_ID, "UPDATE_COMPLETE"), {"StackName": "moodle"})
        stubber.add_response("list_change_sets", {"Summaries": []}, {"StackName": "moodle"})
        stubber.add_response("describe_stacks", stack(STACK_ID, "UPDATE_COMPLETE"), {"StackName": "moodle"})
        stubber.add_response("create_change_set", {"Id": ROOT_ID, "StackId": STACK_ID}, None)
        stubber.add_response("describe_change_set", root_changes, {"ChangeSetName": ROOT_ID})
        stubber.add_response("describe_change_set", root_changes, {"ChangeSetName": ROOT_ID})
        stubber.add_response("describe_change_set", app_changes, {"ChangeSetName": APP_CHANGE_SET_ID})
        stubber.add_response("execute_change_set", {}, {"ChangeSetName": ROOT_ID})
        stubber.add_response(
            "describe_stacks", stack(STACK_ID, "UPDATE_ROLLBACK_IN_PROGRESS"), {"StackName": STACK_ID}
        )
        stubber.add_response("list_stack_resources", root_resources, {"StackName": STACK_ID})
        stubber.add_response("list_stack_resources", root_resources, {"StackName": STACK_ID})
        stubber.add_response(
            "describe_stacks", stack(APP_STACK_ID, "UPDATE_ROLLBACK_COMPLETE"), {"StackName": APP_STACK_ID}
        )
        stubber.add_response("list_stack_resources", app_resources, {"StackName": APP_STACK_ID})
        stubber.add_response(
            "describe_stacks", stack(STACK_ID, "UPDATE_ROLLBACK_COMPLETE"), {"StackName": STACK_ID}
        )
        stubber.add_response("list_stack_resources", root_resources, {"StackName": STACK_ID})
        stubber.add_response("describe_stack_events", root_events, {"StackName": STACK_ID})
        stubber.add_response("describe_stack_events", app_events, {"StackName": APP_STACK_ID})

    site, stubber = stubbed_site(calls)
    out = io.StringIO()
    started = T0 - timedelta(minutes=1)
    code = deploy.run_deploy(site, "https://b.s3.amazonaws.com/master.yaml", {}, deploy.DeployOptions(assume_yes=True),
                             out, started_at=started)  # fmt: skip
    stubber.assert_no_pending_responses()
    text = out.getvalue()
    assert code == deploy.EXIT_FAILED
    assert "AppStack  modify  WebLaunchTemplate" in text and "LaunchTemplateData <- MoodleVersion" in text
    assert "AppStack         [##########..........]   1/2   UPDATE_ROLLBACK_COMPLETE" in text
    assert "moodle: UPDATE_ROLLBACK_COMPLETE after" in text
    assert text.endswith("root cause: WebAutoScalingGroup (AWS::AutoScaling::AutoScalingGroup) in "
                         "moodle-AppStack-1ABC: Received 1 FAILURE signal(s) out of 1.\n")  # fmt: skip
