"""Builds of the templates with other parameter choices as defaults.

checkov (and some cfn-lint rules) evaluate Conditions with the parameters' defaults, so a resource that
exists only for a non-default choice (valkey caches, a customer key, Serverless v2, a third AZ) is never
scanned in the committed templates. Each variant here re-renders every template with other defaults, so
every choice an operator can make goes through the same gates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moodle_cfn import master
from moodle_cfn.layers import LAYERS

CUSTOMER_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DOMAIN = "moodle.example.edu"
ZONE = "Z0123456789ABCDEFGHIJ"
US_EAST_1_CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
REGIONAL_CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/66666666-7777-8888-9999-000000000000"
WEB_ACL = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/moodle/abcdef01-2345-6789-abcd-ef0123456789"

VARIANTS: dict[str, dict[str, str]] = {
    "valkey-caches": {"SessionCacheEngine": "valkey", "ApplicationCacheEngine": "valkey"},
    "mixed-caches": {"SessionCacheEngine": "valkey", "ApplicationCacheEngine": "memcached"},
    "customer-key": {"DataKmsKeyArn": CUSTOMER_KEY, "SessionCacheEngine": "valkey"},
    "serverless-three-azs": {
        "DatabaseCapacityMode": "serverless-v2",
        "AvailabilityZoneCount": "3",
        "NatGatewayMode": "per-az",
        "SessionCacheNodes": "3",
        "ApplicationCacheNodes": "3",
    },
    "single-nat-provisioned-efs-no-waf": {
        "NatGatewayMode": "single",
        "FileSystemThroughputMode": "provisioned",
        "EnableWaf": "false",
    },
    # No network stack: the security stack builds the groups in the given VPC, no NAT alarms.
    "existing-vpc": {
        "ExistingVpcId": "vpc-0a1b2c3d4e5f60718",
        "ExistingPublicSubnetIds": "subnet-0a1b2c3d4e5f60001,subnet-0a1b2c3d4e5f60002",
        "ExistingAppSubnetIds": "subnet-0a1b2c3d4e5f60011,subnet-0a1b2c3d4e5f60012",
        "ExistingDataSubnetIds": "subnet-0a1b2c3d4e5f60021,subnet-0a1b2c3d4e5f60022",
        "ExistingAvailabilityZoneNames": "us-east-1a,us-east-1b",
    },
    "no-cloudfront-own-domain": {"EnableCloudFront": "false", "DomainName": DOMAIN, "HostedZoneId": ZONE},
    "cloudfront-own-domain": {
        "DomainName": DOMAIN,
        "HostedZoneId": ZONE,
        "CloudFrontCertificateArn": US_EAST_1_CERTIFICATE,
        "CloudFrontWebAclArn": WEB_ACL,
    },
    "existing-certificate-intel-warm-pool-windows": {
        "DomainName": DOMAIN,
        "CertificateArn": REGIONAL_CERTIFICATE,
        "WebInstanceType": "m7i.large",
        "WebWarmPool": "true",
        "ScalingWindow1Start": "30 7 * * 1-5",
        "ScalingWindow1End": "0 13 * * 1-5",
        "ScalingWindow2Start": "0 8 1 6 *",
        "ScalingWindow2End": "0 20 30 6 *",
    },
}


def with_defaults(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """`template` whose parameters named in `overrides` default to the given values."""
    changed = json.loads(json.dumps(template))
    for name, value in overrides.items():
        if name in changed.get("Parameters", {}):
            changed["Parameters"][name]["Default"] = value
    return changed


def write_variants(directory: Path) -> list[Path]:
    """Every variant's templates, one sub-directory per variant; returns the files written."""
    templates = {layer.file_name: layer.build().to_dict() for layer in LAYERS}
    templates["master.yaml"] = master.build().to_dict()
    written = []
    for variant, overrides in VARIANTS.items():
        (directory / variant).mkdir(parents=True)
        for name, template in templates.items():
            path = directory / variant / name.replace(".yaml", ".json")
            path.write_text(json.dumps(with_defaults(template, overrides), indent=1))
            written.append(path)
    return written
