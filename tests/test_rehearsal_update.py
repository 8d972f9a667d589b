"""Update rehearsal in moto: changing the web instance type, or a node input such as MoodleVersion, gives the
launch template a new version and the Auto Scaling group follows it, and a bad params file is refused before anything reaches AWS."""

from __future__ import annotations

import base64
import json

import boto3
import pytest

from moodle_cfn.cli import main
from tests.rehearsal import deploy


@pytest.mark.parametrize(
    ("name", "value", "in_data"),
    [
        ("WebInstanceType", "m7i.large", lambda data: data["InstanceType"] == "m7i.large"),
        # A node input (read from the Metadata): user data carries it, so it makes a version too.
        ("MoodleVersion", "4.5.9", lambda data: "4.5.9" in base64.b64decode(data["UserData"]).decode()),
    ],
    ids=["WebInstanceType", "MoodleVersion"],
)
def test_a_change_makes_a_new_launch_template_version(aws, rehearsal, name, value, in_data):
    dev = rehearsal("dev.yaml")["AppStack"]
    # A stack of its own (another site name: log group names are fixed per site), so the shared dev
    # stack stays as other tests expect it.
    site = f"moodle-update-{name.lower()}"
    parameters = {**dev["parameters"], "SiteName": site}
    stack = deploy(aws, site, dev["template"], parameters)
    ec2, autoscaling = boto3.client("ec2", **aws), boto3.client("autoscaling", **aws)
    template_id = stack["physical"]["WebLaunchTemplate"]
    before = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0]
    assert before["LatestVersionNumber"] == 1

    changed = {**parameters, name: value}
    cloudformation = boto3.client("cloudformation", **aws)
    cloudformation.update_stack(
        StackName=site,
        TemplateBody=json.dumps(dev["template"]),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(changed.items())],
        Capabilities=["CAPABILITY_IAM"],
    )
    status = cloudformation.describe_stacks(StackName=site)["Stacks"][0]["StackStatus"]
    assert status == "UPDATE_COMPLETE"
    after = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0]
    assert after["LatestVersionNumber"] == 2
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["2"])[
        "LaunchTemplateVersions"
    ]
    assert in_data(version["LaunchTemplateData"])
    # The group names its version with GetAtt LatestVersionNumber, so CloudFormation moves it to version 2
    # and rolls the nodes; moto's update leaves the group's own reference at 1 (a moto gap, not asserted).
    reference = dev["template"]["Resources"]["WebAutoScalingGroup"]["Properties"]["LaunchTemplate"]
    assert reference["Version"] == {"Fn::GetAtt": ["WebLaunchTemplate", "LatestVersionNumber"]}
    groups = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack["outputs"]["AutoScalingGroupName"]]
    )
    assert groups["AutoScalingGroups"][0]["LaunchTemplate"]["LaunchTemplateId"] == template_id


@pytest.mark.parametrize("command", ["params", "quick-create-url", "publish"])
def test_a_bad_params_file_is_refused_before_anything_is_sent(aws, tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TemplatesBucketName: rehearsal-templates\nWebMinSize: 5\nWebMaxSize: 3\n")
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="refused-upload")
    cloudformation = boto3.client("cloudformation", **aws)
    stacks_before = len(cloudformation.list_stacks()["StackSummaries"])
    extra = {
        "params": [str(bad)],
        "quick-create-url": [str(bad), "--bucket", "refused-upload", "--region", "us-east-1"],
        "publish": ["--bucket", "refused-upload", "--params", str(bad)],
    }[command]
    assert main([command, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WebDesiredCapacity: must be between WebMinSize and WebMaxSize" in err
    assert s3.list_objects_v2(Bucket="refused-upload").get("KeyCount", 0) == 0
    assert len(cloudformation.list_stacks()["StackSummaries"]) == stacks_before
