"""parliament (duo-labs/parliament) on every IAM policy document of every template, for the defaults and for
every variant's choices: zero findings, or a finding listed in SUPPRESSED with the reason it does not apply.

parliament reads plain JSON, so each document's intrinsic functions are resolved first: Fn::If for the
parameter values, Ref and Fn::GetAtt to example ARNs of the right shape for their resource (parliament
checks that a statement's resources fit its actions' resource types)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cfn_flip
import pytest
from parliament import analyze_policy_string

from tests.cfn_eval import active_resources
from tests.node_rig.cfn_init import resolve
from tests.variants import CUSTOMER_KEY, VARIANTS

TEMPLATES = sorted((Path(__file__).resolve().parents[1] / "templates").glob("*.yaml"))
POLICY_KEYS = {
    "PolicyDocument",
    "AssumeRolePolicyDocument",
    "FileSystemPolicy",
    "KeyPolicy",
    "ResourcePolicy",
}
ACCOUNT, REGION = "123456789012", "us-east-1"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:example-AbCdEf"
# Choices that make the conditional statements exist, beyond tests/variants.py's.
CHOICES = {
    "defaults": {},
    **VARIANTS,
    "code-bundle-and-plugins": {
        "MoodleCodeS3Uri": "s3://example-bucket/moodle-5.1.3.tar.gz",
        "MoodlePluginsS3Prefix": "s3://example-bucket/plugins/",
        "DataKmsKeyArn": CUSTOMER_KEY,
    },
}
# (finding's start, document location pattern, why it does not apply to that document).
SUPPRESSED: tuple[tuple[str, str, str], ...] = (
    ("MALFORMED: Statement contains neither Resource nor NotResource", r"/AssumeRolePolicyDocument$",
     "a role's trust policy has no Resource element (IAM User Guide, 'Role trust policy'); parliament reads "
     "every document as an identity policy, and checks the trust policy's Principal before this"),
    ("RESOURCE_STAR: ['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite']",
     r"^data/FileSystem/FileSystemPolicy$",
     "a file-system policy is a resource policy: '*' is the one file system it is attached to (it cannot "
     "name its own ARN), and the grant is limited to clients that come through its mount targets"),
)  # fmt: skip

PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::StackName": "moodle",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/moodle/00000000-0000-4000-8000-000000000000",
    "AWS::URLSuffix": "amazonaws.com",
}
# An example value of the right shape for a parameter by the end of its name, for a resource by its type
# (Ref), and for a GetAtt by (type, attribute).
BY_PARAMETER_SUFFIX = {
    "SecretArn": SECRET,
    "FileSystemArn": f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/fs-0example",
    "AccessPointArn": f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/fsap-0example",
    "KmsKeyArn": CUSTOMER_KEY,
}
BY_REF_TYPE = {
    "AWS::SecretsManager::Secret": SECRET,
    "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:example-{{title}}",
    "AWS::SES::ConfigurationSet": "example-{title}",
}
BY_GETATT = {
    ("AWS::Logs::LogGroup", "Arn"): f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/example/{{title}}:*",
    ("AWS::S3::Bucket", "Arn"): "arn:aws:s3:::example-{title}",
    ("AWS::RDS::DBCluster", "DBClusterArn"): f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:example",
    ("AWS::RDS::DBCluster", "MasterUserSecret.SecretArn"): SECRET,
}


def referenced(value: Any) -> set[str]:
    """The names a value's Ref, Fn::GetAtt ('Resource.Attribute') and Fn::Sub read."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= referenced(item)
    elif isinstance(value, dict):
        if set(value) == {"Ref"}:
            found.add(value["Ref"])
        elif set(value) == {"Fn::GetAtt"}:
            found.add(".".join(value["Fn::GetAtt"]))
        elif set(value) == {"Fn::Sub"}:
            text, local = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
            found |= {m for m in re.findall(r"\$\{(?!!)([A-Za-z0-9:._]+)\}", text) if m not in local}
            found |= referenced(local)
        else:
            for item in value.values():
                found |= referenced(item)
    return found


