"""The node's plugin installer (bootstrap/moodle-plugins.sh), run in bash against a small Moodle tree, real
git repositories and zip archives, and an `aws` that serves s3:// from a directory: every pinned source
lands where its type goes, and every broken one stops the node with one line."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest

from moodle_cfn import bootstrap

PLUGINS_SH = Path(bootstrap.__file__).parent / "moodle-plugins.sh"
PLUGIN_TYPES = {"local": "local", "cachestore": "cache/stores", "mod": "mod"}


def version_php(component: str) -> str:
    return f"<?php\n$plugin->component = '{component}';\n$plugin->version = 2026010100;\n"


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A Moodle tree, an 'S3' directory, and a bin directory whose `aws` copies s3://bucket/key from it."""
    moodle = tmp_path / "moodle"
    (moodle / "lib").mkdir(parents=True)
    (moodle / "lib" / "components.json").write_text(json.dumps({"plugintypes": PLUGIN_TYPES}))
    for directory in PLUGIN_TYPES.values():
        (moodle / directory).mkdir(parents=True, exist_ok=True)
    (moodle / "mod" / "forum").mkdir()
    s3 = tmp_path / "s3"
    s3.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(
        "#!/bin/bash\n"
        '[[ "$1 $2" == "s3 cp" ]] || exit 2\n'
        "for last; do :; done; source=${@: -2:1}\n"
        f'cp "{s3}/${{source#s3://}}" "$last" 2> /dev/null || {{ echo "404 Not Found" >&2; exit 1; }}\n'
    )
    (bin_dir / "aws").chmod(0o755)
    return {"moodle": moodle, "s3": s3, "bin": bin_dir, "work": tmp_path / "work", "root": tmp_path}


def add_plugins(world: dict[str, Path], plugins: list[dict[str, str]] | str, engine: str = "valkey"):
    world["work"].mkdir(exist_ok=True)
    text = plugins if isinstance(plugins, str) else json.dumps(plugins)
    script = (
        'log() { echo "LOG: $*" >&2; }\n'
        'die() { echo "DIE: $*" >&2; exit 1; }\n'
        f"source {shlex.quote(str(PLUGINS_SH))}\n"
        f"add_plugins {world['moodle']} {world['work']} {shlex.quote(text)} {engine}\n"
    )
    env = {"PATH": f"{world['bin']}:/usr/bin:/bin", "AWS_REGION": "eu-west-1", "HOME": str(world["root"])}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=False)


def zip_plugin(world: dict[str, Path], name: str, files: dict[str, str]) -> tuple[str, str]:
    """A zip in 'S3' with `files` (paths inside the archive); its s3:// URI and SHA-256."""
    path = world["s3"] / "plugins" / name
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for inside, text in files.items():
            archive.writestr(inside, text)
    return f"s3://plugins/{name}", hashlib.sha256(path.read_bytes()).hexdigest()


def git_plugin(world: dict[str, Path], component: str) -> tuple[str, str]:
    """A local git repository holding a plugin; its path and HEAD commit."""
    repository = world["root"] / f"repo-{component}"
    repository.mkdir()
    (repository / "version.php").write_text(version_php(component))
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "plugin"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    return str(repository), commit.strip()


def one_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("DIE: ")]
    return line


def test_a_zip_and_a_git_plugin_land_where_their_types_go(world):
    uri, digest = zip_plugin(world, "local_rig.zip", {"rig/version.php": version_php("local_rig"),
                                                       "rig/lang/en/local_rig.php": "<?php\n"})  # fmt: skip
    source, commit = git_plugin(world, "cachestore_memcached")
    result = add_plugins(world, [
        {"component": "cachestore_memcached", "git": source, "commit": commit},
        {"component": "local_rig", "s3": uri, "sha256": digest},
    ], engine="memcached")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (world["moodle"] / "local/rig/version.php").read_text() == version_php("local_rig")
    assert (world["moodle"] / "local/rig/lang/en/local_rig.php").exists()
    assert (world["moodle"] / "cache/stores/memcached/version.php").exists()
    assert not (world["moodle"] / "cache/stores/memcached/.git").exists()


def test_a_subplugin_goes_to_its_path(world):
    (world["moodle"] / "mod" / "assign" / "submission").mkdir(parents=True)
    uri, digest = zip_plugin(world, "x.zip", {"x/version.php": version_php("assignsubmission_x")})
    result = add_plugins(world, [{"component": "assignsubmission_x", "s3": uri, "sha256": digest,
                                  "path": "mod/assign/submission/x"}])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (world["moodle"] / "mod/assign/submission/x/version.php").exists()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong digest", "does not match its sha256"),
        ("missing object", "cannot download s3://plugins/absent.zip"),
        ("two top directories", "must hold exactly one top directory"),
        ("other component", "version.php does not declare the component local_rig"),
        ("core directory", "mod/forum is already in Moodle's code"),
        ("unknown type", "Moodle has no plugin type qtype; give the plugin's path"),
        ("escaping path", "../../etc is not a directory inside Moodle"),
        ("unpinned git", "give git with a 40-character commit, or s3 with its sha256"),
        ("absent commit", "has no commit 0000000000000000000000000000000000000000"),
        ("no memcached store", "has no cachestore_memcached"),
        ("not a list", "MoodlePlugins is not a JSON list"),
    ],
)
def test_every_broken_plugin_stops_the_node_with_one_line(world, case, reason):
    good_uri, good_digest = zip_plugin(world, "local_rig.zip", {"rig/version.php": version_php("local_rig")})
    source, _ = git_plugin(world, "local_git")
    engine = "valkey"
    plugins: list[dict[str, str]] | str
    if case == "wrong digest":
        plugins = [{"component": "local_rig", "s3": good_uri, "sha256": "0" * 64}]
    elif case == "missing object":
        plugins = [{"component": "local_rig", "s3": "s3://plugins/absent.zip", "sha256": good_digest}]
    elif case == "two top directories":
        uri, digest = zip_plugin(world, "two.zip", {"a/version.php": version_php("local_rig"), "b/x": ""})
        plugins = [{"component": "local_rig", "s3": uri, "sha256": digest}]
    elif case == "other component":
        uri, digest = zip_plugin(world, "other.zip", {"rig/version.php": version_php("local_other")})
        plugins = [{"component": "local_rig", "s3": uri, "sha256": digest}]
    elif case == "core directory":
        plugins = [{"component": "mod_forum", "s3": good_uri, "sha256": good_digest}]
    elif case == "unknown type":
        plugins = [{"component": "qtype_x", "s3": good_uri, "sha256": good_digest}]
    elif case == "escaping path":
        plugins = [{"component": "local_rig", "s3": good_uri, "sha256": good_digest, "path": "../../etc"}]
    elif case == "unpinned git":
        plugins = [{"component": "local_git", "git": source, "commit": "main"}]
    elif case == "absent commit":
        plugins = [{"component": "local_git", "git": source, "commit": "0" * 40}]
    elif case == "no memcached store":
        plugins, engine = [{"component": "local_rig", "s3": good_uri, "sha256": good_digest}], "memcached"
    else:
        plugins = '{"component": "local_rig"}'
    assert reason in one_failure(add_plugins(world, plugins, engine))
