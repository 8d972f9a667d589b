"""Moodle releases: the lines moodle-cfn runs, the PHP each supports, and what `validate` refuses.

One table, bootstrap/moodle-lines.json, serves both sides: the web nodes read it to pick PHP and to resolve
MoodleVersion `latest` (moodle-release.sh); `moodle-cfn validate` reads it to refuse a pinned release that
the nodes' PHP or the chosen Aurora PostgreSQL cannot run. The PHP versions the nodes can install are read
from the shipped platform file, so there is no second list to keep in step.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from moodle_cfn import bootstrap

LATEST = "latest"
LINES_FILE = "moodle-lines.json"
NODE_PLATFORM_FILE = "platform-al2023.sh"


@dataclass(frozen=True)
class Line:
    """One Moodle line (such as 4.5): the PHP range it supports and the oldest PostgreSQL major it accepts."""

    name: str
    php_min: str
    php_max: str
    postgresql: int
    source: str


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key of a dotted version: 4.5.10 sorts after 4.5.9."""
    return tuple(int(part) for part in version.split("."))


@functools.cache
def lines() -> dict[str, Line]:
    """The lines of moodle-lines.json, by name."""
    table = json.loads(bootstrap.read(LINES_FILE))["lines"]
    return {
        name: Line(name, entry["php"][0], entry["php"][1], entry["postgresql"], entry["source"])
        for name, entry in table.items()
    }


@functools.cache
def node_php_versions() -> tuple[str, ...]:
    """The PHP versions the web nodes' platform packages (its `platform_php_versions` array)."""
    match = re.search(
        r"^readonly platform_php_versions=\(([^)]*)\)", bootstrap.read(NODE_PLATFORM_FILE), re.M
    )
    if match is None:
        raise ValueError(f"{NODE_PLATFORM_FILE} does not define platform_php_versions")
    return tuple(match.group(1).split())


def php_for(line: Line, available: tuple[str, ...]) -> str | None:
    """The newest available PHP inside the line's range, as the node chooses it; None when there is none."""
    inside = [
        php for php in available if version_key(line.php_min) <= version_key(php) <= version_key(line.php_max)
    ]
    return max(inside, key=version_key) if inside else None


def release_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """Why the nodes cannot run MoodleVersion with these values, or None."""
    version = values["MoodleVersion"]
    if version == LATEST:
        if values.get("MoodleCodeS3Uri"):
            return (
                "MoodleVersion",
                "latest cannot describe a code bundle: give the release MoodleCodeS3Uri holds",
            )
        return None
    name = version.rsplit(".", 1)[0]
    line = lines().get(name)
    if line is None:
        known = ", ".join(lines())
        return "MoodleVersion", f"Moodle {name} is not a line this moodle-cfn release knows ({known})"
    if php_for(line, node_php_versions()) is None:
        return "MoodleVersion", (
            f"Moodle {name} needs PHP {line.php_min}-{line.php_max} ({line.source}); the nodes' Amazon Linux "
            f"2023 packages PHP {', '.join(node_php_versions())}"
        )
    engine = values.get("DatabaseEngineVersion", "")
    if engine and int(engine.split(".")[0]) < line.postgresql:
        return "MoodleVersion", (
            f"Moodle {name} needs PostgreSQL {line.postgresql} or newer ({line.source}); "
            f"DatabaseEngineVersion is {engine}"
        )
    return None
