"""Amazon Linux 2023 as the web nodes need it: the release that has each package they install, the oldest
release they can boot from, and the params-file form of a pinned AMI that `validate` can check.

The table is bootstrap/al2023-packages.json, with a source for every entry; the tests keep it and
platform-al2023.sh in step (the same package names, the same PHP list, the same minimum release).

An AMI parameter holds an SSM parameter name. The public `/aws/service/ami-amazon-linux-latest/...` ones
always give the newest release, which the nodes can run. Any other name is the operator's own parameter
holding a pinned AMI id, whose release nothing offline can read; the params file then says which release
that AMI is, and `validate` checks it:

    WebAmiX8664:
      parameter: /moodle/al2023-ami-x86_64   # the operator's parameter, passed to the stack as is
      release: 2023.10.20260202              # the AMI's release (its name: al2023-ami-2023.10.20260202.0-...)

The node checks its own release too (platform-al2023.sh), so a wrong statement fails the node, not a dnf.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moodle_cfn import bootstrap
from moodle_cfn.errors import InputError

PACKAGES_FILE = "al2023-packages.json"
LATEST_PREFIX = "/aws/service/ami-amazon-linux-latest/"
# The release a params file states: 2023.<quarter>.<yyyymmdd>, optionally with the AMI name's build suffix.
RELEASE = re.compile(r"^(2023\.[0-9]{1,2}\.[0-9]{8})(\.[0-9]+)?$")
SSM_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,2048}$")
PINNED_FIELDS = ("parameter", "release")


@dataclass(frozen=True)
class Package:
    """One package the nodes install: a release that has it, and how the source shows it there."""

    name: str
    release: str
    evidence: str  # "new": first in this release; "present": in this release, perhaps earlier too
    source: str


def release_key(release: str) -> tuple[int, ...]:
    """Sort key of a release: 2023.10.20260202 after 2023.9.20251014."""
    return tuple(int(part) for part in release.split("."))


@functools.cache
def table() -> dict[str, Any]:
    """al2023-packages.json as data."""
    data: dict[str, Any] = json.loads(bootstrap.read(PACKAGES_FILE))
    return data


@functools.cache
def packages() -> dict[str, Package]:
    """Every package the nodes install, by name."""
    return {
        name: Package(name, entry["release"], entry["evidence"], entry["source"])
        for name, entry in table()["packages"].items()
    }


def minimum_release() -> str:
    """The oldest release known to have every package the nodes install."""
    return max((p.release for p in packages().values()), key=release_key)


def first_newer(release: str) -> list[str]:
    """The packages the release notes list as new after `release` (what an older AMI lacks for sure)."""
    return sorted(
        p.name
        for p in packages().values()
        if p.evidence == "new" and release_key(p.release) > release_key(release)
    )


def latest_parameter(arch: str) -> re.Pattern[str]:
    """The public parameters of the standard AL2023 AMIs of one architecture (any kernel, such as
    al2023-ami-kernel-default-arm64 or al2023-ami-kernel-6.12-x86_64); they resolve to the newest release."""
    return re.compile(rf"^{re.escape(LATEST_PREFIX)}al2023-ami-kernel-[0-9a-z.]+-{re.escape(arch)}$")


def release_problem(release: object) -> str | None:
    """Why a stated release cannot carry the nodes, or None."""
    match = RELEASE.match(str(release)) if isinstance(release, str) else None
    if match is None:
        return (
            f"{release!r} is not an Amazon Linux 2023 release such as {minimum_release()} "
            "(the 2023.x.yyyymmdd in the AMI's name)"
        )
    stated = match.group(1)
    if release_key(stated) < release_key(minimum_release()):
        missing = first_newer(stated)
        lacks = f": it lacks {', '.join(missing)}" if missing else ""
        return (
            f"{stated} is older than {minimum_release()}, the oldest Amazon Linux 2023 release known to "
            f"package everything the nodes install{lacks} (an AMI installs from its own release only)"
        )
    return None


def expand_ami(name: str, arch: str) -> Callable[[Any, str], dict[str, Any]]:
    """The params-file expander of one AMI parameter: a public latest-AL2023 parameter name as is, or a
    pinned AMI as {parameter, release} (checked, then passed on as the parameter name)."""

    def expand(value: Any, source: str) -> dict[str, Any]:
        if isinstance(value, str):
            if latest_parameter(arch).match(value):
                return {name: value}
            if value.startswith(LATEST_PREFIX):
                raise InputError(
                    source,
                    f"{value} is not the public parameter of a standard Amazon Linux 2023 {arch} AMI "
                    f"(such as {LATEST_PREFIX}al2023-ami-kernel-default-{arch}); the nodes run AL2023 only",
                    name,
                )
            raise InputError(
                source,
                f"{value} holds a pinned AMI whose Amazon Linux 2023 release validate cannot see: write "
                f"{{parameter: {value}, release: <that AMI's release>}}; the nodes need {minimum_release()} "
                "or newer",
                name,
            )
        if not isinstance(value, dict):
            raise InputError(
                source,
                f"expected an SSM parameter name, or {{parameter, release}} for a pinned AMI, found a "
                f"{type(value).__name__}",
                name,
            )
        unknown = sorted(str(key) for key in set(value) - set(PINNED_FIELDS))
        missing = [key for key in PINNED_FIELDS if key not in value]
        if unknown or missing:
            detail = f"unknown {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
            raise InputError(source, f"{detail} (a pinned AMI is {{parameter, release}})", name)
        parameter = value["parameter"]
        if not isinstance(parameter, str) or not SSM_NAME.match(parameter):
            raise InputError(
                source,
                f"{parameter!r} is not an SSM parameter name (letters, digits, _ . - /)",
                f"{name}.parameter",
            )
        problem = release_problem(value["release"])
        if problem:
            raise InputError(source, problem, f"{name}.release")
        return {name: parameter}

    return expand
