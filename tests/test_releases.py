"""Moodle releases: `latest` resolved from recorded tags, recorded once, downgrades refused, PHP per line.

The node's own functions (bootstrap/moodle-release.sh) run here in bash against recorded `git ls-remote`
output and a fake git; `validate`'s side (moodle_cfn.releases) reads the same moodle-lines.json.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from moodle_cfn import bootstrap, releases
from moodle_cfn.checks import run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.layers import moodle

BOOTSTRAP = Path(bootstrap.__file__).parent
LINES = BOOTSTRAP / releases.LINES_FILE
# What `git ls-remote --tags --refs https://github.com/moodle/moodle.git 'v*'` prints, in the order git gives.
TAGS = """\
3f1c0a5e0d0c1a3b5b8e2c0b0d1e2f3a4b5c6d7e\trefs/tags/v4.5.0
4a2d1b6f1e1d2b4c6c9f3d1c1e2f3a4b5c6d7e8f\trefs/tags/v4.5.10
5b3e2c7a2f2e3c5d7dab4e2d2f3a4b5c6d7e8f9a\trefs/tags/v4.5.9
6c4f3d8b3a3f4d6e8ebc5f3e3a4b5c6d7e8f9a0b\trefs/tags/v5.2.3
7d5a4e9c4b4a5e7f9fcd6a4f4b5c6d7e8f9a0b1c\trefs/tags/v5.2.4
8e6b5fad5c5b6f8a0ade7b5a5c6d7e8f9a0b1c2d\trefs/tags/v5.3.0-rc1
9f7c6abe6d6c7a9b1bef8c6b6d7e8f9a0b1c2d3e\trefs/tags/v5.3.0-beta
0a8d7bcf7e7d8bac2cfa9d7c7e8f9a0b1c2d3e4f\trefs/tags/v6.0.0
1b9e8cda8f8e9cbd3dab0e8d8f9a0b1c2d3e4f5a\trefs/tags/v5.10.0dev
"""


def bash(script: str, stdin: str = "", path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `script` in bash with moodle-release.sh sourced; die() prints DIE: and exits 1 as on a node."""
    prelude = (
        'log() { echo "LOG: $*" >&2; }\n'
        'die() { echo "DIE: $*" >&2; exit 1; }\n'
        f"source {shlex.quote(str(BOOTSTRAP / 'moodle-release.sh'))}\n"
    )
    env = {"PATH": f"{path_prefix}:/usr/bin:/bin" if path_prefix else "/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", prelude + script], input=stdin, capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip


