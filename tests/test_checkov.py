"""checkov: zero failed checks for every parameter choice; every suppression in Metadata with a real reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import TEMPLATES_DIR, tool
from tests.variants import write_variants


def checkov(directory: Path) -> tuple[int, dict[str, Any]]:
    """Run checkov on a directory; return its exit code and JSON report."""
    result = subprocess.run(
        [
            tool("checkov"),
            "-d",
            str(directory),
            "--framework",
            "cloudformation",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # checkov logs a check that crashed on a template shape and carries on: treat that as a failure too.
    assert "Failed to run check" not in result.stderr, result.stderr[-2000:]
    return result.returncode, json.loads(result.stdout)


def test_checkov_finds_nothing_and_every_skip_is_explained():
    returncode, report = checkov(TEMPLATES_DIR)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and returncode == 0
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 40
    for check in report["results"]["skipped_checks"]:
        comment = check["check_result"].get("suppress_comment", "")
        assert len(comment) >= 40, (
            f"{check['check_id']} on {check['resource']} is suppressed without a reason"
        )


def test_every_parameter_choice_scans_clean(tmp_path):
    # checkov drops resources whose Condition is false with the default parameters; scan every variant.
    write_variants(tmp_path)
    returncode, report = checkov(tmp_path)
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and returncode == 0
    assert report["summary"]["parsing_errors"] == 0
    scanned = {c["resource"] for c in report["results"]["passed_checks"]}
    assert "AWS::ElastiCache::ReplicationGroup.SessionValkeyReplicationGroup" in scanned
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) >= 40, check["check_id"]
