"""The `moodle-cfn` command: build, validate, params, publish, quick-create-url, deploy, status, delete
(--dry-run), cost and diagram (`moodle-cfn --help` says what each does)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from moodle_cfn import __version__, cost, diagram, publish
from moodle_cfn import params as params_file
from moodle_cfn.build import write_templates
from moodle_cfn.cli_stack import (
    cmd_delete,
    cmd_deploy,
    cmd_status,
    known_region,
    load_deployable,
    load_params,
    master_template,
)
from moodle_cfn.common import SITE_NAME
from moodle_cfn.errors import AWS_ERRORS, EXIT_AWS_FAILED, EXIT_BAD_INPUT, InputError, one_line
from moodle_cfn.files import write_atomic
from moodle_cfn.regions import check_region
from moodle_cfn.rules import effective_values

PROG = "moodle-cfn"


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see {PROG} --help)\n")


def cmd_build(args: argparse.Namespace) -> int:
    """Write every template into --out."""
    paths = write_templates(Path(args.out))
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a params file as a deploy would (Region rules when the Region is known); a one-line summary."""
    template = master_template()
    region = known_region(args)
    values = load_deployable(args.params, region)
    defaults = len(template["Parameters"]) - len(values)
    where = (
        f"Region rules checked for {region}"
        if region
        else ("Region rules not checked: give --region, or a profile or AWS_REGION with a Region")
    )
    print(f"{args.params}: valid ({len(values)} parameters set, {defaults} left at their defaults; {where})")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Print a params file as AWS CLI / StackSets parameter JSON."""
    text = params_file.to_cli_json(load_params(args.params))
    if args.out:
        try:
            write_atomic(Path(args.out), text)
        except OSError as error:
            raise InputError(args.out, f"cannot write: {error.strerror or error}") from error
    else:
        sys.stdout.write(text)
    return 0


def stack_name(args: argparse.Namespace, values: dict[str, str]) -> str:
    """--stack-name, else the site name."""
    return args.stack_name or values.get(SITE_NAME.name, str(SITE_NAME.parameter.Default))


def cmd_publish(args: argparse.Namespace) -> int:
    """Upload templates/ to S3, verify it, print the master URL and the quick-create link."""
    values = load_deployable(args.params, args.region) if args.params else {}
    location, keys = publish.publish(
        args.bucket, args.prefix, Path(args.templates), args.region, args.profile
    )
    stack_region = args.region or location.region
    link_values = {**values, **location.parameters(stack_region)}
    print(f"uploaded {len(keys)} templates to {location.source} (each read back and verified by SHA-256)")
    print(f"master template: {publish.master_url(location)}")
    print(
        f"quick-create:    {publish.quick_create_url(stack_region, publish.master_url(location), stack_name(args, values), link_values)}"
    )
    return 0


def cmd_quick_create_url(args: argparse.Namespace) -> int:
    """Print the console quick-create link for a params file (no AWS call)."""
    publish.check_location_arguments(args.bucket, args.prefix, args.region)
    if args.bucket_region:
        check_region(args.bucket_region, "--bucket-region")
    values = load_deployable(args.params, args.region)
    location = publish.Location(args.bucket, args.prefix, args.bucket_region or args.region)
    link_values = {**values, **location.parameters(args.region)}
    print(
        publish.quick_create_url(
            args.region, publish.master_url(location), stack_name(args, values), link_values
        )
    )
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    """Print the monthly estimate of a params file (markdown/totals: a comparison of several)."""
    if len(args.params) > 1 and args.format in ("table", "json"):
        raise InputError(" ".join(args.params), f"--format {args.format} takes one params file", "cost")
    check_region(args.region)
    assumptions = cost.Assumptions(**{name: getattr(args, name) for name, _ in cost.assumption_fields()})
    estimates, prices = {}, None
    for path in args.params:
        values = effective_values(master_template()["Parameters"], load_params(path, args.region))
        prices = live_or_bundled_prices(args, values)
        estimates[Path(path).name] = cost.estimate(values, prices, assumptions)
    lines = next(iter(estimates.values()))
    if args.format == "json":
        sys.stdout.write(cost.render_json(lines, prices, assumptions))
    elif args.format == "markdown":
        sys.stdout.write(cost.render_markdown(estimates))
    elif args.format == "totals":
        sys.stdout.write(cost.render_totals(estimates))
    else:
        sys.stdout.write(cost.render_table(lines, prices))
    return 0


def live_or_bundled_prices(args: argparse.Namespace, values: dict[str, str]) -> cost.PriceTable:
    """The bundled price table, or with --live the instances' prices from the AWS Price List API."""
    prices = cost.PriceTable.bundled(cost.BUNDLED_REGIONS[0] if args.live else args.region)
    if not args.live:
        return prices
    wanted = {
        "ec2_instance_hour": [values["WebInstanceType"]],
        "aurora_instance_hour": [values["DatabaseInstanceClass"]],
        "elasticache_node_hour": sorted({values["SessionCacheNodeType"], values["ApplicationCacheNodeType"]}),
    }
    try:
        client = publish.session(args.profile, "us-east-1").client("pricing", region_name="us-east-1")
        return cost.live(args.region, prices, wanted, client)
    except AWS_ERRORS as error:
        raise publish.aws_error("AWS Price List API", error) from None