def fake_git(directory: Path, tags: str) -> Path:
    """A `git` that answers ls-remote with `tags`, as the code host would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tags").write_text(tags)
    git = directory / "git"
    git.write_text(
        f"#!/bin/bash\n[[ $1 == ls-remote ]] || exit 2\ncat {shlex.quote(str(directory / 'tags'))}\n"
    )
    git.chmod(0o755)
    return directory


@pytest.mark.parametrize(
    ("postgresql", "expected"),
    [(17, "5.3.0"), (16, "5.2.4"), (13, "4.5.10")],
)
def test_latest_is_the_highest_stable_release_of_a_known_line_the_database_runs(postgresql, expected):
    """Stable tags only (no rc, beta or dev), numeric order (4.5.10 > 4.5.9), lines moodle-cfn knows (not
    6.0), and only lines whose PostgreSQL minimum the cluster meets (5.3 needs 17, 5.2 needs 16)."""
    tags = TAGS.replace("v5.3.0-rc1", "v5.3.0") if postgresql == 17 else TAGS
    result = bash(f"latest_stable_release {shlex.quote(str(LINES))} {postgresql}", stdin=tags)
    assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr


def test_latest_ignores_release_candidates_and_betas():
    result = bash(f"latest_stable_release {shlex.quote(str(LINES))} 17", stdin=TAGS)
    assert result.stdout.strip() == "5.2.4"


def test_latest_is_recorded_once_and_kept_when_a_newer_release_appears(tmp_path):
    record = tmp_path / "efs" / "moodle-release"
    record.parent.mkdir()
    resolve = f"resolve_release latest {shlex.quote(str(record))} '' {shlex.quote(str(LINES))} 16"
    first = bash(resolve, path_prefix=fake_git(tmp_path / "host-then", TAGS))
    assert (first.returncode, first.stdout.strip()) == (0, "5.2.4"), first.stderr
    assert record.read_text() == "5.2.4\n"
    newer = TAGS + "2c0f9deb9a9f0dce4ebc1f9e9a0b1c2d3e4f5a6b\trefs/tags/v5.2.5\n"
    second = bash(resolve, path_prefix=fake_git(tmp_path / "host-now", newer))
    assert (second.returncode, second.stdout.strip()) == (0, "5.2.4"), second.stderr
    assert record.read_text() == "5.2.4\n"


def test_latest_keeps_what_an_existing_database_runs(tmp_path):
    """A site brought in from a snapshot is never upgraded by `latest`; the code host is not even asked."""
    record = tmp_path / "moodle-release"
    broken_git = fake_git(tmp_path / "no-host", "")
    (broken_git / "git").write_text("#!/bin/bash\nexit 128\n")
    result = bash(f"resolve_release latest {record} 4.5.3 {LINES} 17", path_prefix=broken_git)
    assert (result.returncode, result.stdout.strip()) == (0, "4.5.3"), result.stderr
    assert record.read_text() == "4.5.3\n"


def test_latest_fails_with_one_line_when_the_code_host_cannot_be_reached(tmp_path):
    broken_git = fake_git(tmp_path / "no-host", "")
    (broken_git / "git").write_text("#!/bin/bash\nexit 128\n")
    result = bash(f"resolve_release latest {tmp_path}/record '' {LINES} 17", path_prefix=broken_git)
    assert result.returncode == 1
    assert result.stderr.count("DIE:") == 1 and "cannot list Moodle's releases" in result.stderr


@pytest.mark.parametrize(
    ("recorded", "installed"),
    [("5.2.4", ""), ("", "5.2.4"), ("4.5.10", "5.2.4")],
    ids=["recorded", "database", "both"],
)
def test_a_downgrade_is_refused_before_the_database_is_touched(tmp_path, recorded, installed):
    record = tmp_path / "moodle-release"
    if recorded:
        record.write_text(recorded + "\n")
    result = bash(f"resolve_release 5.2.3 {record} '{installed}' {LINES} 17")
    assert result.returncode == 1 and result.stdout == ""
    assert "DIE: MoodleVersion 5.2.3 is older than the 5.2.4 this site runs" in result.stderr
    assert "Moodle cannot be downgraded" in result.stderr


def test_a_newer_or_equal_explicit_release_is_taken(tmp_path):
    record = tmp_path / "moodle-release"
    record.write_text("4.5.9\n")
    for requested in ("4.5.9", "4.5.10", "5.2.4"):
        result = bash(f"resolve_release {requested} {record} 4.5.9 {LINES} 17")
        assert (result.returncode, result.stdout.strip()) == (0, requested), result.stderr
    assert record.read_text() == "4.5.9\n"  # recorded by the node that upgrades, not by the resolution


@pytest.mark.parametrize(
    ("setting", "release"),
    [("4.5 (Build: 20241007)", "4.5.0"), ("4.5.3+ (Build: 20250321)", "4.5.3"), ("5.2.10 (Build: 1)", "5.2.10"),
     ("", "")],
)  # fmt: skip
def test_the_database_release_setting_reads_as_a_release(setting, release):
    result = bash(f"release_of_setting {shlex.quote(setting)}")
    assert (result.returncode, result.stdout.strip()) == (0, release)


@pytest.mark.parametrize(
    ("release", "available", "php"),
    [("4.5.0", "8.1 8.2 8.3 8.4 8.5", "8.3"), ("5.0.2", "8.1 8.2 8.3 8.4 8.5", "8.4"),
     ("5.3.0", "8.5 8.4 8.3", "8.4"), ("4.5.10", "8.2", "8.2")],
)  # fmt: skip
def test_the_node_installs_the_newest_php_its_moodle_line_supports(release, available, php):
    result = bash(f"php_for_release {release} {LINES} {available}")
    assert (result.returncode, result.stdout.strip()) == (0, php), result.stderr


def test_no_php_in_range_stops_the_node_with_one_line():
    result = bash(f"php_for_release 5.2.4 {LINES} 8.2")
    assert result.returncode == 1 and "DIE: Moodle 5.2 needs PHP 8.3-8.4; this platform packages PHP 8.2" in (
        result.stderr
    )


def test_python_and_the_node_agree_on_php():
    for line in releases.lines().values():
        node = bash(f"php_for_release {line.name}.0 {LINES} {' '.join(releases.node_php_versions())}")
        assert node.stdout.strip() == releases.php_for(line, releases.node_php_versions())


def test_every_line_cites_its_release_notes():
    table = json.loads(LINES.read_text())["lines"]
    assert set(table) >= {"4.5", "5.0", "5.1", "5.2"}
    for name, entry in table.items():
        assert entry["source"] == f"https://moodledev.io/general/releases/{name}"


DEFAULTS = {
    "MoodleVersion": "latest",
    "MoodleCodeS3Uri": "",
    "MoodleCodeSha256": "",
    "MoodlePlugins": moodle.plugins_json([moodle.MEMCACHED_STORE]),
    "MoodlePluginsS3Prefix": "",
    "ApplicationCacheEngine": "memcached",
    "DatabaseEngineVersion": "16.8",
}


def check(**changes: str) -> None:
    run_checks(moodle.CHECKS, {**DEFAULTS, **changes}, "site.yaml")


def test_the_defaults_pass():
    check()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"MoodleVersion": "5.9.1"}, "MoodleVersion: Moodle 5.9 is not a line this moodle-cfn release knows"),
        ({"MoodleVersion": "5.3.0"}, "MoodleVersion: Moodle 5.3 needs PostgreSQL 17 or newer"),
        ({"MoodleCodeS3Uri": "s3://b-1/m.tar.gz", "MoodleCodeSha256": "a" * 64},
         "MoodleVersion: latest cannot describe a code bundle"),
    ],
)  # fmt: skip
def test_validate_refuses_a_release_the_nodes_cannot_run(changes, message):
    with pytest.raises(InputError, match=f"^site.yaml: {message}"):
        check(**changes)


def test_validate_refuses_a_line_whose_php_the_nodes_do_not_package(monkeypatch):
    monkeypatch.setattr(releases, "node_php_versions", lambda: ("8.1", "8.2"))
    with pytest.raises(
        InputError, match=r"MoodleVersion: Moodle 5.2 needs PHP 8.3-8.4 .*packages PHP 8.1, 8.2"
    ):
        check(MoodleVersion="5.2.4")


GIT_PLUGIN = {
    "component": "mod_attendance",
    "git": "https://git.example.edu/attendance.git",
    "commit": "a" * 40,
}
S3_PLUGIN = {"component": "local_rig", "s3": "s3://plugins-1/moodle/local_rig.zip", "sha256": "b" * 64}


@pytest.mark.parametrize(
    ("plugins", "key", "reason"),
    [
        ("[{", "MoodlePlugins", "is not valid JSON"),
        ('{"a": 1}', "MoodlePlugins", "must be a list of plugins"),
        (["mod_attendance"], r"MoodlePlugins\[1\]", "must be a mapping"),
        ([{**GIT_PLUGIN, "branch": "main"}], r"MoodlePlugins\[1\]\.branch", "unknown field"),
        ([{**GIT_PLUGIN, "component": "Attendance"}], r"MoodlePlugins\[1\]\.component", "Moodle component name"),
        ([{k: v for k, v in GIT_PLUGIN.items() if k != "commit"}], r"MoodlePlugins\[1\]\.commit",
         "pinned to a 40-character commit"),
        ([{**GIT_PLUGIN, "commit": "main"}], r"MoodlePlugins\[1\]\.commit", "pinned to a 40-character commit"),
        ([{k: v for k, v in S3_PLUGIN.items() if k != "sha256"}], r"MoodlePlugins\[1\]\.sha256",
         "pinned by its SHA-256"),
        ([{**S3_PLUGIN, "sha256": "B" * 64}], r"MoodlePlugins\[1\]\.sha256", "pinned by its SHA-256"),
        ([{**GIT_PLUGIN, **S3_PLUGIN}], r"MoodlePlugins\[1\]", "exactly one source"),
        ([{"component": "mod_x"}], r"MoodlePlugins\[1\]", "exactly one source"),
        ([{**GIT_PLUGIN, "git": "ssh://git@host/x.git"}], r"MoodlePlugins\[1\]\.git", "https git URL"),
        ([{**S3_PLUGIN, "s3": "s3://plugins-1/moodle/local_rig.rar"}], r"MoodlePlugins\[1\]\.s3", ".zip or .tar.gz"),
        ([{**S3_PLUGIN, "s3": "s3://elsewhere/local_rig.zip"}], r"MoodlePlugins\[1\]\.s3",
         "not under MoodlePluginsS3Prefix"),
        ([{**GIT_PLUGIN, "path": "../../etc"}], r"MoodlePlugins\[1\]\.path", "directory inside Moodle"),
        ([GIT_PLUGIN, GIT_PLUGIN], "MoodlePlugins", "lists mod_attendance more than once"),
        ([GIT_PLUGIN], "MoodlePlugins", "needs the cachestore_memcached plugin"),
    ],
)  # fmt: skip
def test_validate_rejects_every_bad_plugin_entry(plugins, key, reason):
    if isinstance(plugins, list):
        # The index counts from the memcached store, which the list keeps first (except where it is the point).
        plugins = plugins if reason.startswith("needs") else [moodle.MEMCACHED_STORE, *plugins]
        plugins = moodle.plugins_json(plugins)
    with pytest.raises(InputError, match=rf"^site.yaml: {key}: .*{reason}"):
        check(MoodlePlugins=plugins, MoodlePluginsS3Prefix="s3://plugins-1/moodle/")


def test_a_pinned_plugin_list_passes_and_valkey_needs_no_memcached_store():
    plugins = moodle.plugins_json([moodle.MEMCACHED_STORE, GIT_PLUGIN, S3_PLUGIN])
    check(MoodlePlugins=plugins, MoodlePluginsS3Prefix="s3://plugins-1/moodle/")
    check(MoodlePlugins=moodle.plugins_json([GIT_PLUGIN]), ApplicationCacheEngine="valkey")


def test_a_params_file_lists_plugins_in_yaml_and_the_stack_gets_one_json_text(tmp_path, capsys):
    from moodle_cfn.cli import main

    params = tmp_path / "site.yaml"
    params.write_text(
        "TemplatesBucketName: example-bucket\n"
        "MoodlePluginsS3Prefix: s3://plugins-1/moodle/\n"
        "MoodlePlugins:\n"
        f"  - {json.dumps(moodle.MEMCACHED_STORE)}\n"
        "  - component: local_rig\n"
        "    s3: s3://plugins-1/moodle/local_rig.zip\n"
        f"    sha256: {'c' * 64}\n"
    )
    out = tmp_path / "site.json"
    assert main(["params", str(params), "--out", str(out)]) == 0
    values = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(out.read_text())}
    assert json.loads(values["MoodlePlugins"]) == [
        moodle.MEMCACHED_STORE,
        {"component": "local_rig", "s3": "s3://plugins-1/moodle/local_rig.zip", "sha256": "c" * 64},
    ]
    params.write_text(params.read_text().replace("    sha256: " + "c" * 64 + "\n", ""))
    out.unlink()
    assert main(["params", str(params), "--out", str(out)]) != 0
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "MoodlePlugins[1].sha256" in error and str(params) in error
    assert not out.exists()


def test_the_default_is_latest_and_dev_params_keep_it(master_template):
    assert master_template["Parameters"]["MoodleVersion"]["Default"] == "latest"
    assert (
        "MoodleVersion" not in Path("params/dev.json").read_text()
        or '"latest"' in Path("params/dev.json").read_text()
    )


def test_a_snapshot_start_restores_encrypted_without_the_properties_a_restore_inherits():
    from moodle_cfn.layers import data
    from tests.cfn_eval import evaluate_conditions, resolve_ifs

    template = json.loads(data.build().to_json())
    cluster = template["Resources"]["DatabaseCluster"]
    assert cluster["DeletionPolicy"] == cluster["UpdateReplacePolicy"] == "Snapshot"
    for snapshot, restored in (("", False), ("arn:aws:rds:eu-west-1:123456789012:snapshot:old-moodle", True)):
        conditions = evaluate_conditions(template, {"DatabaseSnapshotIdentifier": snapshot})
        properties = resolve_ifs(cluster["Properties"], conditions)
        assert ("SnapshotIdentifier" in properties) is restored
        for inherited in ("MasterUsername", "DatabaseName", "StorageEncrypted"):
            assert (inherited not in properties) is restored
        # Encrypted either way: a restore names RDS's key when no customer key is given.
        assert properties.get("StorageEncrypted") is True or properties["KmsKeyId"] == "alias/aws/rds"
        assert properties["ManageMasterUserPassword"] is True and "EnableHttpEndpoint" not in properties
