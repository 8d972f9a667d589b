"""Every AWS call a web node makes is allowed by the stack's own policies; what it must not do is denied.

The calls are tests/data/node_calls.json (each boot path's calls in the shapes the rig's AWS front door
records them; `make rehearse-node` checks the calls its nodes really made the same way). The policies are
templates/app.yaml's, rendered for each state's parameter values and names, and the evaluator is
iam-simulate (tests/node_rig/iam_check.py). The check must be able to fail: removing any one statement a
call needs makes it report that call, with what is missing.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import cfn_flip
import pytest

from tests.cfn_eval import active_resources
from tests.node_rig.cfn_init import app_template
from tests.node_rig.iam_check import (
    SIMULATOR_DIR,
    NodeCall,
    StackState,
    Verdict,
    denied_report,
    evaluate,
    group_tags,
    negative_calls,
)

# The evaluator is an npm package (make iam-simulate) run by Node.js: where they are missing, the checks that
# evaluate skip, saying so; .ci/run sets MOODLE_CFN_REQUIRE_IAM, and there they must run.
needs_evaluator = pytest.mark.skipif(
    not (
        (SIMULATOR_DIR / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir() and shutil.which("node")
    )
    and not os.environ.get("MOODLE_CFN_REQUIRE_IAM"),
    reason="the IAM evaluator is not installed (Node.js and npm, then make iam-simulate; .ci/run requires it)",
)
FIXTURE = Path(__file__).parent / "data" / "node_calls.json"
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def recorded() -> list[tuple[StackState, NodeCall]]:
    """The fixture's calls with their states; a call on the web group carries the group's tags as the
    template gives them (so a policy condition on a tag the group does not carry fails here)."""
    calls = []
    for item in json.loads(FIXTURE.read_text())["states"]:
        state = StackState(item["parameters"], item["names"])
        tags = {f"autoscaling:ResourceTag/{k}": v for k, v in group_tags(state).items()}
        for call in item["calls"]:
            context = {**(tags if ":autoScalingGroup:" in call["resource"] else {}), **call["context"]}
            calls.append((state, NodeCall(call["action"], call["resource"], context, call["origin"])))
    return calls


@pytest.fixture(scope="module")
def verdicts() -> list[Verdict]:
    return evaluate(recorded())


@needs_evaluator
def test_every_call_a_node_makes_is_allowed(verdicts: list[Verdict]) -> None:
    assert len(verdicts) == len(recorded()) > 20
    assert not denied_report(verdicts), denied_report(verdicts)


def without(sid: str, removed: list[str]) -> Any:
    """An edit of the rendered policies that removes the statement `sid`, noting each removal in `removed`."""

    def edit(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        edited = copy.deepcopy(policies)
        for policy in edited:
            statements = policy["policy"]["Statement"]
            removed.extend(sid for s in statements if s.get("Sid") == sid)
            policy["policy"]["Statement"] = [s for s in statements if s.get("Sid") != sid]
        return edited

    return edit


@needs_evaluator
@pytest.mark.parametrize(
    "sid, action",
    [
        ("ReadThisSitesSecrets", "secretsmanager:GetSecretValue"),
        ("KeepAndCompleteThisGroupsLifecycleHooks", "autoscaling:RecordLifecycleActionHeartbeat"),
        ("SignalAndReadThisStack", "cloudformation:SignalResource"),
        ("PublishTheSitesMoodleRelease", "ssm:PutParameter"),
        ("ReadTheCodeBundle", "s3:GetObject"),
        ("ReadThePluginArchives", "s3:GetObject"),
        ("ListMemcachedNodes", "elasticache:DescribeCacheClusters"),
        ("DecryptSecretsAndFiles", "kms:Decrypt"),
    ],
)
def test_the_check_fails_without_a_statement_a_call_needs(sid: str, action: str) -> None:
    removed: list[str] = []
    report = denied_report(evaluate(recorded(), edit=without(sid, removed)))
    assert removed, f"no statement {sid} in the node's policies"
    assert f"ImplicitlyDenied: {action} on " in report, report
    # What is missing: no statement for the action at all, or none whose resources include the call's.
    assert f"missing: no statement of the node's policies grants {action}" in report or (
        "the resource is not one of" in report
    ), report


@needs_evaluator
def test_a_secret_named_without_its_random_suffix_matches_nothing() -> None:
    """Secrets Manager ARNs end in '-' and six random characters: a policy naming the secret alone (as a
    hand-written ARN would) allows nothing, and the report says which resource it wanted."""
    state, call = next((s, c) for s, c in recorded() if c.resource == s.names["DatabaseAppUserSecretArn"])

    def by_name(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return json.loads(json.dumps(policies).replace(call.resource, call.resource[:-7]))

    (verdict,) = evaluate([(state, call)], edit=by_name)
    assert verdict.result == "ImplicitlyDenied"
    assert "statement ReadThisSitesSecrets: the resource is not one of" in verdict.explain()


@needs_evaluator
def test_moodles_metrics_need_their_own_statement_the_agents_namespace_does_not_cover_them() -> None:
    """The CloudWatch agent's statement allows PutMetricData in CWAgent only: without the Moodle statement,
    moodle-metrics.sh's call is denied, on the namespace condition."""
    removed: list[str] = []
    calls = [(s, c) for s, c in recorded() if c.action == "cloudwatch:PutMetricData"]
    assert {c.context["cloudwatch:namespace"] for _, c in calls} == {"CWAgent", "Moodle"}
    verdicts = evaluate(calls, edit=without("PublishMoodleHealthMetrics", removed))
    assert removed == ["PublishMoodleHealthMetrics"]
    denied = [v for v in verdicts if v.result != "Allowed"]
    assert [v.call.context["cloudwatch:namespace"] for v in denied] == ["Moodle"]
    assert denied[0].result == "ImplicitlyDenied"


