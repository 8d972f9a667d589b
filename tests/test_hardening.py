"""Cross-layer security and operations properties: IAM scoping, data-safety policies, alarms, WAF placement."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moodle_cfn import master
from moodle_cfn.layers import LAYERS, monitoring, moodle, waf
from tests.cfn_eval import active_resources, evaluate_conditions, of_type

# Every IAM statement whose Resource is "*", with why nothing narrower exists. Anything else with "*" fails.
UNSCOPED_ALLOWED = {
    # No resource-level permissions exist for these two actions; PutMetricData is narrowed by namespace.
    ("WebInstanceRole", "AgentMetrics"): "cloudwatch:PutMetricData accepts only *",
    ("WebInstanceRole", "PublishMoodleHealthMetrics"): "cloudwatch:PutMetricData accepts only *",
    ("WebInstanceRole", "AgentInstanceTags"): "ec2:DescribeTags accepts only *",
    ("FlowLogRole", "FindTheLogGroup"): "logs:DescribeLogGroups accepts only *",
    (
        "WebInstanceRole",
        "OpenSessionManagerSessions",
    ): "ssmmessages:* accept only *; AWS's Session Manager policy",
    (
        "WebInstanceRole",
        "ReadTheGroupsLaunchTemplateVersion",
    ): "autoscaling:DescribeAutoScalingGroups accepts only *",
    # A file system policy can only name its own file system, written "*".
    ("FileSystem", "MountAndWriteThroughMountTargets"): "resource policy of the file system itself",
    ("FileSystem", "DenyUnencryptedTransport"): "resource policy of the file system itself",
}
# AWS managed policies attached, each to a role that an AWS service assumes (RDS enhanced monitoring, AWS
# Backup) and that documents the policy as the way to grant access; no node or function role has one.
MANAGED_POLICIES_ALLOWED = {
    "AmazonRDSEnhancedMonitoringRole",  # RDS enhanced monitoring
    "AWSBackupServiceRolePolicyForBackup",  # AWS Backup
    "AWSBackupServiceRolePolicyForRestores",
    "AWSLambdaVPCAccessExecutionRole",  # the database-role function's network interfaces in the VPC
}
# Stateful resource types and the (DeletionPolicy, UpdateReplacePolicy) that keep their data; every such
# resource must state them. Kept unless a failed first create made it (tests/test_first_create.py); the
# access-log bucket is kept even then, since a rollback could not delete it.
KEPT = ("RetainExceptOnCreate", "Retain")
STATEFUL = {
    "AWS::RDS::DBCluster": ("Snapshot", "Snapshot"),
    "AWS::EFS::FileSystem": KEPT,
    "AWS::SecretsManager::Secret": KEPT,
    "AWS::Logs::LogGroup": KEPT,
    "AWS::S3::Bucket": ("Retain", "Retain"),
    "AWS::Backup::BackupVault": KEPT,
}
# Stateful-typed resources that may go with the stack, and why.
DISPOSABLE = {
    "OriginSecret": "proves a request came through CloudFront; a new one is generated with the distribution",
}


@pytest.fixture(scope="module")
def templates() -> dict[str, dict[str, Any]]:
    built = {layer.name: json.loads(layer.build().to_json()) for layer in LAYERS}
    built["master"] = json.loads(master.build().to_json())
    return built


def every_statement(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each conditional statement (Fn::If [condition, statement, AWS::NoValue]) in place of
    its branches: a check of what a role may hold reads every statement any choice gives it."""
    statements = []
    for statement in document["Statement"]:
        branches = statement["Fn::If"][1:] if set(statement) == {"Fn::If"} else [statement]
        statements.extend(b for b in branches if b != {"Ref": "AWS::NoValue"})
    return {**document, "Statement": statements}


