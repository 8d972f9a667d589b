"""`moodle-cfn publish` and `quick-create-url`: uploads verified against moto's S3, links, and clear errors."""

from __future__ import annotations

import shutil
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from moodle_cfn import publish
from moodle_cfn.build import build_all
from moodle_cfn.cli import main
from moodle_cfn.errors import InputError
from tests.conftest import PARAMS_DIR, TEMPLATES_DIR


def link_query(url: str) -> dict[str, str]:
    """The quick-create link's parameters (they sit in the URL fragment, after the console route)."""
    fragment = urlsplit(url).fragment
    route, _, query = fragment.partition("?")
    assert route == "/stacks/quickcreate"
    return dict(parse_qsl(query))


def test_publish_uploads_every_template_and_verifies_it(aws, capsys):
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="publish-test")
    assert (
        main(
            [
                "publish",
                "--bucket",
                "publish-test",
                "--prefix",
                "v1/",
                "--params",
                str(PARAMS_DIR / "dev.yaml"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0]
        == f"uploaded {len(build_all())} templates to s3://publish-test/v1/ (each read back and verified by SHA-256)"
    )
    assert out[1] == "master template: https://publish-test.s3.us-east-1.amazonaws.com/v1/master.yaml"
    for name, text in build_all().items():
        assert s3.get_object(Bucket="publish-test", Key=f"v1/{name}")["Body"].read().decode() == text
    query = link_query(out[2].removeprefix("quick-create:    "))
    assert query["templateURL"] == "https://publish-test.s3.us-east-1.amazonaws.com/v1/master.yaml"
    assert (query["stackName"], query["param_SiteName"]) == ("moodle-dev", "moodle-dev")
    assert (query["param_TemplatesBucketName"], query["param_TemplatesKeyPrefix"]) == ("publish-test", "v1/")


def test_quick_create_url_fills_the_params_file_and_the_location(capsys, my_site):
    path = my_site  # params/production.yaml with its three example values replaced
    assert (
        main(
            [
                "quick-create-url",
                str(path),
                "--bucket",
                "my-templates",
                "--region",
                "eu-west-1",
                "--bucket-region",
                "us-east-1",
            ]
        )
        == 0
    )
    url = capsys.readouterr().out.strip()
    assert url.startswith(
        "https://eu-west-1.console.aws.amazon.com/cloudformation/home?region=eu-west-1#/stacks/quickcreate?"
    )
    query = link_query(url)
    assert query["templateURL"] == "https://my-templates.s3.us-east-1.amazonaws.com/moodle-cfn/master.yaml"
    assert query["param_TemplatesBucketRegion"] == "us-east-1"
    assert query["param_ScalingWindow1Start"] == "30 7 * * 1-5"
    assert query["param_AvailabilityZoneCount"] == "3"


def test_the_bucket_region_is_left_empty_when_it_is_the_stacks():
    location = publish.Location("b-1", "p/", "eu-west-1")
    assert location.parameters("eu-west-1")["TemplatesBucketRegion"] == ""
    assert location.url("master.yaml") == "https://b-1.s3.eu-west-1.amazonaws.com/p/master.yaml"
    assert (
        publish.Location("b-1", "", "cn-north-1").url("x.yaml")
        == "https://b-1.s3.cn-north-1.amazonaws.com.cn/x.yaml"
    )


def test_stale_templates_are_not_published(aws, tmp_path):
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    (tmp_path / "templates" / "network.yaml").write_text("# edited by hand\n")
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="stale-test")
    with pytest.raises(InputError, match=r"network\.yaml differ from a fresh build; run `make templates`"):
        publish.publish("stale-test", "", tmp_path / "templates")
    assert s3.list_objects_v2(Bucket="stale-test").get("KeyCount", 0) == 0


def test_a_missing_bucket_is_one_clear_line(aws, capsys):
    assert main(["publish", "--bucket", "no-such-bucket-here"]) == 2
    assert capsys.readouterr().err == (
        "moodle-cfn: error: s3://no-such-bucket-here: the bucket does not exist (create it, or check the name and account)\n"
    )


def test_missing_credentials_are_one_clear_line(aws, monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["publish", "--bucket", "any-bucket"]) == 2
    assert "no AWS credentials found" in capsys.readouterr().err


def test_access_denied_is_one_clear_line():
    class DeniedClient:
        def put_object(self, **_: object) -> None:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")

    with pytest.raises(InputError, match=r"s3://b-1/p/: access denied \(AccessDenied\)"):
        publish.upload_verified(DeniedClient(), publish.Location("b-1", "p/", "us-east-1"), {"x.yaml": "x"})


def test_a_corrupted_read_back_is_detected():
    class Body:
        def read(self) -> bytes:
            return b"something else"

    class CorruptingClient:
        def put_object(self, **_: object) -> None:
            return None

        def get_object(self, **_: object) -> dict[str, Body]:
            return {"Body": Body()}

    with pytest.raises(InputError, match="reads back different"):
        publish.upload_verified(CorruptingClient(), publish.Location("b-1", "", "us-east-1"), {"x.yaml": "x"})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--bucket", "Bad_Bucket"], "--bucket: not a valid S3 bucket name"),
        (
            ["--bucket", "good-bucket", "--prefix", "no-slash"],
            "--prefix: the prefix must be empty or end with '/'",
        ),
        (
            ["--bucket", "good-bucket", "--region", "europe"],
            "--region: not an AWS Region this version of botocore knows",
        ),
    ],
)
def test_bad_location_arguments_are_refused(capsys, arguments, message):
    assert main(["publish", *arguments]) == 2
    assert message in capsys.readouterr().err
