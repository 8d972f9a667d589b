"""Shared fixtures: the templates as data, paths, and the tools installed beside this interpreter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from moodle_cfn import master
from moodle_cfn.layers import network

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = ROOT / "templates"
PARAMS_DIR = ROOT / "params"
PARAMS_FILES = sorted(PARAMS_DIR.glob("*.yaml"))


def tool(name: str) -> str:
    """Path of a console script installed in the same virtualenv as the running interpreter."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def network_template() -> dict[str, Any]:
    """The network template as plain data (exactly what is rendered to YAML)."""
    return json.loads(network.build().to_json())


@pytest.fixture(scope="session")
def master_template() -> dict[str, Any]:
    """The published master template as plain data."""
    return json.loads(master.build().to_json())