def policy_documents(resource_name: str, resource: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, document) for every permission policy of a resource: inline role policies, IAM policies,
    bucket and file system policies (trust policies grant no permissions and are left out)."""
    props = resource.get("Properties", {})
    policies = props.get("Policies", [])
    # Policies that exist only for some choices: Fn::If [condition, [all policies], [fewer policies]].
    policies = policies["Fn::If"][1] if isinstance(policies, dict) else policies
    for policy in policies:
        yield resource_name, every_statement(policy["PolicyDocument"])
    if resource["Type"] == "AWS::IAM::Policy":
        for role in props["Roles"]:
            yield role["Ref"], every_statement(props["PolicyDocument"])
    if resource["Type"] == "AWS::S3::BucketPolicy":
        yield resource_name, props["PolicyDocument"]
    if "FileSystemPolicy" in props:
        yield resource_name, props["FileSystemPolicy"]


def test_no_unscoped_wildcard_outside_the_allow_list(templates):
    found = set()
    for template in templates.values():
        for name, resource in template["Resources"].items():
            for owner, document in policy_documents(name, resource):
                for statement in document["Statement"]:
                    resources = statement.get("Resource", [])
                    resources = resources if isinstance(resources, list) else [resources]
                    if "*" in resources:
                        found.add((owner, statement.get("Sid")))
                        assert (owner, statement.get("Sid")) in UNSCOPED_ALLOWED, (owner, statement)
                    actions = (
                        statement["Action"]
                        if isinstance(statement["Action"], list)
                        else [statement["Action"]]
                    )
                    if statement["Effect"] == "Allow":
                        assert not [a for a in actions if a == "*" or a.endswith(":*")], (owner, statement)
    assert found == set(UNSCOPED_ALLOWED), "the allow-list names a statement that no longer exists"


# AWS managed policies' documents (tests/data/aws-managed-policies.json, each with its source): a role's
# permissions are read inside every policy it has, managed ones included, not trusted by name.
MANAGED_DOCUMENTS = json.loads((Path(__file__).parent / "data" / "aws-managed-policies.json").read_text())
# Reads of where secrets live: granted on "*", each reads every secret, parameter or key of the account and
# Region. A web node may read only its own site's.
SECRET_READS = re.compile(r"^(secretsmanager|ssm|kms):(Get|Describe|List|BatchGet|Decrypt|\*)")
# Writes to what becomes a node's code: the operator's bundle and plugins in S3, and root on EFS.
CODE_WRITES = re.compile(r"^(s3:(Put|Delete|Restore|\*)|elasticfilesystem:ClientRootAccess)")
WEB_ROLE = "WebInstanceRole"


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every Allow statement a role holds: its inline policies, the stack's policies attached to it, and its
    AWS managed policies' documents (a managed policy without a bundled document fails)."""
    resources = template["Resources"]
    documents = [owner_document for name, resource in resources.items()
                 for owner, owner_document in policy_documents(name, resource) if owner == role]  # fmt: skip
    for arn in resources[role]["Properties"].get("ManagedPolicyArns", []):
        name = arn["Fn::Sub"].rsplit("/", 1)[-1]
        assert name in MANAGED_DOCUMENTS["policies"], f"{role}: no bundled document of {name}"
        documents.append(MANAGED_DOCUMENTS["policies"][name]["document"])
    return [s for document in documents for s in document["Statement"] if s["Effect"] == "Allow"]


def granted(statements: list[dict[str, Any]], pattern: re.Pattern[str], on_anything: bool) -> set[str]:
    """The actions matching `pattern` that the statements allow (only those on "*" when `on_anything`)."""
    return {action for statement in statements for action in listed(statement["Action"])
            if pattern.match(action) and (not on_anything or "*" in listed(statement["Resource"]))}  # fmt: skip


