"""The commands that touch the site's stack (deploy, status, delete --dry-run) and the input checks they
share with the rest of the CLI: params files loaded for a Region, stack tags, the service role, the
resources --allow-replace may name, and whether a person is there to confirm.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any

from moodle_cfn import deploy, master, publish, teardown
from moodle_cfn import params as params_file
from moodle_cfn.errors import InputError
from moodle_cfn.layers import LAYERS, all_checks, all_expanders
from moodle_cfn.regions import check_region


def master_template() -> dict[str, Any]:
    """The master template as data, built in memory (always current, no files read)."""
    return master.build().to_dict()


def known_region(args: argparse.Namespace) -> str | None:
    """--region, else AWS_REGION, else the Region of --profile / AWS_DEFAULT_REGION (read offline), else None."""
    if args.region:
        return check_region(args.region)
    # AWS_REGION first, as the AWS CLI v2 and SDKs read it; boto3 itself reads only AWS_DEFAULT_REGION.
    if os.environ.get("AWS_REGION"):
        return check_region(os.environ["AWS_REGION"], "AWS_REGION")
    region = publish.session(getattr(args, "profile", None), None).region_name
    return check_region(region, "the profile's region") if region else None


def load_params(path: str, region: str | None = None) -> dict[str, str]:
    """A params file, fully validated against the master template."""
    return params_file.load(Path(path), master_template(), all_checks(), all_expanders(), region)


def load_deployable(path: str, region: str | None) -> dict[str, str]:
    """A params file about to become a stack: validated, and ready for production if it says it is."""
    return load_site(path, region)[0]


def load_site(path: str, region: str | None) -> tuple[dict[str, str], str | None]:
    """load_deployable's values, and the file's Environment."""
    values, environment = params_file.read(
        Path(path), master_template(), all_checks(), all_expanders(), region
    )
    params_file.check_ready_for_production(values, environment, path)
    return values, environment


# CloudFormation stack tags (Tag data type): key 1-128 characters, not starting with aws:, value up to 256.
TAG_TEXT = r"[\w .:/=+\-@]"
ROLE_ARN_PATTERN = r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}"
TAG_SHAPE = "expected KEY=VALUE (key 1-128, value up to 256 letters, digits, spaces and _.:/=+-@)"


def stack_tags(pairs: list[str]) -> dict[str, str]:
    """--tag KEY=VALUE options as a mapping; one line naming the bad one."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not (
            equals
            and re.fullmatch(f"{TAG_TEXT}{{1,128}}", key)
            and re.fullmatch(f"{TAG_TEXT}{{0,256}}", value)
        ):
            raise InputError(pair, TAG_SHAPE, "--tag")
        if key.lower().startswith("aws:"):
            raise InputError(pair, "keys starting with aws: are reserved for AWS", "--tag")
        if key in tags:
            raise InputError(pair, f"{key} is given twice", "--tag")
        tags[key] = value
    return tags


def check_allowed_replacements(names: list[str]) -> frozenset[str]:
    """--allow-replace names, each the logical id of a stateful resource in the templates."""
    stateful = deploy.stateful_resources(layer.build().to_dict() for layer in LAYERS)
    for name in names:
        if name not in stateful:
            close = difflib.get_close_matches(name, sorted(stateful), n=1)
            hint = f"did you mean {close[0]}?" if close else f"they are: {', '.join(sorted(stateful))}"
            raise InputError(
                name,
                f"not a stateful resource of the templates (only those need allowing); {hint}",
                "--allow-replace",
            )
    return frozenset(names)


def site_of(args: argparse.Namespace) -> deploy.Site:
    """The site's stack through a CloudFormation client of --profile / --region."""
    if args.region:
        check_region(args.region)
    client = publish.session(args.profile, args.region).client("cloudformation")
    return deploy.Site(client, args.stack)


def has_terminal() -> bool:
    """Whether a person can answer: stdin and stdout both terminals (not `| tee`, not a CI job)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def cmd_deploy(args: argparse.Namespace) -> int:
    """Publish the templates, then create or update the site through a previewed, guarded change set."""
    allowed = check_allowed_replacements(args.allow_replace)
    tags = stack_tags(args.tag)
    if args.role_arn and not re.fullmatch(ROLE_ARN_PATTERN, args.role_arn):
        raise InputError(
            args.role_arn, "not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)", "--role-arn"
        )
    values, environment = load_site(args.params, known_region(args))
    protect = (
        environment == "production" if args.termination_protection is None else args.termination_protection
    )
    location, _ = publish.publish(args.bucket, args.prefix, Path(args.templates), args.region, args.profile)
    stack_region = args.region or location.region
    if not args.region:
        # The stack goes where the bucket is: the Region rules are checked for that Region now.
        values = load_deployable(args.params, stack_region)
    args.region = stack_region
    options = deploy.DeployOptions(
        preview_only=args.preview,
        assume_yes=args.yes,
        interactive=has_terminal(),
        allowed=allowed,
        tags=tags,
        role_arn=args.role_arn,
        protect=protect,
    )
    parameters = {**values, **location.parameters(stack_region)}
    return deploy.run_deploy(site_of(args), publish.master_url(location), parameters, options, sys.stdout)


def cmd_status(args: argparse.Namespace) -> int:
    """The site's stacks, their states and the outputs."""
    sys.stdout.write(deploy.status_text(site_of(args)))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """--dry-run: what a delete of the stack would keep, by physical id, and how to remove each."""
    if not args.dry_run:
        raise InputError(
            args.stack, "moodle-cfn does not delete sites; --dry-run reports what a delete keeps", "delete"
        )
    site = site_of(args)
    deployed = {label: physical_ids(site, stack_id) for label, stack_id in site.nested()}
    kept = teardown.kept_resources((layer.stack_title, layer.build().to_dict()) for layer in LAYERS)
    sys.stdout.write(teardown.report(kept, deployed, args.stack))
    return 0


def physical_ids(site: deploy.Site, stack_id: str) -> dict[str, str]:
    """{logical id: physical id} of one nested stack's resources."""
    return {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in site.resources(stack_id)}
