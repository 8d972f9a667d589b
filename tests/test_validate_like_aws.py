"""`moodle-cfn validate` (and the commands that deploy) refuse what AWS would refuse, each with one line:
Region rules when the Region is known, whole numbers, overlapping windows, --allow-replace names that are
not stateful resources, Regions that do not exist, negative cost assumptions, and a production file that
still holds the examples' placeholders or no alarm address."""

from __future__ import annotations

import pytest

from moodle_cfn.cli import main
from moodle_cfn.operator_checks import windows_overlap
from tests.conftest import PRODUCTION_EDITS, params_copy

DOMAIN = {"DomainName": "moodle.university.edu", "HostedZoneId": "Z0123456789ABCDEFGHIJ"}
CLOUDFRONT_RULE = (
    "rule CloudFrontCertificateInUsEast1: CloudFront only accepts certificates from us-east-1: outside "
    "us-east-1 give CloudFrontCertificateArn, a us-east-1 certificate for DomainName."
)


def error_of(argv: list[str], capsys) -> str:
    """The one line a refused command prints (exit 2, nothing on stdout)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    return captured.err.removeprefix("moodle-cfn: error: ").rstrip("\n")


def test_the_region_rule_is_checked_when_the_region_is_given(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    path = params_copy(tmp_path / "my-site.yaml", {**PRODUCTION_EDITS, **DOMAIN})
    assert error_of(["validate", str(path), "--region", "eu-west-1"], capsys) == f"{path}: {CLOUDFRONT_RULE}"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert error_of(["validate", str(path)], capsys) == f"{path}: {CLOUDFRONT_RULE}"
    monkeypatch.delenv("AWS_REGION")
    # In us-east-1 the stack's own certificate serves CloudFront; with no Region known, the rule waits.
    assert main(["validate", str(path), "--region", "us-east-1"]) == 0
    assert main(["validate", str(path)]) == 0
    assert "Region rules not checked" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"WebMinSize": 1.5}, "WebMinSize: 1.5 is not a whole number"),
        ({"WafRateLimit": 10000.5}, "WafRateLimit: 10000.5 is not a whole number"),
        ({"DatabaseCapacityMode": "serverless-v2", "DatabaseMinCapacity": 0.75},
         "DatabaseMinCapacity: 0.75 is not a multiple of 0.5 (ACUs come in halves)"),
        ({"DatabaseBackupWindow": "02:00-03:00"},
         "DatabaseBackupWindow: 02:00-03:00 (daily, UTC) overlaps the maintenance window sun:02:30-sun:03:30; "
         "RDS refuses that. Move one of them."),
    ],
)  # fmt: skip
def test_values_aws_would_refuse_are_refused(tmp_path, capsys, edits, message):
    path = params_copy(tmp_path / "my-site.yaml", {**PRODUCTION_EDITS, **edits})
    assert error_of(["validate", str(path)], capsys) == f"{path}: {message}"


def test_half_acus_and_windows_that_touch_are_accepted(tmp_path):
    path = params_copy(
        tmp_path / "my-site.yaml",
        {**PRODUCTION_EDITS, "DatabaseCapacityMode": "serverless-v2", "DatabaseMinCapacity": 1.5,
         "DatabaseBackupWindow": "01:30-02:30"},
    )  # fmt: skip
    assert main(["validate", str(path), "--region", "us-east-1"]) == 0


@pytest.mark.parametrize(
    ("backup", "maintenance", "overlap"),
    [
        ("01:00-02:00", "sun:02:30-sun:03:30", False),
        ("03:00-04:00", "sun:02:30-sun:03:30", True),
        ("23:30-00:30", "mon:00:00-mon:01:00", True),  # backup past midnight
        ("23:30-00:30", "sun:23:45-mon:00:15", True),  # maintenance past the end of the week
        ("05:00-06:00", "sun:23:45-mon:00:15", False),
        ("10:00-10:30", "wed:10:30-wed:11:00", False),  # back to back
    ],
)
def test_windows_overlap_anywhere_in_the_week(backup, maintenance, overlap):
    assert windows_overlap(backup, maintenance) is overlap


def test_a_production_file_with_the_examples_values_is_refused_with_the_key(tmp_path, capsys):
    shipped = "params/production.yaml"
    assert error_of(["validate", shipped], capsys) == (
        f"{shipped}: MoodleAdminEmail: 'admin@example.invalid' uses a domain reserved for examples (RFC 2606); "
        "replace it with your own (Environment: production)"
    )
    bucket = params_copy(
        tmp_path / "b.yaml", {**PRODUCTION_EDITS, "TemplatesBucketName": "example-moodle-cfn-templates"}
    )
    assert error_of(["validate", str(bucket)], capsys) == (
        f"{bucket}: TemplatesBucketName: 'example-moodle-cfn-templates' is the example's placeholder; replace it "
        "with your own (Environment: production)"
    )
    silent = params_copy(tmp_path / "c.yaml", {**PRODUCTION_EDITS, "AlarmEmail": ""})
    assert error_of(["validate", str(silent)], capsys) == (
        f"{silent}: AlarmEmail: is empty: nobody would hear the alarms of a production site; give an operations "
        "address (Environment: production)"
    )
    # The same values in a development file are fine, and the JSON conversion (taskcat) never refuses them.
    assert main(["validate", "params/dev.yaml"]) == 0
    assert main(["params", shipped]) == 0


def test_an_unknown_environment_is_refused(tmp_path, capsys):
    path = params_copy(tmp_path / "my-site.yaml", {**PRODUCTION_EDITS, "Environment": "prod"})
    assert error_of(["validate", str(path)], capsys) == (
        f"{path}: Environment: 'prod' is not one of production, staging, development"
    )


def test_allow_replace_names_a_stateful_resource_of_the_templates(my_site, capsys):
    argv = ["deploy", str(my_site), "--stack", "s", "--bucket", "b-templates", "--allow-replace"]
    assert error_of([*argv, "DatabaseClustr"], capsys) == (
        "DatabaseClustr: --allow-replace: not a stateful resource of the templates (only those need allowing); "
        "did you mean DatabaseCluster?"
    )
    assert error_of([*argv, "WebLaunchTemplate"], capsys).startswith(
        "WebLaunchTemplate: --allow-replace: not a stateful resource of the templates"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["quick-create-url", "{site}", "--bucket", "b-templates", "--region", "eu-wst-1"],
        ["validate", "{site}", "--region", "eu-wst-1"],
        ["cost", "{site}", "--region", "eu-wst-1"],
        ["status", "--stack", "s", "--region", "eu-wst-1"],
    ],
)
def test_a_region_must_exist(my_site, capsys, argv):
    argv = [str(my_site) if a == "{site}" else a for a in argv]
    assert error_of(argv, capsys) == (
        "eu-wst-1: --region: not an AWS Region this version of botocore knows; did you mean eu-west-1?"
    )


@pytest.mark.parametrize(
    ("option", "value"), [("--transfer-gb", "-5000"), ("--hours", "-1"), ("--hours", "nan")]
)
def test_cost_refuses_negative_assumptions(capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        main(["cost", "params/dev.yaml", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"moodle-cfn: error: argument {option}: must be a number of 0 or more, not {value} (see moodle-cfn --help)\n"
    )
