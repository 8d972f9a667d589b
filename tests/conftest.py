"""Shared fixtures: the templates as data, paths, and the tools installed beside this interpreter."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import cfn_flip
import pytest
from moto.server import ThreadedMotoServer

from moodle_cfn import master, params, publish
from moodle_cfn.layers import LAYERS, all_checks, all_expanders, app, network
from tests.rehearsal import child_parameters, deploy, layer_exists, with_placeholders

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = ROOT / "templates"
PARAMS_DIR = ROOT / "params"
PARAMS_FILES = sorted(PARAMS_DIR.glob("*.yaml"))
REHEARSAL_REGION = "us-east-1"
REHEARSAL_BUCKET = "rehearsal-templates"
REHEARSAL_PREFIX = "moodle-cfn/"
# What each layer's template becomes for moto (see tests/rehearsal.py for why).
REHEARSAL_TEMPLATES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "network": lambda template: template,
    "security": lambda template: template,
    "data": lambda template: with_placeholders(
        template,
        {
            "DatabaseClusterParameterGroup",
            "DatabaseCluster",
            "DatabaseInstance1",
            "DatabaseInstance2",
            "DatabaseAppUserSecret",
            # moto would run the custom resource's function in Docker, which CI does not have.
            "DatabaseRoleFunction",
            "DatabaseAppUser",
            # moto has no Secrets Manager rotation schedules; the permission names the placeholder function.
            "DatabaseAppUserRotation",
            "DatabaseRoleRotationPermission",
        },
        {("FileSystem", "Arn"), ("FileSystemAccessPoint", "Arn"), ("FileSystemCodeAccessPoint", "Arn")},
    ),
    "app": lambda template: with_placeholders(
        template,
        # moto: no CloudFront (VPC origin and response headers policy included), ACM or Secrets Manager
        # resources; SecurityGroupIngress without SourcePrefixListId.
        {
            "Distribution",
            "LoadBalancerVpcOrigin",
            "SecurityHeadersPolicy",
            "StaticCachePolicy",
            "StaticOriginRequestPolicy",
            "OriginSecret",
            "MoodleAdminSecret",
            "SiteCertificate",
            "AlbFromCloudFront",
            # WAF: moto has no AWS::WAFv2 support.
            "CloudFrontWebAcl",
            "LoadBalancerWebAcl",
            "LoadBalancerWebAclAssociation",
            # moto has no SES resources nor SNS topic policies; the secret of the SES sender as above. What
            # moto does deploy of the e-mail resources (topic, user, key, DNS records) tests/test_mail.py
            # deploys with a hosted zone, and checks the rest against cfn-lint's resource schemas.
            "MailIdentity",
            "MailConfigurationSet",
            "MailFeedbackDestination",
            "MailFeedbackTopicPolicy",
            "MailCredentialsSecret",
        },
        # moto has no TargetGroupFullName attribute (the outputs would vanish with it).
        {("NodeTargetGroup", "TargetGroupFullName")},
    ),
    # moto ignores CloudWatch alarms and dashboards; the SNS topic and subscription are real.
    "monitoring": lambda template: template,
    # moto would run the custom resource's function in Docker; the role and log group are real.
    "protection": lambda template: with_placeholders(
        template, {"DeletionProtectionFunction", "ClusterDeletionProtection"}
    ),
    "cache": lambda template: with_placeholders(
        template,
        {
            name
            for name, resource in template["Resources"].items()
            if resource["Type"].startswith("AWS::ElastiCache::")
            or resource["Type"] == "AWS::SecretsManager::Secret"
        },
    ),
}


def tool(name: str) -> str:
    """Path of a console script installed in the same virtualenv as the running interpreter."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def network_template() -> dict[str, Any]:
    """The network template as plain data (exactly what is rendered to YAML)."""
    return json.loads(network.build().to_json())


@pytest.fixture(scope="session")
def app_template() -> dict[str, Any]:
    """The app template as plain data."""
    return json.loads(app.build().to_json())


@pytest.fixture(scope="session")
def master_template() -> dict[str, Any]:
    """The published master template as plain data."""
    return json.loads(master.build().to_json())


