"""The `moodle-cfn` command: build templates, validate params files, print them for the AWS CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from moodle_cfn import __version__, master
from moodle_cfn import params as params_file
from moodle_cfn.build import write_templates
from moodle_cfn.errors import InputError
from moodle_cfn.layers import all_checks, all_expanders

PROG = "moodle-cfn"
EXIT_BAD_INPUT = 2


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see {PROG} --help)\n")


def master_template() -> dict[str, Any]:
    """The master template as data, built in memory (always current, no files read)."""
    return master.build().to_dict()


def cmd_build(args: argparse.Namespace) -> int:
    """Write every template into --out."""
    paths = write_templates(Path(args.out))
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a params file; print a one-line summary."""
    template = master_template()
    values = params_file.load(Path(args.params), template, all_checks(), all_expanders())
    defaults = len(template["Parameters"]) - len(values)
    print(f"{args.params}: valid ({len(values)} parameters set, {defaults} left at their defaults)")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Print a params file as AWS CLI / StackSets parameter JSON."""
    values = params_file.load(Path(args.params), master_template(), all_checks(), all_expanders())
    sys.stdout.write(params_file.to_cli_json(values))
    return 0


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
    validate.add_argument("params", metavar="PARAMS.yaml")
    validate.set_defaults(func=cmd_validate)

    to_json = commands.add_parser("params", help="print a params file as AWS CLI parameter JSON")
    to_json.add_argument("params", metavar="PARAMS.yaml")
    to_json.set_defaults(func=cmd_params)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input is one line on stderr and exit code 2, never a traceback."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return 0
