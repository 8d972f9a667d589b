"""checkov: zero failed checks; every suppression sits in resource Metadata with a real reason."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import TEMPLATES_DIR, tool


def test_checkov_finds_nothing_and_every_skip_is_explained():
    result = subprocess.run(
        [
            tool("checkov"),
            "-d",
            str(TEMPLATES_DIR),
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
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and result.returncode == 0
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 40
    for check in report["results"]["skipped_checks"]:
        comment = check["check_result"].get("suppress_comment", "")
        assert len(comment) >= 40, (
            f"{check['check_id']} on {check['resource']} is suppressed without a reason"
        )
