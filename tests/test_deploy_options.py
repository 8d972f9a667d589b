"""What an operator expects of a stack tool (moto server): stack tags that reach the resources, a service
role, termination protection on a stack the run created, and the same --stack flag on every command."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.validate import ParamValidator

from moodle_cfn import deploy
from moodle_cfn.cli import main, parser
from moodle_cfn.cli_stack import stack_tags

TEMPLATE = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
ROLE = "arn:aws:iam::123456789012:role/cloudformation-moodle"


@pytest.fixture
def url(aws) -> str:
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="deploy-options")
    s3.put_object(Bucket="deploy-options", Key="site.json", Body=json.dumps(TEMPLATE).encode())
    return "https://deploy-options.s3.amazonaws.com/site.json"


class ProtectionRecorded:
    """moto 5.2 has no UpdateTerminationProtection (it answers 500): this client records that one call after
    botocore's own parameter validation, and sends every other call to moto."""

    def __init__(self, client) -> None:
        self.client, self.protected = client, []

    def update_termination_protection(self, **kwargs) -> dict:
        model = self.client.meta.service_model.operation_model("UpdateTerminationProtection")
        report = ParamValidator().validate(kwargs, model.input_shape)
        assert not report.has_errors(), report.generate_report()
        self.protected.append(kwargs)
        return {}

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def test_tags_role_and_termination_protection_reach_the_stack(aws, url):
    client = ProtectionRecorded(boto3.client("cloudformation", **aws))
    site = deploy.Site(client, "options-protected")
    options = deploy.DeployOptions(
        assume_yes=True, interval=0.01, tags={"CostCenter": "elearning", "Service": "moodle"}, role_arn=ROLE,
        protect=True,
    )  # fmt: skip
    out = io.StringIO()
    assert deploy.run_deploy(site, url, {}, options, out) == deploy.EXIT_OK
    stack = site.describe()
    assert {t["Key"]: t["Value"] for t in stack["Tags"]} == {"CostCenter": "elearning", "Service": "moodle"}
    assert stack["RoleARN"] == ROLE
    assert client.protected == [{"EnableTerminationProtection": True, "StackName": "options-protected"}]
    assert "termination protection is on" in out.getvalue()


def test_no_protection_unless_asked_and_never_on_an_update(aws, url):
    client = boto3.client("cloudformation", **aws)
    site = deploy.Site(client, "options-unprotected")
    assert (
        deploy.run_deploy(site, url, {}, deploy.DeployOptions(assume_yes=True, interval=0.01), io.StringIO())
        == 0
    )
    assert site.describe()["EnableTerminationProtection"] is False


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["CostCenter"], "CostCenter: --tag: expected KEY=VALUE"),
        (
            ["aws:cloudformation:x=y"],
            "aws:cloudformation:x=y: --tag: keys starting with aws: are reserved for AWS",
        ),
        (["A=1", "A=2"], "A=2: --tag: A is given twice"),
        ([f"{'k' * 129}=v"], "--tag: expected KEY=VALUE"),
    ],
)
def test_bad_tags_are_one_line(pairs, message):
    with pytest.raises(deploy.InputError) as error:
        stack_tags(pairs)
    assert message in str(error.value)


def test_a_role_that_is_not_an_iam_role_arn_is_refused(my_site, capsys):
    argv = ["deploy", str(my_site), "--stack", "s", "--bucket", "b-templates", "--role-arn", "cloudformation"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "moodle-cfn: error: cloudformation: --role-arn: not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)\n"
    )


@pytest.mark.parametrize("flag", ["--stack", "--stack-name"])
@pytest.mark.parametrize("command", ["deploy", "status", "publish", "quick-create-url"])
def test_every_command_takes_stack_and_its_old_spelling(command, flag):
    argv = {
        "deploy": ["deploy", "p.yaml", "--bucket", "b-templates"],
        "status": ["status"],
        "publish": ["publish", "--bucket", "b-templates"],
        "quick-create-url": [
            "quick-create-url",
            "p.yaml",
            "--bucket",
            "b-templates",
            "--region",
            "eu-west-1",
        ],
    }[command]
    args = parser().parse_args([*argv, flag, "moodle-prod"])
    assert (getattr(args, "stack", None) or args.stack_name) == "moodle-prod"
