"""The committed templates/ are exactly what the code builds now, byte for byte."""

from __future__ import annotations

import difflib

from moodle_cfn import master
from moodle_cfn.build import build_all
from moodle_cfn.layers import all_checks, all_expanders
from moodle_cfn.params import load, to_cli_json
from tests.conftest import PARAMS_FILES, TEMPLATES_DIR


def test_committed_templates_are_current():
    built = build_all()
    committed = {path.name: path.read_text(encoding="utf-8") for path in TEMPLATES_DIR.glob("*.yaml")}
    assert sorted(committed) == sorted(built), "templates/ holds other files than the build writes"
    stale = []
    for name, text in built.items():
        if committed[name] != text:
            diff = difflib.unified_diff(
                committed[name].splitlines(),
                text.splitlines(),
                f"templates/{name}",
                f"built {name}",
                lineterm="",
            )
            stale.append("\n".join(list(diff)[:60]))
    assert not stale, "templates/ is stale; run `make templates` and commit:\n" + "\n\n".join(stale)


def test_build_is_deterministic():
    assert build_all() == build_all()


def test_templates_carry_no_timestamps_or_random_ids():
    for name, text in build_all().items():
        assert "2026-" not in text and "2025-" not in text, name


def test_params_json_files_are_current():
    # params/*.json (for taskcat and the AWS CLI) are written by `make templates` from params/*.yaml.
    template = master.build().to_dict()
    for path in PARAMS_FILES:
        expected = to_cli_json(load(path, template, all_checks(), all_expanders()))
        assert path.with_suffix(".json").read_text() == expected, f"{path.name}: run `make templates`"
