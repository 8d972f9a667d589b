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
    "single-nat-provisioned-efs": {"NatGatewayMode": "single", "FileSystemThroughputMode": "provisioned"},
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
