"""`moodle-cfn build`: writes what build_all renders, atomically, and refuses a bad --out cleanly."""

from __future__ import annotations

from moodle_cfn.build import build_all
from moodle_cfn.cli import main


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
