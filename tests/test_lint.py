"""cfn-lint: zero findings of any level on every template, and the parent/child contract checked for real."""

from __future__ import annotations

import subprocess
from pathlib import Path

from moodle_cfn import master
from moodle_cfn.build import write_templates
from tests.conftest import TEMPLATES_DIR, tool
from tests.variants import write_variants

# W3002 says a relative TemplateURL "may only work with the package command": true, and the point of the
# local rendering, which exists only so cfn-lint opens the child templates.
LOCAL_ONLY_IGNORE = "W3002"


def cfn_lint(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("cfn-lint"), "--include-checks", "I", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_every_committed_template_has_zero_findings():
    templates = sorted(str(p) for p in TEMPLATES_DIR.glob("*.yaml"))
    result = cfn_lint("--", *templates)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def local_rendering(directory: Path) -> Path:
    write_templates(directory, master.LOCAL_LOCATION)
    return directory / "master.yaml"


def test_parent_child_contract_has_zero_findings(tmp_path):
    # cfn-lint follows a relative TemplateURL from the working directory: run it inside the rendering.
    local_rendering(tmp_path)
    result = cfn_lint("--ignore-checks", LOCAL_ONLY_IGNORE, "--", "master.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_contract_checks_catch_an_unknown_parameter_and_a_missing_output(tmp_path):
    # Proves the check above is live: break the contract both ways and cfn-lint must say so.
    path = local_rendering(tmp_path)
    text = path.read_text()
    text = text.replace(
        "        VpcCidr: !Ref 'VpcCidr'\n", "        VpcCidr: !Ref 'VpcCidr'\n        Bogus: x\n"
    )
    text = text.replace("NetworkStack.Outputs.VpcId", "NetworkStack.Outputs.NoSuchOutput")
    path.write_text(text)
    result = cfn_lint("--ignore-checks", LOCAL_ONLY_IGNORE, "--", "master.yaml", cwd=tmp_path)
    assert "E3043" in result.stdout and "Bogus" in result.stdout
    assert "Outputs.NoSuchOutput" in result.stdout


def test_every_parameter_choice_has_zero_findings(tmp_path):
    files = write_variants(tmp_path)
    # The variants' masters point at the published S3 URLs, like the committed one.
    result = cfn_lint("--", *(str(f) for f in files))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