@pytest.fixture(scope="session")
def aws() -> Iterator[dict[str, Any]]:
    """A moto server on 127.0.0.1 at a free port, and boto3 client settings pointing at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    )
    saved = {k: os.environ.get(k) for k in names}
    # AWS_ENDPOINT_URL sends every boto3 client, the publish command's included, to moto.
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION=REHEARSAL_REGION,
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield {"endpoint_url": endpoint, "region_name": REHEARSAL_REGION}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def campus_network(aws: dict[str, Any], zone_count: int) -> dict[str, str]:
    """A VPC as a university already has it (made with the EC2 API, not by any stack): DNS on, one public,
    app and data subnet per AZ; returned as the Existing* parameters that point at it."""
    ec2 = boto3.client("ec2", **aws)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
        ec2.modify_vpc_attribute(VpcId=vpc, **{attribute: {"Value": True}})
    zones = [f"{REHEARSAL_REGION}{letter}" for letter in "abc"[:zone_count]]
    values = {"ExistingVpcId": vpc, "ExistingAvailabilityZoneNames": ",".join(zones)}
    for index, tier in enumerate(("Public", "App", "Data")):
        ids = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{16 * index + slot}.0/24", AvailabilityZone=zone)[
                "Subnet"
            ]["SubnetId"]
            for slot, zone in enumerate(zones)
        ]
        values[f"Existing{tier}SubnetIds"] = ",".join(ids)
    return values


def rehearsal_overrides(params_file: str, aws: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    """What a rehearsal adds to a params file: production gets a domain with a certificate, which moto's
    load balancer needs to exist in its ACM first; dev keeps CloudFront's own name; the existing-VPC file
    gets a VPC and subnets made in moto beforehand, in place of its example ids."""
    if given.get("ExistingVpcId"):
        # Its own SiteName: it shares one moto server with production.yaml, and names derived from it (log
        # groups, say) are fixed.
        return {**campus_network(aws, int(given["AvailabilityZoneCount"])), "SiteName": "campus"}
    if params_file != "production.yaml":
        return {}
    domain = "moodle.example.edu"
    certificate = boto3.client("acm", **aws).request_certificate(DomainName=domain, ValidationMethod="DNS")
    return {"DomainName": domain, "CertificateArn": certificate["CertificateArn"]}


@pytest.fixture(scope="session")
def rehearsal(aws, master_template) -> Callable[[str], dict[str, Any]]:
    """rehearsal("dev.yaml") -> {stack title: deployed stack}: the layers deployed in order, once per file."""
    deployed: dict[str, dict[str, Any]] = {}
    ssm = boto3.client("ssm", **aws)
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket=REHEARSAL_BUCKET)
    # Published with the real publish code; each layer is then deployed from its object in the bucket.
    location, _ = publish.publish(REHEARSAL_BUCKET, REHEARSAL_PREFIX, TEMPLATES_DIR)

    def published(layer_file: str) -> dict[str, Any]:
        key = f"{location.prefix}{layer_file}"
        text = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read().decode()
        return json.loads(cfn_flip.to_json(text))

    def read_ssm(name: str) -> str:
        return ssm.get_parameter(Name=name)["Parameter"]["Value"]

    def deploy_layers(params_file: str) -> dict[str, Any]:
        if params_file not in deployed:
            given = params.load(PARAMS_DIR / params_file, master_template, all_checks(), all_expanders())
            given |= rehearsal_overrides(params_file, aws, given)
            stacks: dict[str, Any] = {}
            deployed[params_file] = stacks  # filled as layers deploy; a failed layer is not retried
            for layer in LAYERS:
                if not layer_exists(master_template, layer, given, REHEARSAL_REGION):
                    continue  # as in the master: no network stack in an existing VPC, no security stack without
                outputs = {title: stack["outputs"] for title, stack in stacks.items()}
                parameters = child_parameters(
                    master_template, layer, given, outputs, read_ssm, REHEARSAL_REGION
                )
                template = REHEARSAL_TEMPLATES[layer.name](published(layer.file_name))
                stack_name = f"{params_file.removesuffix('.yaml')}-{layer.name}"
                stacks[layer.stack_title] = {
                    **deploy(aws, stack_name, template, parameters),
                    "parameters": parameters,
                    "template": template,
                }
        return deployed[params_file]

    return deploy_layers


# What an operator replaces in a copy of params/production.yaml before the first deploy.
PRODUCTION_EDITS = {
    "MoodleAdminEmail": "moodle-admins@university.edu",
    "AlarmEmail": "ops@university.edu",
    "TemplatesBucketName": "university-moodle-cfn-templates",
}


def params_copy(path: Path, edits: dict[str, Any], removed: tuple[str, ...] = ()) -> Path:
    """A copy of params/production.yaml (or dev.yaml) with keys set or removed, written to `path`."""
    import yaml

    source = PARAMS_DIR / ("dev.yaml" if "dev" in path.name else "production.yaml")
    document = yaml.safe_load(source.read_text())
    document.update(edits)
    for key in removed:
        document.pop(key, None)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def my_site(tmp_path) -> Path:
    """params/production.yaml as an operator edits it: the three example values replaced."""
    return params_copy(tmp_path / "my-site.yaml", PRODUCTION_EDITS)
