"""Targeted properties of the app template: load balancer, web tier, CloudFront and DNS, per choice."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from moodle_cfn import bootstrap
from moodle_cfn.checks import run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.layers import (
    app,
    auto_scaling,
    edge,
    listeners,
    load_balancer,
    mail,
    moodle,
    scaling_windows,
    web_node,
    web_tier,
)
from tests.cfn_eval import active_resources, evaluate_conditions, of_type, resolve_ifs
from tests.conftest import tool
from tests.variants import DOMAIN, REGIONAL_CERTIFICATE, US_EAST_1_CERTIFICATE, ZONE

NO_DOMAIN: dict[str, str] = {}
CREATED_CERTIFICATE = {"DomainName": DOMAIN, "HostedZoneId": ZONE}
GIVEN_CERTIFICATE = {"DomainName": DOMAIN, "CertificateArn": REGIONAL_CERTIFICATE}
WITHOUT_CLOUDFRONT = {**CREATED_CERTIFICATE, "EnableCloudFront": "false"}


def resources(template: dict[str, Any], **given: str) -> dict[str, dict[str, Any]]:
    return active_resources(template, given)


def props(resources_: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return resources_[name]["Properties"]


# Load balancer --------------------------------------------------------------------------------------------


def test_load_balancer_is_internal_behind_cloudfront_with_logs(app_template):
    alb = props(resources(app_template), "LoadBalancer")
    assert alb["Scheme"] == "internal" and alb["Subnets"] == {"Ref": "AppSubnetIds"}
    alone = props(resources(app_template, **WITHOUT_CLOUDFRONT), "LoadBalancer")
    assert alone["Scheme"] == "internet-facing" and alone["Subnets"] == {"Ref": "PublicSubnetIds"}
    assert alb["SecurityGroups"] == [{"Ref": "AlbSecurityGroupId"}]
    attributes = {a["Key"]: a["Value"] for a in alb["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == {"Ref": "AccessLogBucket"}
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"


@pytest.mark.parametrize("given", [CREATED_CERTIFICATE, GIVEN_CERTIFICATE, WITHOUT_CLOUDFRONT])
def test_http_redirects_to_https_whenever_a_certificate_exists(app_template, given):
    active = resources(app_template, **given)
    (action,) = props(active, "HttpListener")["DefaultActions"]
    assert action["Type"] == "redirect"
    assert action["RedirectConfig"] == {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}
    https = props(active, "HttpsListener")
    assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    expected = {"Ref": "CertificateArn"} if "CertificateArn" in given else {"Ref": "SiteCertificate"}
    assert https["Certificates"] == [{"CertificateArn": expected}]


def test_certificate_is_created_with_dns_validation_only_for_a_domain_and_zone(app_template):
    certificate = props(resources(app_template, **CREATED_CERTIFICATE), "SiteCertificate")
    assert certificate["ValidationMethod"] == "DNS"
    assert certificate["DomainValidationOptions"] == [
        {"DomainName": {"Ref": "DomainName"}, "HostedZoneId": {"Ref": "HostedZoneId"}}
    ]
    assert "SiteCertificate" not in resources(app_template, **GIVEN_CERTIFICATE)
    assert "SiteCertificate" not in resources(app_template)


def test_without_a_domain_only_cloudfront_gets_in_over_the_vpc_origin_port(app_template):
    active = resources(app_template)
    assert "HttpsListener" not in active
    (action,) = props(active, "HttpListener")["DefaultActions"]
    assert action["FixedResponseConfig"]["StatusCode"] == "403"
    rule = props(active, "ForwardFromCloudFront")
    assert rule["ListenerArn"] == {"Ref": "HttpListener"}
    (condition,) = rule["Conditions"]
    assert condition["HttpHeaderConfig"]["HttpHeaderName"] == listeners.ORIGIN_HEADER
    ingress = props(active, "AlbFromCloudFront")
    assert (ingress["FromPort"], ingress["ToPort"]) == (80, 80)


@pytest.mark.parametrize("given", [NO_DOMAIN, CREATED_CERTIFICATE])
def test_with_cloudfront_the_load_balancer_admits_only_cloudfront(app_template, given):
    active = resources(app_template, **given)
    ingress = of_type(active, "AWS::EC2::SecurityGroupIngress")
    assert list(ingress) == ["AlbFromCloudFront"], "one prefix-list rule: the list counts ~55 rules of 60"
    rule = ingress["AlbFromCloudFront"]["Properties"]
    assert "CidrIp" not in rule
    assert rule["SourcePrefixListId"] == {
        "Fn::FindInMap": ["CloudFrontPrefixList", {"Ref": "AWS::Region"}, "Id"]
    }
    given_list = resources(app_template, **given, CloudFrontPrefixListId="pl-0123456789abcdef0")
    assert props(given_list, "AlbFromCloudFront")["SourcePrefixListId"] == {"Ref": "CloudFrontPrefixListId"}
    https_listener = props(active, "HttpsListener") if given else None
    if https_listener:
        assert https_listener["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "403"


def test_without_cloudfront_viewers_reach_443_and_80(app_template):
    active = resources(app_template, **WITHOUT_CLOUDFRONT)
    ingress = of_type(active, "AWS::EC2::SecurityGroupIngress")
    assert sorted((r["Properties"]["FromPort"], r["Properties"]["CidrIp"]) for r in ingress.values()) == [
        (80, "0.0.0.0/0"),
        (443, "0.0.0.0/0"),
    ]
    assert "ForwardFromCloudFront" not in active and "Distribution" not in active
    assert props(active, "HttpsListener")["DefaultActions"][0]["Type"] == "forward"


def test_the_target_group_is_not_the_one_an_internet_facing_release_made(app_template):
    # Stacks made before the VPC origin have an internet-facing load balancer with WebTargetGroup; their
    # update replaces the load balancer, and a target group serves one load balancer only
    # (TargetGroupAssociationLimit), so the new one must come with a target group of its own.
    assert "WebTargetGroup" not in app_template["Resources"]
    assert of_type(app_template["Resources"], "AWS::ElasticLoadBalancingV2::TargetGroup").keys() == {
        load_balancer.TARGET_GROUP_TITLE
    }


def test_target_group_checks_the_path_the_bootstrap_serves(app_template):
    group = props(app_template["Resources"], load_balancer.TARGET_GROUP_TITLE)
    assert group["HealthCheckPath"] == load_balancer.HEALTH_CHECK_PATH
    attributes = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "60"
    # The node serves that path from moodle-health.php, at the path site.json gives the vhost.
    init = app_template["Resources"]["WebLaunchTemplate"]["Metadata"]["AWS::CloudFormation::Init"]["config"]
    assert (
        init["files"]["/etc/moodle-cfn/site.json"]["content"]["HEALTH_CHECK_PATH"]
        == load_balancer.HEALTH_CHECK_PATH
    )
    assert 'Alias "@HEALTH_PATH@" "/usr/share/moodle-cfn/moodle-health.php"' in bootstrap.read(
        "moodle-vhost.conf"
    )


def test_access_log_bucket_is_private_encrypted_expiring_and_kept(app_template):
    bucket = app_template["Resources"]["AccessLogBucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    properties = bucket["Properties"]
    rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all(properties["PublicAccessBlockConfiguration"].values())
    (lifecycle,) = properties["LifecycleConfiguration"]["Rules"]
    assert lifecycle["ExpirationInDays"] == {"Ref": "AccessLogRetentionDays"}
    statements = props(app_template["Resources"], "AccessLogBucketPolicy")["PolicyDocument"]["Statement"]
    delivery = next(s for s in statements if s["Sid"] == "ElbLogDelivery")
    assert delivery["Action"] == ["s3:PutObject"]
    assert "Fn::If" in delivery["Principal"]
    deny = next(s for s in statements if s["Effect"] == "Deny")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_elb_log_principal_follows_the_region(app_template):
    mapping = app_template["Mappings"]["ElbLogDelivery"]
    assert mapping["us-east-1"] == {"AccountId": "127311923021"}
    assert mapping["eu-west-1"] == {"AccountId": "156460612806"}
    for region, expected in (("eu-west-1", True), ("ap-southeast-3", False)):
        conditions = evaluate_conditions(app_template, {"AWS::Region": region})
        assert conditions[load_balancer.ELB_ACCOUNT_REGION] is expected


# Web tier -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_type", web_node.GRAVITON_TYPES + web_node.X86_TYPES)
def test_ami_architecture_follows_the_instance_type(app_template, instance_type):
    active = resources(app_template, WebInstanceType=instance_type)
    image = props(active, "WebLaunchTemplate")["LaunchTemplateData"]["ImageId"]
    family = instance_type.split(".")[0]
    graviton = family.endswith("g")
    assert image == {"Ref": "WebAmiArm64" if graviton else "WebAmiX8664"}


def test_launch_template_requires_imdsv2_encrypts_gp3_and_has_no_key_or_public_ip(app_template):
    data = props(app_template["Resources"], "WebLaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    (volume,) = data["BlockDeviceMappings"]
    assert volume["Ebs"] == {
        "VolumeType": "gp3",
        "VolumeSize": {"Ref": "WebRootVolumeSize"},
        "Encrypted": True,
        "DeleteOnTermination": True,
    }
    assert "KeyName" not in data and "NetworkInterfaces" not in data
    assert data["SecurityGroupIds"] == [{"Ref": "WebSecurityGroupId"}]


def test_amis_come_from_the_public_ssm_parameters_in_the_master(master_template):
    for name, arch in (("WebAmiArm64", "arm64"), ("WebAmiX8664", "x86_64")):
        spec = master_template["Parameters"][name]
        assert spec["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        assert spec["Default"] == f"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"


def policy_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = props(template["Resources"], "WebInstanceRole")
    extra = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    documents = [p["PolicyDocument"] for p in role["Policies"]] + [p["PolicyDocument"] for p in extra]
    # A conditional statement (Fn::If [condition, statement, AWS::NoValue]) counts as its statement.
    statements = [s for document in documents for s in document["Statement"]]
    return [s["Fn::If"][1] if set(s) == {"Fn::If"} else s for s in statements]


# The only actions allowed on "*": they have no resource-level permissions at all.
UNSCOPABLE = {
    "cloudwatch:PutMetricData",
    "ec2:DescribeTags",
    "autoscaling:DescribeAutoScalingGroups",
    # Session Manager (policies.web_node_policy).
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ssm:UpdateInstanceInformation",
}


def test_instance_role_is_scoped_to_this_stack(app_template):
    role = props(app_template["Resources"], "WebInstanceRole")
    assert "ManagedPolicyArns" not in role
    for statement in policy_statements(app_template):
        if "*" in statement["Resource"]:
            assert set(statement["Action"]) <= UNSCOPABLE, statement["Sid"]
    secrets = next(s for s in policy_statements(app_template) if s["Sid"] == "ReadThisSitesSecrets")
    assert {"Ref": "DatabaseAppUserSecretArn"} in secrets["Resource"]
    efs = next(s for s in policy_statements(app_template) if s["Sid"] == "MountThroughTheSitesAccessPoints")
    assert efs["Condition"] == {
        "ArnEquals": {
            "elasticfilesystem:AccessPointArn": [
                {"Ref": "FileSystemAccessPointArn"},
                {"Ref": "FileSystemCodeAccessPointArn"},
            ]
        }
    }


def test_auto_scaling_group_waits_for_signals_and_rolls_safely(app_template):
    group = app_template["Resources"][auto_scaling.ASG_TITLE]
    properties = group["Properties"]
    assert properties["VPCZoneIdentifier"] == {"Ref": "AppSubnetIds"}
    assert properties["HealthCheckType"] == "ELB" and properties["HealthCheckGracePeriod"] >= 600
    assert group["CreationPolicy"]["ResourceSignal"] == {"Count": {"Ref": "WebMinSize"}, "Timeout": "PT1H"}
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MinInstancesInService"] == {"Ref": "WebMinSize"} and rolling["MaxBatchSize"] == 1
    assert rolling["WaitOnResourceSignals"] is True
    assert group["UpdatePolicy"]["AutoScalingScheduledAction"] == {
        "IgnoreUnmodifiedGroupSizeProperties": True
    }


def test_target_tracking_on_cpu_and_requests_per_node(app_template):
    policies = of_type(app_template["Resources"], "AWS::AutoScaling::ScalingPolicy")
    metrics = {
        p["Properties"]["TargetTrackingConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]: p["Properties"]["TargetTrackingConfiguration"]
        for p in policies.values()
    }
    assert metrics["ASGAverageCPUUtilization"]["TargetValue"] == {"Ref": "WebCpuTargetPercent"}
    requests = metrics["ALBRequestCountPerTarget"]
    assert requests["TargetValue"] == {"Ref": "WebRequestsPerTargetTarget"}
    label = requests["PredefinedMetricSpecification"]["ResourceLabel"]["Fn::Join"]
    assert label[1] == [
        {"Fn::GetAtt": ["LoadBalancer", "LoadBalancerFullName"]},
        {"Fn::GetAtt": [load_balancer.TARGET_GROUP_TITLE, "TargetGroupFullName"]},
    ]


def test_scheduled_windows_exist_only_when_given(app_template):
    assert not of_type(resources(app_template), "AWS::AutoScaling::ScheduledAction")
    given = {"ScalingWindow2Start": "30 7 * * 1-5", "ScalingWindow2End": "0 14 * * 1-5"}
    actions = of_type(resources(app_template, **given), "AWS::AutoScaling::ScheduledAction")
    assert sorted(actions) == ["Window2ScaleBack", "Window2ScaleUp"]
    up, back = actions["Window2ScaleUp"]["Properties"], actions["Window2ScaleBack"]["Properties"]
    assert (up["Recurrence"], up["MinSize"]) == (
        {"Ref": "ScalingWindow2Start"},
        {"Ref": "ScalingWindow2MinSize"},
    )
    assert (back["Recurrence"], back["MinSize"]) == ({"Ref": "ScalingWindow2End"}, {"Ref": "WebMinSize"})
    assert up["TimeZone"] == {"Ref": "ScalingTimeZone"}


def test_warm_pool_is_optional_and_stopped(app_template):
    assert "WarmPool" not in resources(app_template)
    pool = props(resources(app_template, WebWarmPool="true"), "WarmPool")
    assert pool["PoolState"] == "Stopped" and pool["InstanceReusePolicy"] == {"ReuseOnScaleIn": True}


def test_bootstrap_signals_only_nodes_entering_service():
    # A warm-pool node is set up when it warms and signals when it enters service (the systemd unit).
    text = bootstrap.read("moodle-node-ready.sh")
    signal = text[text.index("signal() {") : text.index("fail() {")]
    assert "[[ $target_state == InService ]] || return 0" in signal
    assert "autoscaling/target-lifecycle-state" in text


def test_user_data_is_shellcheck_clean():
    text = bootstrap.read("user-data.sh")
    samples = {
        "AWS::StackName": "moodle-app",
        "AWS::Region": "eu-west-1",
        "SignalResource": "Group",
        "InitResource": "WebLaunchTemplate",
        "LifecycleHook": "moodle-node-ready",
        "NodeFilesDigest": "0" * 64,
        "NodeInputs": "5.0.1 | moodle | arn:aws:secretsmanager:eu-west-1:1:secret:x",
    }
    rendered = bootstrap.SUB_PLACEHOLDER.sub(lambda m: samples[m.group(1)], text)
    result = subprocess.run(
        [tool("shellcheck"), "-s", "bash", "-"], input=rendered, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, "")


# CloudFront and DNS ---------------------------------------------------------------------------------------


def distribution(template: dict[str, Any], **given: str) -> dict[str, Any]:
    return props(resources(template, **given), "Distribution")["DistributionConfig"]


@pytest.mark.parametrize("given", [NO_DOMAIN, CREATED_CERTIFICATE])
def test_cloudfront_serves_https_http3_and_caches_nothing_dynamic(app_template, given):
    config = distribution(app_template, **given)
    assert config["HttpVersion"] == "http2and3" and config["IPV6Enabled"] is True
    default = config["DefaultCacheBehavior"]
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert (
        default["CachePolicyId"] == edge.CACHING_DISABLED
        and default["OriginRequestPolicyId"] == edge.ALL_VIEWER
    )
    assert default["Compress"] is True and "POST" in default["AllowedMethods"]
    # The origin's protocol, for every combination: tests/test_origin_access.py.
    (origin,) = config["Origins"]
    assert origin["VpcOriginConfig"]["OriginReadTimeout"] == edge.ORIGIN_READ_TIMEOUT
    (header,) = origin["OriginCustomHeaders"]
    assert header["HeaderName"] == listeners.ORIGIN_HEADER
    assert header["HeaderValue"]["Fn::Sub"][0].startswith("{{resolve:secretsmanager:")


def test_cloudfront_uses_a_us_east_1_certificate_with_tls_1_2(app_template):
    config = distribution(app_template, **CREATED_CERTIFICATE, CloudFrontCertificateArn=US_EAST_1_CERTIFICATE)
    assert config["ViewerCertificate"] == {
        "AcmCertificateArn": {"Ref": "CloudFrontCertificateArn"},
        "SslSupportMethod": "sni-only",
        "MinimumProtocolVersion": "TLSv1.2_2021",
    }
    assert config["Aliases"] == [{"Ref": "DomainName"}]
    # In us-east-1 (no CloudFront ARN given) the regional certificate is reused.
    reused = distribution(app_template, **CREATED_CERTIFICATE)["ViewerCertificate"]["AcmCertificateArn"]
    assert reused == {"Ref": "SiteCertificate"}
    assert distribution(app_template)["ViewerCertificate"] == {"CloudFrontDefaultCertificate": True}


def test_only_static_handlers_are_cached_and_pluginfile_is_not(app_template):
    config = distribution(app_template)
    patterns = [b["PathPattern"] for b in config["CacheBehaviors"]]
    assert patterns == list(edge.STATIC_PATHS)
    assert not [p for p in patterns if "pluginfile" in p]
    for behavior in config["CacheBehaviors"]:
        assert behavior["CachePolicyId"] == {"Ref": "StaticCachePolicy"} and behavior["Compress"] is True
    key = props(app_template["Resources"], "StaticCachePolicy")["CachePolicyConfig"]
    parameters = key["ParametersInCacheKeyAndForwardedToOrigin"]
    assert parameters["QueryStringsConfig"] == {"QueryStringBehavior": "all"}
    assert parameters["CookiesConfig"] == {"CookieBehavior": "none"}


def test_dns_aliases_point_at_cloudfront_or_the_load_balancer(app_template):
    with_cloudfront = resources(app_template, **CREATED_CERTIFICATE)
    assert props(with_cloudfront, "SiteAliasIpv4")["AliasTarget"]["HostedZoneId"] == edge.CLOUDFRONT_ZONE
    assert props(with_cloudfront, "SiteAliasIpv6")["Type"] == "AAAA"
    without = resources(app_template, **WITHOUT_CLOUDFRONT)
    target = props(without, "SiteAliasIpv4")["AliasTarget"]
    assert target["DNSName"] == {"Fn::GetAtt": ["LoadBalancer", "DNSName"]}
    assert "SiteAliasIpv6" not in without, "the load balancer has no IPv6 address to alias"
    assert "SiteAliasIpv4" not in resources(app_template, **GIVEN_CERTIFICATE)


def test_outputs(app_template):
    assert {
        app.SITE_URL,
        app.SITE_TARGET,
        app.CLOUDFRONT_DOMAIN,
        app.LOAD_BALANCER_DNS,
        app.AUTO_SCALING_GROUP,
        app.LOAD_BALANCER_FULL_NAME,
        app.TARGET_GROUP_FULL_NAME,
        app.ADMIN_SECRET_OUTPUT,
        moodle.RELEASE_OUTPUT,
        mail.FEEDBACK_TOPIC_OUTPUT,
        mail.CREDENTIALS_OUTPUT,
    } == set(app_template["Outputs"])
    conditions = evaluate_conditions(app_template, CREATED_CERTIFICATE)
    url = resolve_ifs(app_template["Outputs"][app.SITE_URL]["Value"], conditions)
    assert url == {"Fn::Sub": ["https://${Host}", {"Host": {"Ref": "DomainName"}}]}


# Validation -----------------------------------------------------------------------------------------------

SIZES = {"WebMinSize": "2", "WebDesiredCapacity": "2", "WebMaxSize": "6", "ScalingTimeZone": "Europe/Madrid"}


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"WebMinSize": "4", "WebDesiredCapacity": "3"}, "WebDesiredCapacity", "between WebMinSize and WebMaxSize"),
        ({"WebMinSize": "6", "WebDesiredCapacity": "6"}, "WebMaxSize", "must exceed WebMinSize"),
        ({"ScalingWindow1Start": "0 7 * * *"}, "ScalingWindow1End", "needs both"),
        ({"ScalingWindow1Start": "0 25 * * *", "ScalingWindow1End": "0 9 * * *"}, "ScalingWindow1Start", "'25' is not in 0-23"),
        ({"ScalingWindow1Start": "0 7 * *", "ScalingWindow1End": "0 9 * * *"}, "ScalingWindow1Start", "has 4 fields"),
        (
            {"ScalingWindow1Start": "0 7 * * *", "ScalingWindow1End": "0 9 * * *", "ScalingWindow1MinSize": "3", "ScalingWindow1DesiredCapacity": "9"},
            "ScalingWindow1DesiredCapacity",
            "between ScalingWindow1MinSize and WebMaxSize",
        ),
        ({"ScalingWindow1Start": "0 7 * * *", "ScalingWindow1End": "0 9 * * *", "ScalingTimeZone": "Mars/Olympus"}, "ScalingTimeZone", "not an IANA"),
    ],
)  # fmt: skip
def test_web_tier_validations(overrides, key, reason):
    defaults = {
        p.name: str(p.parameter.Default)
        for p in web_tier.PARAMETERS
        if p.parameter.Type != "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    }
    run_checks(web_tier.CHECKS, defaults | SIZES, "p.yaml")
    with pytest.raises(InputError, match=f"p.yaml: {re.escape(key)}: .*{re.escape(reason)}"):
        run_checks(web_tier.CHECKS, defaults | SIZES | overrides, "p.yaml")


GOOD_WINDOW = {"start": "30 7 * * 1-5", "end": "0 14 * * 1-5", "min_size": 4, "desired_capacity": 6}


def test_schedule_list_becomes_window_parameters():
    values = scaling_windows.expand_schedule([GOOD_WINDOW], "p.yaml")
    assert values == {
        "ScalingWindow1Start": "30 7 * * 1-5",
        "ScalingWindow1End": "0 14 * * 1-5",
        "ScalingWindow1MinSize": 4,
        "ScalingWindow1DesiredCapacity": 6,
    }
    assert scaling_windows.expand_schedule([], "p.yaml") == {}


@pytest.mark.parametrize(
    ("entries", "key", "reason"),
    [
        ("weekdays", "ScheduledScaling", "must be a list"),
        ([GOOD_WINDOW] * 4, "ScheduledScaling", "at most 3 windows"),
        ([{**GOOD_WINDOW, "zone": "UTC"}], "ScheduledScaling[0]", "unknown zone"),
        ([{"start": "0 7 * * *"}], "ScheduledScaling[0]", "missing desired_capacity, end, min_size"),
        ([{**GOOD_WINDOW, "end": "every day"}], "ScheduledScaling[0].end", "has 2 fields"),
        ([GOOD_WINDOW, {**GOOD_WINDOW, "min_size": "four"}], "ScheduledScaling[1].min_size", "whole number"),
    ],
)
def test_schedule_list_errors_name_the_entry(entries, key, reason):
    with pytest.raises(InputError, match=f"p.yaml: {re.escape(key)}: .*{reason}"):
        scaling_windows.expand_schedule(entries, "p.yaml")
