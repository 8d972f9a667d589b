"""Publishing: upload templates/ to S3, verify every object, and build the console quick-create link.

The master template fetches its nested templates from
https://<bucket>.s3.<bucket region>.<url suffix>/<prefix><layer>.yaml, so publishing is an upload under a
prefix; the quick-create link then opens the console with the master's URL and the parameter values filled in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.exceptions import ClientError, NoCredentialsError, ProfileNotFound

from moodle_cfn import master
from moodle_cfn.build import MASTER_FILE, build_all
from moodle_cfn.errors import CALL_ERRORS, AwsFailure, InputError, one_line
from moodle_cfn.regions import check_region

BUCKET_PATTERN = master.TEMPLATES_BUCKET_NAME.parameter.AllowedPattern
PREFIX_PATTERN = master.TEMPLATES_KEY_PREFIX.parameter.AllowedPattern


@dataclass(frozen=True)
class Location:
    """Where the templates live: bucket, key prefix and the bucket's region."""

    bucket: str
    prefix: str
    region: str

    @property
    def source(self) -> str:
        """How error messages name the location."""
        return f"s3://{self.bucket}/{self.prefix}"

    def url(self, file_name: str) -> str:
        """HTTPS URL of one template, in the form the master builds for its nested stacks."""
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        return f"https://{self.bucket}.s3.{self.region}.{suffix}/{self.prefix}{file_name}"

    def parameters(self, stack_region: str) -> dict[str, str]:
        """The master's template-location parameters for a stack in `stack_region`."""
        return {
            master.TEMPLATES_BUCKET_NAME.name: self.bucket,
            master.TEMPLATES_KEY_PREFIX.name: self.prefix,
            # Empty means "the stack's own region", which keeps a quick-create link short.
            master.TEMPLATES_BUCKET_REGION.name: "" if self.region == stack_region else self.region,
        }


def check_location_arguments(bucket: str, prefix: str, region: str | None) -> None:
    """Refuse a bucket name, prefix or region the master template would refuse too."""
    if not re.fullmatch(BUCKET_PATTERN, bucket):
        raise InputError(f"s3://{bucket}", "not a valid S3 bucket name", "--bucket")
    if not re.fullmatch(PREFIX_PATTERN, prefix):
        raise InputError(
            f"s3://{bucket}/{prefix}",
            "the prefix must be empty or end with '/' (like moodle-cfn/)",
            "--prefix",
        )
    if region is not None:
        check_region(region)


def quick_create_url(stack_region: str, template_url: str, stack_name: str, values: Mapping[str, str]) -> str:
    """The CloudFormation console link that opens the create form with everything filled in."""
    query = [("templateURL", template_url), ("stackName", stack_name)]
    query += [(f"param_{key}", value) for key, value in sorted(values.items())]
    encoded = "&".join(f"{key}={quote(value, safe='')}" for key, value in query)
    return (
        f"https://{stack_region}.console.aws.amazon.com/cloudformation/home?region={stack_region}"
        f"#/stacks/quickcreate?{encoded}"
    )


def read_templates(directory: Path) -> dict[str, str]:
    """The templates to publish, refused when they differ from what the code builds now."""
    built = build_all()
    try:
        found = {name: (directory / name).read_text(encoding="utf-8") for name in built}
    except FileNotFoundError as error:
        raise InputError(
            str(directory), f"{Path(error.filename).name} is missing; run `make templates`"
        ) from None
    stale = sorted(name for name in built if found[name] != built[name])
    if stale:
        raise InputError(
            str(directory), f"{', '.join(stale)} differ from a fresh build; run `make templates`"
        )
    return found


def aws_error(location: Location | str, error: Exception) -> InputError:
    """One clear line for the AWS failures an operator can fix."""
    source = location.source if isinstance(location, Location) else location
    if isinstance(error, NoCredentialsError):
        return InputError(
            source, "no AWS credentials found (set AWS_PROFILE, use --profile, or run aws configure)"
        )
    if isinstance(error, ProfileNotFound):
        return InputError(source, str(error))
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404", "NotFound"):
            return InputError(source, "the bucket does not exist (create it, or check the name and account)")
        if code in (
            "AccessDenied",
            "403",
            "AllAccessDisabled",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            return InputError(
                source, f"access denied ({code}): the credentials in use may not read or write this bucket"
            )
        return AwsFailure(source, f"S3 refused the request: {code or one_line(error)}")
    return AwsFailure(source, f"S3 failed: {one_line(error)}")


def session(profile: str | None, region: str | None) -> boto3.session.Session:
    """A boto3 session for the named profile (or the default chain)."""
    try:
        return boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as error:
        raise aws_error("--profile", error) from None


def bucket_region(client: Any, bucket: str) -> str:
    """The region a bucket lives in (GetBucketLocation returns None for us-east-1)."""
    try:
        answer = client.get_bucket_location(Bucket=bucket)
    except CALL_ERRORS as error:
        raise aws_error(f"s3://{bucket}", error) from None
    return answer.get("LocationConstraint") or "us-east-1"


def upload_verified(client: Any, location: Location, templates: Mapping[str, str]) -> list[str]:
    """Upload every template, read each one back and compare its SHA-256; return the keys written."""
    keys = []
    for name, text in sorted(templates.items()):
        key = f"{location.prefix}{name}"
        body = text.encode("utf-8")
        try:
            client.put_object(Bucket=location.bucket, Key=key, Body=body, ContentType="application/x-yaml")
            stored = client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
        except CALL_ERRORS as error:
            raise aws_error(location, error) from None
        if hashlib.sha256(stored).hexdigest() != hashlib.sha256(body).hexdigest():
            raise InputError(location.source, f"{key} reads back different from what was uploaded")
        keys.append(key)
    return keys


def publish(
    bucket: str, prefix: str, templates_dir: Path, region: str | None = None, profile: str | None = None
) -> tuple[Location, list[str]]:
    """Check the templates are current, upload them, verify them; return where they are."""
    check_location_arguments(bucket, prefix, region)
    templates = read_templates(templates_dir)
    client = session(profile, region).client("s3")
    location = Location(bucket, prefix, bucket_region(client, bucket))
    return location, upload_verified(client, location, templates)


def master_url(location: Location) -> str:
    """URL of the published master template."""
    return location.url(MASTER_FILE)