def test_a_web_node_reads_no_secret_or_parameter_but_its_sites_and_writes_no_code(templates):
    statements = role_statements(templates["app"], WEB_ROLE)
    assert granted(statements, SECRET_READS, on_anything=True) == set()
    assert granted(statements, CODE_WRITES, on_anything=False) == set()
    # What it does read is named: this site's secrets (ARNs from the stack) and the site's key.
    reads = [s for s in statements if any(SECRET_READS.match(a) for a in listed(s["Action"]))]
    assert reads and all("*" not in str(s["Resource"]) for s in reads), reads


def test_the_web_node_check_reads_inside_managed_policies(templates):
    """The check can fail: AmazonSSMManagedInstanceCore on the role (what it had) is caught by its
    document, ssm:GetParameter(s) on "*"."""
    app = copy.deepcopy(templates["app"])
    app["Resources"][WEB_ROLE]["Properties"]["ManagedPolicyArns"] = [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}
    ]
    assert {"ssm:GetParameter", "ssm:GetParameters"} <= granted(
        role_statements(app, WEB_ROLE), SECRET_READS, on_anything=True
    )


def test_the_web_nodes_session_manager_permissions_are_awss_own_minimum(templates):
    session = next(
        s for s in role_statements(templates["app"], WEB_ROLE) if s.get("Sid") == "OpenSessionManagerSessions"
    )
    (minimum,) = MANAGED_DOCUMENTS["policies"]["AWSCloud9SSMInstanceProfile"]["document"]["Statement"]
    assert sorted(session["Action"]) == sorted(minimum["Action"])


def test_only_documented_aws_managed_policies(templates):
    attached = set()
    for template in templates.values():
        for resource in of_type(template["Resources"], "AWS::IAM::Role").values():
            for arn in resource["Properties"].get("ManagedPolicyArns", []):
                attached.add(arn["Fn::Sub"].rsplit("/", 1)[-1])
    assert attached == MANAGED_POLICIES_ALLOWED


