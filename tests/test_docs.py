"""The README and docs/ cannot rot: every `moodle-cfn` command they show is run (those that need no AWS
account) or at least parsed, the generated blocks (the cost tables) match what `moodle-cfn cost` computes,
every relative link and anchor resolves, and the deploy command is on the README's first screen."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from moodle_cfn.cli import main, parser
from tests.conftest import PRODUCTION_EDITS, params_copy
from tests.docs_commands import DOCUMENTS, ROOT, generated_blocks, output_of, shown_commands

# The placeholders the documents use for what only the reader knows.
READER_VALUES = {"YOUR-BUCKET": "your-bucket"}
# Commands that need an AWS account: parsed by the CLI's own parser, not run.
NEEDS_AWS = {"deploy", "status", "publish", "delete"}
SCREEN_LINES = 50


def commands() -> list[tuple[str, str]]:
    return [
        (document.name, command) for document in DOCUMENTS for command in shown_commands(document.read_text())
    ]


def argv_of(command: str) -> list[str]:
    for placeholder, value in READER_VALUES.items():
        command = command.replace(placeholder, value)
    return shlex.split(command, comments=True)[1:]


def needs_aws(argv: list[str]) -> bool:
    return argv[0] in NEEDS_AWS or "--live" in argv or (argv[0] == "diagram" and "--dot-only" not in argv)


def test_the_documents_show_commands_of_every_kind():
    kinds = {argv_of(command)[0] for _, command in commands()}
    assert {"validate", "deploy", "status", "cost", "params", "build", "quick-create-url"} <= kinds


@pytest.mark.parametrize(("document", "command"), commands())
def test_every_command_shown_runs_or_parses(document, command, tmp_path, monkeypatch, capsys):
    argv = argv_of(command)
    if needs_aws(argv):
        parser().parse_args(argv)  # exits 2 on anything it does not accept
        return
    # Run where an operator would: a checkout with params/ and the my-site.yaml the README has them edit.
    shutil.copytree(ROOT / "params", tmp_path / "params")
    params_copy(tmp_path / "my-site.yaml", PRODUCTION_EDITS)
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_generated_blocks_match_what_the_command_prints(document, monkeypatch):
    monkeypatch.chdir(ROOT)
    for argv, body in generated_blocks(document.read_text()):
        assert body == output_of(argv), f"{document.name}: run `make readme` (moodle-cfn {' '.join(argv)})"


def test_the_readme_has_generated_cost_tables():
    blocks = [argv for argv, _ in generated_blocks((ROOT / "README.md").read_text())]
    assert [argv[0] for argv in blocks] == ["cost", "cost"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(document):
    prose = re.sub(r"`[^`\n]*`", "", document.read_text())  # an example link inside code is not a link
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        path = (document.parent / file_part).resolve() if file_part else document
        assert path.exists(), f"{document.name}: {target}"
        if anchor:
            assert anchor in anchors(path), f"{document.name}: {target}"


def test_the_deploy_command_is_on_the_first_screen():
    first_screen = (ROOT / "README.md").read_text().splitlines()[:SCREEN_LINES]
    assert any(line.startswith("moodle-cfn deploy ") for line in first_screen)
    assert any(line.startswith("moodle-cfn validate ") for line in first_screen)