def example(name: str, template: dict[str, Any], values: dict[str, str]) -> str:
    """An example value for a name a policy reads; an unknown kind of name fails (add it above)."""
    if name in PSEUDO:
        return PSEUDO[name]
    if name in template.get("Parameters", {}):
        given = values.get(name, str(template["Parameters"][name].get("Default", "")))
        suffix = next((s for s in BY_PARAMETER_SUFFIX if name.endswith(s)), None)
        return given or (BY_PARAMETER_SUFFIX[suffix] if suffix else f"example-{name.lower()}")
    title, _, attribute = name.partition(".")
    kind = template["Resources"][title]["Type"]
    shape = BY_GETATT[(kind, attribute)] if attribute else BY_REF_TYPE[kind]
    return shape.format(title=title.lower())


def policy_documents(value: Any, where: str) -> list[tuple[str, Any]]:
    """(location, document) of every policy document under `value`."""
    if isinstance(value, list):
        return [
            found for index, item in enumerate(value) for found in policy_documents(item, f"{where}/{index}")
        ]
    if not isinstance(value, dict):
        return []
    documents = []
    for key, item in value.items():
        if key in POLICY_KEYS:
            documents.append((f"{where}/{key}", item))
        else:
            documents.extend(policy_documents(item, f"{where}/{key}"))
    return documents


def find_in_map(value: Any, mappings: dict[str, Any]) -> Any:
    """`value` with each Fn::FindInMap of literal keys looked up."""
    if isinstance(value, list):
        return [find_in_map(item, mappings) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Fn::FindInMap"}:
        name, first, second = value["Fn::FindInMap"]
        return mappings[name][PSEUDO.get(first.get("Ref"), first) if isinstance(first, dict) else first][
            second
        ]
    return {key: find_in_map(item, mappings) for key, item in value.items()}


def rendered_documents(path: Path, values: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Every policy document of the template's resources for `values`, as plain JSON."""
    template = json.loads(cfn_flip.to_json(path.read_text()))
    given = {k: v for k, v in values.items() if k in template.get("Parameters", {})}
    documents = []
    for title, resource in active_resources(template, given).items():
        for location, document in policy_documents(resource.get("Properties", {}), f"{path.stem}/{title}"):
            document = find_in_map(document, template.get("Mappings", {}))
            names = {name: example(name, template, given) for name in referenced(document)}
            documents.append((location, resolve(document, names)))
    return documents


def findings(document: dict[str, Any]) -> list[str]:
    policy = analyze_policy_string(json.dumps(document), include_community_auditors=True)
    return [f"{f.issue}: {f.detail}" for f in policy.findings]


@pytest.mark.parametrize("choice", sorted(CHOICES))
def test_parliament_finds_nothing_in_any_policy(choice: str) -> None:
    reported = []
    for path in TEMPLATES:
        for location, document in rendered_documents(path, CHOICES[choice]):
            assert document, location
            for finding in findings(document):
                if not any(
                    finding.startswith(start) and re.search(where, location) for start, where, _ in SUPPRESSED
                ):
                    reported.append(f"{location}: {finding}")
    assert not reported, "\n".join(reported)


def test_the_lint_reads_every_kind_of_policy_document() -> None:
    """The walk finds the documents it must (so an empty result is not a pass by accident)."""
    locations = {
        location for path in TEMPLATES for location, _ in rendered_documents(path, CHOICES["defaults"])
    }
    for expected in ("app/WebInstanceRole/Policies/0/PolicyDocument", "data/FileSystem/FileSystemPolicy",
                     "data/DatabaseRoleFunctionRole/Policies/0/PolicyDocument",
                     "protection/DeletionProtectionFunctionRole/Policies/0/PolicyDocument",
                     "network/FlowLogRole/AssumeRolePolicyDocument"):  # fmt: skip
        assert expected in locations, sorted(locations)
