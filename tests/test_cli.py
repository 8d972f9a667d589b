"""`moodle-cfn build`: writes what build_all renders, atomically, and refuses a bad --out cleanly. Every
command that reads a params file takes it as PARAMS.yaml or as --params PARAMS.yaml alike."""

from __future__ import annotations

import argparse

import pytest

from moodle_cfn.build import build_all
from moodle_cfn.cli import main, parser
from tests.conftest import ROOT

DEV, PRODUCTION = str(ROOT / "params" / "dev.yaml"), str(ROOT / "params" / "production.yaml")


def test_build_writes_every_template(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", "--out", str(out)]) == 0
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert written == build_all()
    assert capsys.readouterr().out.count("wrote ") == len(written)


def test_build_replaces_files_and_leaves_no_temporary_files(tmp_path):
    (tmp_path / "master.yaml").write_text("stale")
    assert main(["build", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "master.yaml").read_text() == build_all()["master.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(build_all())


def test_build_into_a_file_is_refused_and_writes_nothing(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep")
    assert main(["build", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"moodle-cfn: error: {target}: --out must be a directory, and this is a file\n"
    assert target.read_text() == "keep" and sorted(tmp_path.iterdir()) == [target]


def test_build_below_a_file_is_one_line(tmp_path, capsys):
    # mkdir fails with ENOTDIR even for root, unlike a permission test.
    (tmp_path / "file").write_text("keep")
    assert main(["build", "--out", str(tmp_path / "file" / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write templates: Not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unknown_command_is_one_line(capsys):
    try:
        main(["launch"])
    except SystemExit as exit_:
        assert exit_.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'launch'" in err


def commands_reading_a_params_file() -> dict[str, argparse.ArgumentParser]:
    (commands,) = (a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: command
        for name, command in commands.choices.items()
        if any(action.dest in ("params", "params_option") for action in command._actions)
    }


def test_every_command_reading_a_params_file_takes_the_params_option():
    commands = commands_reading_a_params_file()
    assert set(commands) == {"validate", "params", "publish", "quick-create-url", "deploy", "cost"}
    for name, command in commands.items():
        assert any("--params" in action.option_strings for action in command._actions), name


@pytest.mark.parametrize(
    ("positional", "option"),
    [
        (["params", DEV], ["params", "--params", DEV]),
        (["validate", DEV, "--region", "us-east-1"], ["validate", "--params", DEV, "--region", "us-east-1"]),
        (["cost", DEV, PRODUCTION, "--format", "totals"],
         ["cost", "--params", DEV, "--params", PRODUCTION, "--format", "totals"]),
        (["quick-create-url", DEV, "--bucket", "example-bucket", "--region", "us-east-1"],
         ["quick-create-url", "--params", DEV, "--bucket", "example-bucket", "--region", "us-east-1"]),
    ],
)  # fmt: skip
def test_the_params_option_reads_the_same_file_as_the_positional_argument(positional, option, capsys):
    assert main(positional) == 0
    expected = capsys.readouterr().out
    assert main(option) == 0
    assert capsys.readouterr().out == expected and expected
    # Given both ways, the same file is fine.
    assert main([*positional, "--params", DEV] if positional[0] != "cost" else positional) == 0


@pytest.mark.parametrize(
    "command", [["validate"], ["params"], ["cost"], ["deploy", "--stack", "s", "--bucket", "b"]]
)
def test_two_different_params_files_or_none_is_one_line(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, DEV, "--params", PRODUCTION])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"moodle-cfn: error: the params file is given twice, as {DEV} and as --params {PRODUCTION}: give it once "
        "(see moodle-cfn --help)\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith("the params file is missing: give PARAMS.yaml or --params PARAMS.yaml "
                                            "(see moodle-cfn --help)\n")  # fmt: skip