def cmd_diagram(args: argparse.Namespace) -> int:
    """Draw the architecture from the templates."""
    written = diagram.write_diagram(Path(args.out), render=not args.dot_only)
    nodes, edges = diagram.counts((Path(args.out) / "architecture-details.dot").read_text())
    for path in written:
        print(f"wrote {path}")
    print(f"{nodes} nodes, {edges} edges")
    return 0


def non_negative(text: str) -> float:
    """A usage assumption: a finite number, 0 or more (a negative one would print a negative cost)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text}")
    return number


def params_file_arguments(command: argparse.ArgumentParser, many: bool = False) -> None:
    """The params file as a positional argument or as --params FILE (publish's spelling), either way."""
    command.add_argument(
        "params", metavar="PARAMS.yaml", nargs="*" if many else "?",
        help="the params file" + (" (several with --format markdown or totals, compared)" if many else ""),
    )  # fmt: skip
    command.add_argument(
        "--params", dest="params_option", metavar="PARAMS.yaml", action="append" if many else "store",
        help="the params file, as an option" + ("; repeatable" if many else ""),
    )  # fmt: skip


def params_file_given(args: argparse.Namespace) -> str | list[str] | None:
    """The params file(s) from the positional argument or --params; a usage error (None: with a message)
    when neither is given or the two name different files."""
    if not hasattr(args, "params_option"):
        return getattr(args, "params", None)
    positional, option = args.params, args.params_option
    if positional and option and positional != option:
        shown = " ".join(option) if isinstance(option, list) else option
        shown_positional = " ".join(positional) if isinstance(positional, list) else positional
        raise argparse.ArgumentError(
            None,
            f"the params file is given twice, as {shown_positional} and as --params {shown}: give it once",
        )
    if not (positional or option):
        raise argparse.ArgumentError(
            None, "the params file is missing: give PARAMS.yaml or --params PARAMS.yaml"
        )
    return positional or option


def parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per action."""
    root = _OneLineParser(
        prog=PROG, description="CloudFormation templates for a highly available Moodle site."
    )
    root.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = root.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_OneLineParser
    )

    build = commands.add_parser("build", help="render every template into a directory")
    build.add_argument(
        "--out", default="templates", metavar="DIR", help="output directory (default: templates)"
    )
    build.set_defaults(func=cmd_build)

    validate = commands.add_parser("validate", help="check a params file against the master template")
    params_file_arguments(validate)
    validate.add_argument("--region", help="check the Region-dependent rules for this Region "
                          "(default: the profile's or AWS_REGION's, when set)")  # fmt: skip
    validate.add_argument("--profile", help="AWS profile whose Region to use (read locally, no AWS call)")
    validate.set_defaults(func=cmd_validate)

    to_json = commands.add_parser("params", help="print a params file as AWS CLI parameter JSON")
    params_file_arguments(to_json)
    to_json.add_argument(
        "--out", metavar="FILE", help="write the JSON to FILE (atomically) instead of stdout"
    )
    to_json.set_defaults(func=cmd_params)

    def location_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--bucket", required=True, help="S3 bucket holding the templates")
        command.add_argument(
            "--prefix", default="moodle-cfn/", help="key prefix, ending in / (default: moodle-cfn/)"
        )
        command.add_argument("--stack", "--stack-name", dest="stack_name",
                             help="stack name in the link (default: the SiteName)")  # fmt: skip

    upload = commands.add_parser("publish", help="upload templates/ to S3 and print the quick-create link")
    location_options(upload)
    upload.add_argument("--region", help="region of the stack (default: the bucket's region)")
    upload.add_argument("--profile", help="AWS profile to use (default: the standard credential chain)")
    upload.add_argument(
        "--templates", default="templates", metavar="DIR", help="templates to upload (default: templates)"
    )
    upload.add_argument(
        "--params", metavar="PARAMS.yaml", help="fill the quick-create link from this params file"
    )
    upload.set_defaults(func=cmd_publish)

    link = commands.add_parser(
        "quick-create-url", help="print the console quick-create link for a params file"
    )
    params_file_arguments(link)
    location_options(link)
    link.add_argument("--region", required=True, help="region the stack is created in")
    link.add_argument("--bucket-region", help="region of the bucket (default: --region)")
    link.set_defaults(func=cmd_quick_create_url)

    ship = commands.add_parser(
        "deploy", help="publish, preview and create or update the site stack (change set with nested stacks)"
    )
    params_file_arguments(ship)
    ship.add_argument("--stack", "--stack-name", required=True, help="name of the site's stack")
    ship.add_argument("--bucket", required=True, help="S3 bucket the templates are published to")
    ship.add_argument(
        "--prefix", default="moodle-cfn/", help="key prefix, ending in / (default: moodle-cfn/)"
    )
    ship.add_argument("--region", help="region of the stack (default: the bucket's region)")
    ship.add_argument("--profile", help="AWS profile to use (default: the standard credential chain)")
    ship.add_argument("--templates", default="templates", metavar="DIR", help="templates to publish")
    ship.add_argument("--preview", action="store_true", help="show the changes and stop")
    ship.add_argument("--yes", action="store_true", help="do not ask before deploying")
    ship.add_argument("--allow-replace", action="append", default=[], metavar="NAME",
                      help="allow replacing or removing this stateful resource (logical id); repeatable")  # fmt: skip
    ship.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                      help="stack tag, propagated to every resource that takes tags (cost allocation); repeatable")  # fmt: skip
    ship.add_argument(
        "--role-arn", metavar="ARN", help="service role CloudFormation uses for the stack's operations"
    )
    ship.add_argument("--termination-protection", action=argparse.BooleanOptionalAction, default=None,
                      help="protect a stack this run creates from deletion (default: on for Environment: production)")  # fmt: skip
    ship.set_defaults(func=cmd_deploy)

    state = commands.add_parser("status", help="the site's stacks, their states and outputs")
    state.add_argument("--stack", "--stack-name", required=True, help="name of the site's stack")
    state.add_argument("--region", help="region of the stack")
    state.add_argument("--profile", help="AWS profile to use")
    state.set_defaults(func=cmd_status)

    remove = commands.add_parser(
        "delete", help="with --dry-run: what a delete of the site keeps and how to remove it"
    )
    remove.add_argument("--stack", "--stack-name", required=True, help="name of the site's stack")
    remove.add_argument("--region", help="region of the stack")
    remove.add_argument("--profile", help="AWS profile to use")
    remove.add_argument("--dry-run", action="store_true", help="report only (required: nothing is deleted)")
    remove.set_defaults(func=cmd_delete)

    estimate = commands.add_parser("cost", help="estimate the monthly cost of a params file")
    params_file_arguments(estimate, many=True)
    estimate.add_argument("--region", default="us-east-1", help="region of the stack (default: us-east-1)")
    estimate.add_argument("--format", choices=["table", "json", "markdown", "totals"], default="table")
    estimate.add_argument("--live", action="store_true", help="price instances from the AWS Price List API")
    estimate.add_argument("--profile", help="AWS profile for --live")
    for name, default in cost.assumption_fields():
        estimate.add_argument(f"--{name.replace('_', '-')}", type=non_negative, default=default, metavar="N",
                              help=f"usage assumption (default: {default:g})")  # fmt: skip
    estimate.set_defaults(func=cmd_cost)

    draw = commands.add_parser("diagram", help="draw the architecture from the templates (Graphviz)")
    draw.add_argument("--out", default="docs", metavar="DIR", help="output directory (default: docs)")
    draw.add_argument(
        "--dot-only", action="store_true", help="write the DOT source only (no Graphviz needed)"
    )
    draw.set_defaults(func=cmd_diagram)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input is one line on stderr and exit code 2, never a traceback."""
    command_line = parser()
    args = command_line.parse_args(argv)
    try:
        args.params = params_file_given(args)
    except argparse.ArgumentError as error:
        command_line.error(error.message)
    try:
        return args.func(args)
    except InputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        return 0
    except AWS_ERRORS as error:
        # The last line of defence: an AWS call a command did not wrap still ends in one line.
        print(f"{PROG}: error: AWS call failed: {one_line(error)}", file=sys.stderr)
        return EXIT_AWS_FAILED
