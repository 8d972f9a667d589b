"""`moodle-cfn deploy` never surprises: no terminal means no deploy without --yes; any failed AWS call ends
in one line and a non-zero exit; what a failed run leaves behind, the next run cleans up and continues from.

The 500 comes from a real moto server: its CloudFormation crashes on an AWS::SSM::Parameter without a Name
while executing a change set, answers with an HTML error page, and botocore raises ResponseParserError
(not a BotoCoreError), exactly the failure seen with a real deploy against moto (issue 24). Other classes of
error come from a stand-in client that raises them.
"""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.parsers import ResponseParserError
from urllib3.exceptions import ProtocolError

from moodle_cfn import cli, cli_stack, deploy

GOOD = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
# moto 5.2 crashes on this while executing (put_parameter with Name None): HTTP 500 with an HTML body.
CRASHES_MOTO = {
    "Resources": {"Knob": {"Type": "AWS::SSM::Parameter", "Properties": {"Type": "String", "Value": "v"}}}
}
STACK = "safety"


@pytest.fixture
def urls(aws) -> dict[str, str]:
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="deploy-safety")
    found = {}
    for name, body in (("good", GOOD), ("crashes", CRASHES_MOTO)):
        s3.put_object(Bucket="deploy-safety", Key=f"{name}.json", Body=json.dumps(body).encode())
        found[name] = f"https://deploy-safety.s3.amazonaws.com/{name}.json"
    return found


@pytest.fixture
def site(aws, request) -> deploy.Site:
    """A stack name of its own per test (moto keeps deleted stacks by name, and a crashed one is odd)."""
    client = boto3.client("cloudformation", **aws)
    name = "-".join([STACK, *request.node.name.split("_")[1:4]])
    yield deploy.Site(client, name)
    if deploy.Site(client, name).status() is not None:
        client.delete_stack(StackName=name)


def test_without_a_terminal_and_without_yes_nothing_is_executed(site, urls):
    out = io.StringIO()
    options = deploy.DeployOptions(interactive=False, assume_yes=False, interval=0.01)
    assert deploy.run_deploy(site, urls["good"], {}, options, out) == deploy.EXIT_REFUSED
    assert out.getvalue().splitlines()[-1] == deploy.NO_TERMINAL
    # The change set was made to show the preview, then deleted: no resources, nothing left to execute.
    assert not site.exists()
    assert site.leftover_change_sets() == []


def test_the_command_sees_a_pipe_as_no_terminal(monkeypatch):
    """What cmd_deploy passes on: stdin a terminal but stdout a pipe (| tee deploy.log) is not interactive."""
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert cli_stack.has_terminal() is False
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli_stack.has_terminal() is True


def test_a_500_on_execute_is_one_line_and_the_next_deploy_continues(site, urls, capsys):
    options = deploy.DeployOptions(assume_yes=True, interval=0.01)
    with pytest.raises(deploy.InputError) as failure:
        deploy.run_deploy(site, urls["crashes"], {}, options, io.StringIO())
    message = str(failure.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(
        f"{site.stack}: CloudFormation failed: ResponseParserError: Unable to parse response"
    )
    assert message.endswith("(the change set was deleted and nothing was changed)")
    assert failure.value.exit_code == 4
    # Left behind: a stack in REVIEW_IN_PROGRESS (it holds no resources) with no change set on it, which
    # the next deploy deletes before it makes its own change set.
    assert site.status() == "REVIEW_IN_PROGRESS" and site.leftover_change_sets() == []

    out = io.StringIO()
    assert deploy.run_deploy(site, urls["good"], {}, options, out) == deploy.EXIT_OK
    assert site.describe()["StackStatus"] == "CREATE_COMPLETE"
    assert [r["LogicalResourceId"] for r in site.resources(site.ref)] == ["Topic"]


def test_a_change_set_an_earlier_run_left_is_deleted_before_the_next(site, urls):
    """A run killed between making and executing its change set (Ctrl-C, a lost CI runner) leaves it
    AVAILABLE on a REVIEW_IN_PROGRESS stack."""
    left = site.client.create_change_set(
        StackName=site.stack, ChangeSetName="moodle-cfn-1", ChangeSetType="CREATE", TemplateURL=urls["good"]
    )["Id"]
    assert site.leftover_change_sets() == [left]
    out = io.StringIO()
    code = deploy.run_deploy(
        site, urls["good"], {}, deploy.DeployOptions(assume_yes=True, interval=0.01), out
    )
    assert code == deploy.EXIT_OK
    assert f"deleted a change set an earlier run left unexecuted: {left}" in out.getvalue()
    # By id: moto (not CloudFormation) still answers the name with the empty stack the run deleted.
    assert site.describe()["StackStatus"] == "CREATE_COMPLETE"


@pytest.mark.parametrize(
    ("status", "says"),
    [
        ("ROLLBACK_COMPLETE", "aws cloudformation delete-stack --stack-name s"),
        ("UPDATE_ROLLBACK_FAILED", "aws cloudformation continue-update-rollback --stack-name s"),
        ("UPDATE_IN_PROGRESS", "another operation is running on the stack (UPDATE_IN_PROGRESS)"),
    ],
)
def test_a_stack_cloudformation_cannot_change_is_refused_with_the_way_out(status, says):
    assert says in deploy.blocked_by(status, "s")
    assert deploy.blocked_by("REVIEW_IN_PROGRESS", "s") is None
    assert deploy.blocked_by("UPDATE_ROLLBACK_COMPLETE", "s") is None


def client_error() -> ClientError:
    return ClientError(
        {"Error": {"Code": "ValidationError", "Message": "Template format\nerror"}}, "CreateChangeSet"
    )


class Raising:
    """A CloudFormation client whose every call raises `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str):
        def call(**_: object) -> None:
            raise self.error

        return call


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (client_error(), "CloudFormation refused the request: Template format error"),
        (EndpointConnectionError(endpoint_url="https://cloudformation.eu-west-1.amazonaws.com/"),
         "CloudFormation failed: EndpointConnectionError: Could not connect to the endpoint URL"),
        (ReadTimeoutError(endpoint_url="https://x"), "CloudFormation failed: ReadTimeoutError: Read timeout"),
        (ResponseParserError("Unable to parse response\n" + "<html>" * 200),
         "CloudFormation failed: ResponseParserError: Unable to parse response <html>"),
        (ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
         "CloudFormation failed: ProtocolError: ('Connection aborted.'"),
        (ConnectionResetError(104, "Connection reset by peer"), "CloudFormation failed: ConnectionResetError"),
    ],
)  # fmt: skip
def test_every_class_of_aws_error_is_one_line_and_a_non_zero_exit(monkeypatch, capsys, error, says):
    monkeypatch.setattr(cli_stack, "site_of", lambda args: deploy.Site(Raising(error), "moodle"))
    code = cli.main(["status", "--stack", "moodle", "--region", "eu-west-1"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith(f"moodle-cfn: error: moodle: {says}")
    assert "Traceback" not in err and len(err) < 400