def test_every_stateful_resource_states_what_a_delete_and_a_replacement_keep(templates):
    seen = set()
    for layer, template in templates.items():
        for name, resource in template["Resources"].items():
            expected = STATEFUL.get(resource["Type"])
            if expected is None:
                continue
            seen.add(resource["Type"])
            policies = (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy"))
            if name in DISPOSABLE:
                assert policies == ("Delete", "Delete"), name
            else:
                assert policies == expected, f"{layer}: {name}"
    assert seen == set(STATEFUL)


def test_database_instances_and_caches_say_explicitly_that_they_hold_nothing(templates):
    for template in templates.values():
        for name, resource in template["Resources"].items():
            if resource["Type"] in (
                "AWS::RDS::DBInstance",
                "AWS::ElastiCache::CacheCluster",
                "AWS::ElastiCache::ReplicationGroup",
            ):
                assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (
                    "Delete",
                    "Delete",
                ), name


# Alarms ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_template() -> dict[str, Any]:
    return json.loads(monitoring.build().to_json())


def alarm_namespaces(resources: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """{namespace: metric names} over every alarm (single metric or metric math)."""
    found: dict[str, set[str]] = {}
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        metrics = (
            [(props["Namespace"], props["MetricName"])]
            if "Namespace" in props
            else [
                (q["MetricStat"]["Metric"]["Namespace"], q["MetricStat"]["Metric"]["MetricName"])
                for q in props["Metrics"]
                if "MetricStat" in q
            ]
        )
        for namespace, name in metrics:
            found.setdefault(namespace, set()).add(name)
    return found


def test_every_tier_has_its_alarms(monitoring_template):
    found = alarm_namespaces(active_resources(monitoring_template, {"AvailabilityZoneCount": "3"}))
    assert {
        "HTTPCode_ELB_5XX_Count",
        "HTTPCode_Target_5XX_Count",
        "TargetResponseTime",
        "UnHealthyHostCount",
    } <= found["AWS/ApplicationELB"]
    assert found["AWS/AutoScaling"] == {"GroupInServiceInstances"}
    assert {"CPUUtilization", "FreeableMemory", "DatabaseConnections", "AuroraReplicaLagMaximum"} <= found[
        "AWS/RDS"
    ]
    assert found["AWS/ElastiCache"] == {"CPUUtilization", "Evictions", "SwapUsage"}
    assert found["AWS/EFS"] == {"PercentIOLimit"}
    assert found["AWS/NATGateway"] == {"ErrorPortAllocation", "PacketsDropCount"}


def test_every_alarm_notifies_the_topic_when_it_fires_and_clears(monitoring_template):
    for name, alarm in of_type(monitoring_template["Resources"], "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == props["OKActions"] == [{"Ref": "AlarmTopic"}], name


@pytest.mark.parametrize(("engine", "metrics"), [("memcached", {"CPUUtilization", "Evictions", "SwapUsage"}),
                                                 ("valkey", {"EngineCPUUtilization", "Evictions", "DatabaseMemoryUsagePercentage"})])  # fmt: skip
def test_cache_alarms_follow_the_engine_and_take_the_worst_node(monitoring_template, engine, metrics):
    given = {"SessionCacheEngine": engine, "ApplicationCacheEngine": engine}
    active = active_resources(monitoring_template, given)
    assert alarm_namespaces(active)["AWS/ElastiCache"] == metrics
    session = [a for n, a in of_type(active, "AWS::CloudWatch::Alarm").items() if n.startswith("Session")]
    assert len(session) == 3
    queries = session[0]["Properties"]["Metrics"]
    nodes = [q["MetricStat"]["Metric"]["Dimensions"] for q in queries if "MetricStat" in q]
    assert len(nodes) == monitoring.MAX_CACHE_NODES
    assert queries[-1]["Expression"] == "MAX(METRICS())" and queries[-1]["ReturnData"] is True
    first = {d["Name"]: d["Value"] for d in nodes[0]}
    if engine == "memcached":
        assert first == {"CacheClusterId": {"Ref": "SessionCacheId"}, "CacheNodeId": "0001"}
    else:
        assert first == {
            "CacheClusterId": {"Fn::Sub": ["${Group}-001", {"Group": {"Ref": "SessionCacheId"}}]},
            "CacheNodeId": "0001",
        }


@pytest.mark.parametrize(
    ("azs", "mode", "count"), [("2", "single", 1), ("2", "per-az", 2), ("3", "per-az", 3)]
)
def test_one_pair_of_nat_alarms_per_gateway_in_use(monitoring_template, azs, mode, count):
    active = active_resources(monitoring_template, {"AvailabilityZoneCount": azs, "NatGatewayMode": mode})
    nat = [n for n in of_type(active, "AWS::CloudWatch::Alarm") if n.startswith("NatGateway")]
    assert len(nat) == 2 * count


def test_alarm_email_is_optional_and_the_topic_uses_the_site_key(monitoring_template):
    assert "AlarmEmailSubscription" not in active_resources(monitoring_template, {})
    subscribed = active_resources(monitoring_template, {"AlarmEmail": "ops@example.edu"})
    assert subscribed["AlarmEmailSubscription"]["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert (
        monitoring_template["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"]["Fn::If"][0]
        == "HasDataKmsKey"
    )


def test_serverless_capacity_alarm_only_in_serverless_mode(monitoring_template):
    assert "DatabaseCapacity" not in active_resources(monitoring_template, {})
    assert "DatabaseCapacity" in active_resources(
        monitoring_template, {"DatabaseCapacityMode": "serverless-v2"}
    )


def test_dashboard_shows_the_site(monitoring_template):
    body = monitoring_template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body)["widgets"]
    assert {w["properties"].get("title") for w in widgets} >= {
        "Requests and 5xx",
        "Response time (p95)",
        "Database",
    }
    # The release the site runs: a line pointing at the parameter the nodes publish it to.
    (text,) = [w["properties"]["markdown"] for w in widgets if w["type"] == "text"]
    assert "/moodle-cfn/${SiteName}/moodle-release" in text and moodle.RELEASE_PARAMETER_NAME in text


# WAF ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_template(templates) -> dict[str, Any]:
    return templates["app"]


def acl_rules(resources: dict[str, dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {rule["Name"]: rule for rule in resources[name]["Properties"]["Rules"]}


def test_waf_on_cloudfront_in_us_east_1(app_template):
    active = active_resources(app_template, {"AWS::Region": "us-east-1"})
    assert "LoadBalancerWebAcl" not in active
    assert active["CloudFrontWebAcl"]["Properties"]["Scope"] == "CLOUDFRONT"
    rules = acl_rules(active, "CloudFrontWebAcl")
    assert set(rules) == {
        "AWSManagedRulesAmazonIpReputationList",
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "RateLimitPerClient",
    }
    assert rules["RateLimitPerClient"]["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    web_acl = active["Distribution"]["Properties"]["DistributionConfig"]["WebACLId"]
    assert web_acl == {"Fn::GetAtt": ["CloudFrontWebAcl", "Arn"]}


def test_waf_on_the_load_balancer_behind_cloudfront_elsewhere(app_template):
    active = active_resources(app_template, {"AWS::Region": "eu-west-1"})
    assert "CloudFrontWebAcl" not in active
    rules = acl_rules(active, "LoadBalancerWebAcl")
    assert "AWSManagedRulesAmazonIpReputationList" not in rules, (
        "it would only ever see CloudFront's addresses"
    )
    # The only viewer address there is the first X-Forwarded-For entry, which the client writes: a rate
    # limit keyed on it is bypassed by sending another. No rule rather than one that can be forged.
    assert "RateLimitPerClient" not in rules
    assert "FORWARDED_IP" not in json.dumps(app_template)
    association = active["LoadBalancerWebAclAssociation"]["Properties"]
    assert association["ResourceArn"] == {"Ref": "LoadBalancer"}


def test_waf_without_cloudfront_sees_viewers(app_template):
    given = {"EnableCloudFront": "false", "DomainName": "moodle.example.edu", "HostedZoneId": "Z0123456789"}
    rules = acl_rules(active_resources(app_template, given), "LoadBalancerWebAcl")
    assert "AWSManagedRulesAmazonIpReputationList" in rules
    assert rules["RateLimitPerClient"]["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"


def test_moodle_uploads_and_editor_html_are_counted_not_blocked(app_template):
    rules = acl_rules(active_resources(app_template, {}), "CloudFrontWebAcl")
    overrides = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"][
        "RuleActionOverrides"
    ]
    assert {o["Name"]: o["ActionToUse"] for o in overrides} == {
        name: {"Count": {}} for name in waf.COUNT_ONLY_COMMON_RULES
    }


def test_waf_off_creates_nothing(app_template):
    active = active_resources(app_template, {"EnableWaf": "false"})
    assert not of_type(active, "AWS::WAFv2::WebACL") and not of_type(active, "AWS::WAFv2::WebACLAssociation")
    assert evaluate_conditions(app_template, {"EnableWaf": "false"})[waf.WAF_ON_LOAD_BALANCER] is False


def test_web_nodes_cannot_read_the_database_master_secret(templates):
    """Only the database-role function reads the master secret; no web node policy names it, and the app
    layer is not even given its ARN."""
    app = templates["app"]
    assert "DatabaseMasterSecretArn" not in app["Parameters"]
    readers = set()
    for template in templates.values():
        for name, resource in template["Resources"].items():
            for owner, document in policy_documents(name, resource):
                if "MasterUserSecret.SecretArn" in json.dumps(document):
                    readers.add(owner)
    assert readers == {"DatabaseRoleFunctionRole"}
    web_policies = [json.dumps(d) for n, r in app["Resources"].items() for _, d in policy_documents(n, r)]
    assert not [d for d in web_policies if "Master" in d]
