"""Params files: the shipped ones pass; each kind of bad input is one clear line, exit 2, nothing written."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moodle_cfn import params
from moodle_cfn.cli import main
from moodle_cfn.errors import InputError
from moodle_cfn.layers import address_plan, all_checks, all_expanders
from tests.conftest import PARAMS_DIR, PARAMS_FILES

VALID_MINIMUM = "TemplatesBucketName: my-bucket\n"


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_shipped_params_files_are_valid(path, master_template):
    values = params.load(path, master_template, all_checks(), all_expanders())
    assert values["TemplatesBucketName"]


def test_production_spreads_over_three_azs_with_a_nat_each(master_template):
    values = params.load(PARAMS_DIR / "production.yaml", master_template, all_checks(), all_expanders())
    assert (values["AvailabilityZoneCount"], values["NatGatewayMode"]) == ("3", "per-az")


def test_dev_is_the_cheap_layout(master_template):
    values = params.load(PARAMS_DIR / "dev.yaml", master_template, all_checks(), all_expanders())
    assert (values["AvailabilityZoneCount"], values["NatGatewayMode"]) == ("2", "single")


BAD_INPUTS = {
    "unknown key": ("p.yaml", VALID_MINIMUM + "VpcCidrr: 10.0.0.0/16\n", "VpcCidrr", "did you mean 'VpcCidr'"),
    "list for a string": ("p.yaml", VALID_MINIMUM + "SiteName: [a, b]\n", "SiteName", "expected a single value"),
    "mapping for a string": ("p.yaml", VALID_MINIMUM + "SiteName: {a: 1}\n", "SiteName", "found a dict"),
    "text for a number": ("p.yaml", VALID_MINIMUM + "FlowLogRetentionDays: ninety\n", "FlowLogRetentionDays", "not a number"),
    "number outside allowed": ("p.yaml", VALID_MINIMUM + "FlowLogRetentionDays: 10\n", "FlowLogRetentionDays", "allowed values"),
    "value outside allowed": ("p.yaml", VALID_MINIMUM + "NatGatewayMode: none\n", "NatGatewayMode", "allowed values"),
    "unquoted number outside allowed": ("p.yaml", VALID_MINIMUM + "AvailabilityZoneCount: 4\n", "AvailabilityZoneCount", "'4'"),
    "pattern mismatch": ("p.yaml", VALID_MINIMUM + "VpcCidr: 10.0.0.0/8\n", "VpcCidr", "prefix length"),
    "bad octet": ("p.yaml", VALID_MINIMUM + "PublicSubnet1Cidr: 10.0.256.0/24\n", "PublicSubnet1Cidr", "IPv4 CIDR"),
    "empty value": ("p.yaml", VALID_MINIMUM + "SiteName:\n", "SiteName", "has no value"),
    "missing required key": ("p.yaml", "SiteName: moodle\n", "TemplatesBucketName", "requires this parameter"),
    "duplicate key": ("p.yaml", VALID_MINIMUM + "SiteName: a1\nSiteName: b1\n", "line 3", "duplicate key"),
    "broken yaml": ("p.yaml", VALID_MINIMUM + "SiteName: [unclosed\n", "line", "invalid YAML"),
    "top-level list": ("p.yaml", "- TemplatesBucketName\n", "p.yaml: expected a mapping", "found a list"),
    "empty file": ("p.yaml", "", "p.yaml: is empty", "expected a mapping"),
    "broken json": ("p.json", '{"TemplatesBucketName": "b",}', "line 1", "invalid JSON"),
    "duplicate json key": ("p.json", '{"SiteName": "a1", "SiteName": "b1"}', "p.json: invalid JSON", "duplicate key 'SiteName'"),
    "cross-check": ("p.yaml", VALID_MINIMUM + "AvailabilityZoneCount: 3\n", "SessionCacheNodes", "every Availability Zone"),
    "overlapping subnets": ("p.yaml", VALID_MINIMUM + "AppSubnet2Cidr: 10.0.16.0/20\n", "AppSubnet2Cidr", "overlaps AppSubnet1Cidr"),
    "rule violation": ("p.yaml", VALID_MINIMUM + "DomainName: moodle.example.edu\n", "rule DomainNeedsCertificate", "needs HostedZoneId"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("file_name", "text", "where", "reason"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS)
)
def test_bad_input_is_one_line_naming_file_key_and_reason(tmp_path, capsys, file_name, text, where, reason):
    path = tmp_path / file_name
    path.write_text(text)
    before = sorted(tmp_path.rglob("*"))

    for command in ("validate", "params"):
        assert main([command, str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.count("\n") == 1, err
        assert err.startswith(f"moodle-cfn: error: {path}"), err
        assert where in err and reason in err, err
        assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


def test_missing_file_and_directory(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"moodle-cfn: error: {tmp_path / 'nope.yaml'}: file not found\n"
    assert main(["params", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_non_utf8_file(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"SiteName: caf\xe9\n")
    assert main(["validate", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_values_are_normalised_to_cloudformation_text(master_template):
    document = {"TemplatesBucketName": "b-1", "FlowLogRetentionDays": 30, "AvailabilityZoneCount": 3}
    values = params.validate(document, master_template["Parameters"], "p.yaml")
    assert values == {
        "TemplatesBucketName": "b-1",
        "FlowLogRetentionDays": "30",
        "AvailabilityZoneCount": "3",
    }


def test_boolean_yaml_values_become_true_false():
    spec = {"Type": "String", "AllowedValues": ["true", "false"]}
    assert params.check_value("p", "K", True, spec) == "true"
    with pytest.raises(InputError, match="not a number"):
        params.check_value("p", "K", True, {"Type": "Number"})


def test_list_parameters_accept_lists_and_comma_strings():
    spec = {"Type": "CommaDelimitedList"}
    assert params.check_value("p", "K", ["a", "b"], spec) == "a,b"
    assert params.check_value("p", "K", "a, b", spec) == "a,b"
    with pytest.raises(InputError, match="every item must be a number"):
        params.check_value("p", "K", ["1", "x"], {"Type": "List<Number>"})


def test_number_bounds_and_string_lengths():
    with pytest.raises(InputError, match="below the minimum 2"):
        params.check_value("p", "K", 1, {"Type": "Number", "MinValue": 2})
    with pytest.raises(InputError, match="above the maximum 5"):
        params.check_value("p", "K", 6, {"Type": "Number", "MaxValue": 5})
    with pytest.raises(InputError, match="longer than 3"):
        params.check_value("p", "K", "abcd", {"Type": "String", "MaxLength": 3})
    with pytest.raises(InputError, match="shorter than 2"):
        params.check_value("p", "K", "a", {"Type": "String", "MinLength": 2})


def test_params_prints_aws_cli_json(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("TemplatesBucketName: my-bucket\nNatGatewayMode: single\nFlowLogRetentionDays: 30\n")
    assert main(["params", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"ParameterKey": "FlowLogRetentionDays", "ParameterValue": "30"},
        {"ParameterKey": "NatGatewayMode", "ParameterValue": "single"},
        {"ParameterKey": "TemplatesBucketName", "ParameterValue": "my-bucket"},
    ]


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("NatGatewayMode: [")
    result = subprocess.run(
        [sys.executable, "-m", "moodle_cfn", "validate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"moodle-cfn: error: {bad}: line 1") and result.stderr.count("\n") == 1


CIDR = address_plan.CIDR_PATTERN


@given(st.ip_addresses(v=4), st.integers(min_value=16, max_value=28))
def test_cidr_pattern_accepts_every_ipv4_network_from_16_to_28(address, prefix):
    network_address = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert re.fullmatch(CIDR, str(network_address))


@given(st.integers(min_value=256, max_value=999), st.integers(min_value=0, max_value=3))
def test_cidr_pattern_rejects_octets_over_255(octet, position):
    octets = ["10", "0", "0", "0"]
    octets[position] = str(octet)
    assert not re.fullmatch(CIDR, ".".join(octets) + "/24")


@given(st.integers(min_value=0, max_value=32).filter(lambda p: not 16 <= p <= 28))
def test_cidr_pattern_rejects_prefixes_outside_16_to_28(prefix):
    assert not re.fullmatch(CIDR, f"10.0.0.0/{prefix}")