@needs_evaluator
def test_a_tag_the_group_does_not_carry_denies_the_lifecycle_actions() -> None:
    state, call = next((s, c) for s, c in recorded() if c.action == "autoscaling:CompleteLifecycleAction")
    untagged = NodeCall(call.action, call.resource, {"aws:RequestedRegion": "us-east-1"}, call.origin)
    (verdict,) = evaluate([(state, untagged)])
    assert verdict.result == "ImplicitlyDenied"
    assert "condition not met: StringEquals autoscaling:ResourceTag/moodle-cfn-site" in verdict.explain()


@needs_evaluator
def test_what_a_node_must_not_do_is_denied() -> None:
    states = {json.dumps(s.parameters, sort_keys=True): s for s, _ in recorded()}
    calls = [(state, call) for state in states.values() for call in negative_calls(state)]
    verdicts = evaluate(calls)
    allowed = [v.explain() for v in verdicts if v.result not in ("ImplicitlyDenied", "ExplicitlyDenied")]
    assert not allowed, "\n".join(allowed)
    # The file-system policy's own Deny stops a mount without TLS, whatever the role allows.
    assert {v.result for v in verdicts if "without TLS" in v.call.origin} == {"ExplicitlyDenied"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(cfn_flip.to_json(path.read_text()))


def consumers(template: dict[str, Any], role: str) -> list[str]:
    """The resources that run with `role`: functions naming it, and groups launching through a launch
    template with an instance profile of it."""
    resources = template["Resources"]
    of_type = {kind: {t: r.get("Properties", {}) for t, r in resources.items() if r["Type"] == kind}
               for kind in ("AWS::IAM::InstanceProfile", "AWS::EC2::LaunchTemplate", "AWS::Lambda::Function",
                            "AWS::AutoScaling::AutoScalingGroup")}  # fmt: skip
    profiles = [{"Fn::GetAtt": [t, "Arn"]} for t, p in of_type["AWS::IAM::InstanceProfile"].items()
                if {"Ref": role} in p["Roles"]]  # fmt: skip
    launch_templates = [{"Ref": t} for t, p in of_type["AWS::EC2::LaunchTemplate"].items()
                        if p["LaunchTemplateData"].get("IamInstanceProfile", {}).get("Arn") in profiles]  # fmt: skip
    functions = [
        t for t, p in of_type["AWS::Lambda::Function"].items() if p["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    ]
    groups = [t for t, p in of_type["AWS::AutoScaling::AutoScalingGroup"].items()
              if p.get("LaunchTemplate", {}).get("LaunchTemplateId") in launch_templates]  # fmt: skip
    return functions + groups


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_policy_is_attached_before_what_runs_with_it_starts(path: Path) -> None:
    """A standalone policy resource is attached whenever CloudFormation gets to it: a node or a function
    could start before and meet AccessDenied. So every policy of a role that a function or the web group
    runs with is inline in the role, or a DependsOn of what runs with it (and then unconditional: DependsOn
    on a resource whose condition is false is a template error)."""
    template = load(path)
    late = []
    for title, resource in template["Resources"].items():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        for role in resource["Properties"].get("Roles", []):
            for consumer in consumers(template, role["Ref"]):
                depends = template["Resources"][consumer].get("DependsOn", [])
                depends = [depends] if isinstance(depends, str) else depends
                if title not in depends or "Condition" in resource:
                    late.append(f"{title} ({role['Ref']}) may be attached after {consumer} starts")
    assert not late, late


def test_the_web_role_and_the_function_roles_hold_their_policies_inline() -> None:
    """What the test above allows, this stack does not need: no policy resource at all, for any choice."""
    for path in TEMPLATES.glob("*.yaml"):
        template = load(path)
        for values in (
            {},
            {"DataKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k", "SessionCacheEngine": "memcached"},
        ):
            given = {k: v for k, v in values.items() if k in template.get("Parameters", {})}
            kinds = {r["Type"] for r in active_resources(template, given).values()}
            assert not kinds & {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}, path.name
    assert consumers(app_template(), "WebInstanceRole") == ["WebAutoScalingGroup"]
    assert consumers(load(TEMPLATES / "data.yaml"), "DatabaseRoleFunctionRole") == ["DatabaseRoleFunction"]
    assert consumers(load(TEMPLATES / "protection.yaml"), "DeletionProtectionFunctionRole") == [
        "DeletionProtectionFunction"
    ]


@needs_evaluator
def test_the_rigs_front_door_records_each_call_as_iam_sees_it() -> None:
    """The rig's AWS (tests/node_rig/aws.py), with boto3 in place of a node's AWS CLI (same botocore
    requests): each call reaches its answer through the front door and is recorded with the ARN and keys the
    fixture's shapes assume, a secret's with the random suffix moto gave it; then the check above decides."""
    from tests.node_rig.aws import EFS_MOUNT_PATH, running_aws

    state, _ = recorded()[0]
    group_arn = next(c.resource for _, c in recorded() if ":autoScalingGroup:" in c.resource)
    group = group_arn.rsplit("/", 1)[1]
    with running_aws() as aws:
        names = {**state.names, "DatabaseAppUserSecretArn": aws.secret("rig-moodle", {"password": "x"})}
        aws.stack = StackState(state.parameters, names)
        aws.groups[group], aws.group_tags[group] = "1", group_tags(aws.stack)
        aws.upload("rig-code", "plugins/local_rigcheck.zip", str(FIXTURE))
        client = {
            service: __import__("boto3").client(service, region_name="us-east-1", endpoint_url=aws.standin_url,
                                                aws_access_key_id="rig", aws_secret_access_key="rig")
            for service in ("secretsmanager", "s3", "ssm", "autoscaling", "cloudformation")
        }  # fmt: skip
        client["secretsmanager"].get_secret_value(SecretId="rig-moodle")  # by name: IAM sees the full ARN
        assert client["s3"].get_object(Bucket="rig-code", Key="plugins/local_rigcheck.zip")["Body"].read()
        client["ssm"].put_parameter(Name=names["MoodleReleaseParameter"], Value="4.5.0", Type="String")
        client["autoscaling"].complete_lifecycle_action(
            LifecycleHookName="moodle-node-ready", AutoScalingGroupName=group, InstanceId="i-0",
            LifecycleActionResult="CONTINUE",
        )  # fmt: skip
        client["cloudformation"].signal_resource(
            StackName=names["AWS::StackName"],
            LogicalResourceId="WebAutoScalingGroup",
            UniqueId="i-0",
            Status="SUCCESS",
        )
        form = {"FileSystemId": names["FileSystemId"], "AccessPointId": names["FileSystemAccessPointId"]}
        __import__("urllib.request").request.urlopen(
            aws.standin_url + EFS_MOUNT_PATH, data="&".join(f"{k}={v}" for k, v in form.items()).encode()
        )
        calls = list(aws.node_calls)
    seen = {(call.action, call.resource) for _, call in calls}
    assert seen == {
        ("secretsmanager:GetSecretValue", names["DatabaseAppUserSecretArn"]),
        ("s3:GetObject", "arn:aws:s3:::rig-code/plugins/local_rigcheck.zip"),
        ("ssm:PutParameter", "arn:aws:ssm:us-east-1:123456789012:parameter/moodle-cfn/rig/moodle-release"),
        (
            "autoscaling:CompleteLifecycleAction",
            next(c.resource for _, c in recorded() if "autoScalingGroup:" in c.resource),
        ),
        ("cloudformation:SignalResource", names["AWS::StackId"]),
        ("elasticfilesystem:ClientMount", names["FileSystemArn"]),
        ("elasticfilesystem:ClientWrite", names["FileSystemArn"]),
    }
    hook = next(c for _, c in calls if c.action == "autoscaling:CompleteLifecycleAction")
    assert hook.context["autoscaling:ResourceTag/moodle-cfn-site"] == "rig"
    assert not denied_report(evaluate(calls)), denied_report(evaluate(calls))
