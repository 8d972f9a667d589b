"""The database-role function and its resources: no Data API anywhere, the function in the VPC with its own
security group, the rotation schedule; SCRAM and SASLprep against the RFCs' own examples. Against a real
PostgreSQL: tests/node_rig/rehearse_database_role.py (`make rehearse-database-role`)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from moodle_cfn import functions, master
from moodle_cfn.functions import database_role as fn
from moodle_cfn.layers import LAYERS, database_role
from moodle_cfn.layers.security_groups import DATABASE_ROLE_FUNCTION_SG, DATABASE_SG, POSTGRES_PORT


@pytest.fixture(scope="module")
def templates() -> dict[str, dict[str, Any]]:
    built = {layer.name: json.loads(layer.build().to_json()) for layer in LAYERS}
    built["master"] = json.loads(master.build().to_json())
    return built


def test_no_template_enables_or_allows_the_data_api(templates):
    for name, template in templates.items():
        text = json.dumps(template)
        assert "rds-data" not in text and "EnableHttpEndpoint" not in text, name


def test_the_function_runs_in_the_app_subnets_behind_its_own_security_group(templates):
    data = templates["data"]["Resources"]
    function = data[database_role.FUNCTION_TITLE]["Properties"]
    assert function["VpcConfig"] == {
        "SubnetIds": {"Ref": "AppSubnetIds"},
        "SecurityGroupIds": [{"Ref": DATABASE_ROLE_FUNCTION_SG.id_output}],
    }
    assert set(function["Environment"]["Variables"]) == {
        "MasterSecretArn",
        "Host",
        "Port",
        "Database",
        "OwnerRole",
    }
    network = templates["network"]["Resources"]
    egress = network[DATABASE_ROLE_FUNCTION_SG.title]["Properties"]["SecurityGroupEgress"]
    assert sorted((rule["FromPort"], "CidrIp" in rule) for rule in egress) == [
        (443, True),
        (POSTGRES_PORT, False),
    ]
    ingress = network[f"{DATABASE_SG.key}From{DATABASE_ROLE_FUNCTION_SG.key}Port{POSTGRES_PORT}"][
        "Properties"
    ]
    assert ingress["SourceSecurityGroupId"] == {"Ref": DATABASE_ROLE_FUNCTION_SG.title}


def test_the_function_role_rotates_only_the_app_secret_and_reads_only_the_master_one(templates):
    role = templates["data"]["Resources"]["DatabaseRoleFunctionRole"]["Properties"]
    text = json.dumps(role)
    assert "rds:" not in text and "rds-data" not in text
    statements = role["Policies"]["Fn::If"][2][0]["PolicyDocument"]["Statement"]
    writes = [s for s in statements if "secretsmanager:PutSecretValue" in s["Action"]]
    assert [w["Resource"] for w in writes] == [[{"Ref": "DatabaseAppUserSecret"}]]


def test_the_app_secret_rotates_through_the_function_after_the_roles_exist(templates):
    resources = templates["data"]["Resources"]
    schedule = resources[database_role.ROTATION_TITLE]
    assert schedule["Properties"]["RotationLambdaARN"] == {
        "Fn::GetAtt": [database_role.FUNCTION_TITLE, "Arn"]
    }
    assert schedule["Properties"]["RotateImmediatelyOnUpdate"] is False
    assert database_role.ROLE_RESOURCE_TITLE in schedule["DependsOn"]
    permission = resources["DatabaseRoleRotationPermission"]["Properties"]
    assert permission["Principal"] == "secretsmanager.amazonaws.com"
    assert permission["SourceArn"] == {"Ref": "DatabaseAppUserSecret"}
    custom = resources[database_role.ROLE_RESOURCE_TITLE]["Properties"]
    assert custom["OwnerRole"] == database_role.OWNER_ROLE and "ClusterArn" not in custom


def test_the_inline_source_compiles_within_its_budget():
    source = functions.read("database_role.py")
    compile(source, "index.py", "exec")
    assert len(source) <= functions.ZIPFILE_LIMIT


def test_scram_sha_256_matches_the_rfc_7677_example():
    """RFC 7677 section 3: user "user", password "pencil"."""
    first_bare = b"n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final, expected = fn.scram_client_final("pencil", first_bare, server_first, b"n,,")
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert expected == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_a_server_nonce_that_does_not_extend_ours_is_refused():
    with pytest.raises(RuntimeError, match="nonce"):
        fn.scram_client_final("pencil", b"n=,r=abc", b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", b"n,,")


@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        ("I\u00adX", b"IX"),  # RFC 4013 section 3: soft hyphen mapped to nothing
        ("user", b"user"),
        ("\u00aa", b"a"),  # NFKC
        ("\u2168", b"IX"),  # NFKC
        ("a\u00a0b", b"a b"),  # non-ASCII space mapped to space
        ("\u0007bell", "\u0007bell".encode()),  # prohibited: used as is, as PostgreSQL does
    ],
)
def test_saslprep_follows_rfc_4013(password, prepared):
    assert fn.saslprep(password) == prepared


def test_the_verifier_is_postgresqls_scram_format():
    salt = b"0123456789abcdef"
    text = fn.verifier("pencil", salt)
    head, keys = text.split("$", 1)[1].split("$")
    assert head == f"4096:{base64.b64encode(salt).decode()}"
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    client_key, server_key = fn.scram_keys("pencil", salt, 4096)
    assert server == server_key and len(stored) == 32 and stored != client_key


def test_the_alternate_login_role_toggles():
    assert fn.other_login("moodle") == "moodle_clone"
    assert fn.other_login("moodle_clone") == "moodle"


class CfnResponse:
    """The cfnresponse module CloudFormation provides to inline code, recording what the handler sends."""

    SUCCESS, FAILED = "SUCCESS", "FAILED"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, str]] = []

    def send(self, event, context, status, data, physical_id, reason=None) -> None:
        self.sent.append((status, reason, physical_id))


@pytest.fixture
def handler_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CfnResponse, dict[str, str]]]:
    """moto's Secrets Manager as boto3's, the app and master secrets in it, and cfnresponse."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    response = CfnResponse()
    monkeypatch.setitem(sys.modules, "cfnresponse", response)
    with mock_aws():
        secrets = boto3.client("secretsmanager")
        app = json.dumps({"username": "moodle", "password": "app-pass-1"})
        master = json.dumps({"username": "master", "password": "master-pass-1"})
        properties = {
            "AppSecretArn": secrets.create_secret(Name="app", SecretString=app)["ARN"],
            "MasterSecretArn": secrets.create_secret(Name="master", SecretString=master)["ARN"],
            # Nothing listens on port 1: the login fails as an unreachable cluster would.
            "Host": "127.0.0.1",
            "Port": "1",
            "Database": "moodle",
            "OwnerRole": database_role.OWNER_ROLE,
        }
        yield response, properties


def test_a_delete_reports_success_without_touching_the_database(handler_world):
    response, properties = handler_world
    fn.handler({"RequestType": "Delete", "ResourceProperties": properties}, None)
    assert response.sent == [("SUCCESS", None, "moodle-database-role")]


def test_a_failed_create_is_reported_in_one_line_without_a_password(handler_world):
    response, properties = handler_world
    fn.handler({"RequestType": "Create", "ResourceProperties": properties}, None)
    ((status, reason, physical_id),) = response.sent
    assert status == "FAILED" and physical_id == "moodle-database-role"
    assert "ConnectionRefusedError" in reason and "\n" not in reason
    assert "app-pass-1" not in reason and "master-pass-1" not in reason


@pytest.mark.parametrize("where", [{}, {"network_reason": "why", "vpc": "somewhere"}])
def test_a_function_is_either_outside_the_vpc_with_a_reason_or_in_it(where):
    from troposphere import Template

    from moodle_cfn.custom_resource_function import add_custom_resource_function

    with pytest.raises(ValueError, match="either network_reason"):
        add_custom_resource_function(
            Template(), "X", source="database_role.py", description="x", policies=lambda _: [], timeout=1,
            tag="x", **where,
        )  # fmt: skip
