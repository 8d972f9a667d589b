"""Shell, PHP and config files the web nodes run, kept as real files so linters can read them."""

from __future__ import annotations

import re
from importlib import resources

# Fn::Sub placeholders: ${Name} or ${AWS::Name}; a literal "${" would be written "${!".
SUB_PLACEHOLDER = re.compile(r"\$\{(?!!)([A-Za-z0-9:._]+)\}")


def read(name: str) -> str:
    """The text of a bootstrap file shipped in this package."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def placeholders(text: str) -> set[str]:
    """The Fn::Sub variables a file uses (pseudo parameters included)."""
    return set(SUB_PLACEHOLDER.findall(text))
