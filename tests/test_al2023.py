"""Amazon Linux 2023 as it is: the node's packages and PHP list agree with the sourced package table, the
node refuses an AMI older than the table's minimum, and `validate` checks a pinned AMI's stated release.

The platform file's functions run here in bash with dnf, rpm and php stubbed: what they would install is
read from the stub's log, so the test sees the names the node really asks dnf for.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from moodle_cfn import al2023, bootstrap, releases
from moodle_cfn.cli import main
from moodle_cfn.layers import app, database, web_node

BOOTSTRAP = Path(bootstrap.__file__).parent
PLATFORM = BOOTSTRAP / releases.NODE_PLATFORM_FILE
MINIMUM = al2023.minimum_release()
PHP_MODULES = "[PHP Modules]\napcu\nCore\nmemcached\npgsql\nredis\n"


def platform(script: str, tmp_path: Path, release: str = MINIMUM, modules: str = PHP_MODULES,
             **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:  # fmt: skip
    """Run `script` with platform-al2023.sh sourced and stubs for dnf (logs what it installs), rpm (answers
    `release`) and php (prints `modules`); die() prints DIE: and exits 1 as on a node. Returns the run and
    the packages dnf was asked for."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "dnf.log"
    log.write_text("")
    for name, body in (
        ("dnf", f'for a in "$@"; do [[ $a == -* || $a == install ]] || echo "$a" >> {shlex.quote(str(log))}; done'),
        ("rpm", f"[[ $* == *system-release* ]] && printf %s {shlex.quote(release)}"),
        ("php", f"[[ $1 == -m ]] && printf %s {shlex.quote(modules)}"),
    ):  # fmt: skip
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    prelude = f'die() {{ echo "DIE: $*" >&2; exit 1; }}\nsource {shlex.quote(str(PLATFORM))}\n'
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + prelude + script], capture_output=True,
                            text=True, check=False, env={"PATH": f"{stubs}:/usr/bin:/bin", **env})  # fmt: skip
    return result, log.read_text().split()


def database_majors() -> list[str]:
    """The PostgreSQL majors DatabaseEngineVersion admits (its AllowedPattern, tried on x.0)."""
    pattern = database.DATABASE_ENGINE_VERSION.parameter.AllowedPattern
    return [str(major) for major in range(10, 30) if re.fullmatch(pattern, f"{major}.0")]


def php_packages(php: str, tmp_path: Path) -> set[str]:
    """Every package the node installs for one PHP version (with and without a valkey cache)."""
    names: set[str] = set()
    for with_redis in ("false", "true"):
        result, installed = platform(f"platform_install_php {php} {with_redis}", tmp_path)
        assert result.returncode == 0, result.stderr
        names.update(installed)
    return names


def user_data_packages() -> set[str]:
    """What user-data.sh installs before the node files exist."""
    match = re.search(
        r"^dnf install -y --setopt=install_weak_deps=False ([^|]+)\|\|", bootstrap.read("user-data.sh"), re.M
    )
    assert match, "user-data.sh installs its packages with one dnf install line"
    return set(match.group(1).split())


def test_the_table_gives_a_release_evidence_and_public_source_for_each_package():
    table = al2023.table()
    for name, entry in table["packages"].items():
        assert al2023.RELEASE.fullmatch(entry["release"]), name
        assert entry["evidence"] in ("new", "present"), name
        assert entry["source"].startswith("https://docs.aws.amazon.com/linux/al2023/"), name
    for name, entry in table["not_installed"].items():
        assert entry["status"] in ("absent", "unconfirmed") and entry["reason"], name
        assert entry["source"].startswith("https://docs.aws.amazon.com/linux/al2023/"), name
    assert set(table["packages"]).isdisjoint(table["not_installed"])


def test_the_node_installs_exactly_the_packages_of_the_table(tmp_path):
    installed = user_data_packages()
    for major in database_majors():
        result, names = platform("platform_install_base_packages", tmp_path, DATABASE_MAJOR_VERSION=major)
        assert result.returncode == 0, result.stderr
        assert f"postgresql{major}" in names
        installed.update(names)
    for php in releases.node_php_versions():
        installed |= php_packages(php, tmp_path)
    assert installed == set(al2023.packages())


def test_the_php_list_holds_every_packaged_php_that_has_all_the_node_needs_and_no_other(tmp_path):
    streams = al2023.table()["php_streams"]["versions"]
    assert set(releases.node_php_versions()) <= set(streams)
    for php in streams:
        needed = php_packages(php, tmp_path)
        if php in releases.node_php_versions():
            assert needed <= set(al2023.packages()), php
        else:
            # A version left out is left out for a recorded reason.
            assert needed & set(al2023.table()["not_installed"]), php
            assert not needed <= set(al2023.packages()), php


def test_every_moodle_line_still_has_a_php_on_the_nodes():
    for line in releases.lines().values():
        assert releases.php_for(line, releases.node_php_versions()), line.name


def test_the_node_and_the_table_agree_on_the_minimum_release():
    (stated,) = re.findall(r"local min_release=(\S+)", PLATFORM.read_text())
    assert stated == MINIMUM == "2023.10.20260202"
    # The pecl-memcached packages decide it; nothing in the table is newer.
    assert {p.name for p in al2023.packages().values() if p.release == MINIMUM and p.evidence == "new"} == {
        "php8.3-pecl-memcached",
        "php8.4-pecl-memcached",
    }


@pytest.mark.parametrize("release", ["2023.8.20250818", "2023.9.20251014", "2023.10.20260120"])
def test_the_node_refuses_an_older_ami_in_one_line_before_dnf(tmp_path, release):
    result, installed = platform("platform_install_base_packages", tmp_path, release=release,
                                 DATABASE_MAJOR_VERSION="17")  # fmt: skip
    assert result.returncode == 1 and installed == []
    assert result.stderr == (
        f"DIE: this AMI is Amazon Linux 2023 release {release}; the node's packages need {MINIMUM} or newer "
        "(its repositories are locked to its release): use a newer AMI\n"
    )


@pytest.mark.parametrize("release", [MINIMUM, "2023.11.20260526", "2023.12.20260608"])
def test_the_node_accepts_the_minimum_and_newer(tmp_path, release):
    result, installed = platform("platform_install_base_packages", tmp_path, release=release,
                                 DATABASE_MAJOR_VERSION="16")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "postgresql16" in installed and "postgresql17" not in installed


def test_the_node_refuses_a_site_json_without_the_postgresql_major(tmp_path):
    result, installed = platform("platform_install_base_packages", tmp_path)
    assert result.returncode == 1 and installed == []
    assert (
        result.stderr.startswith("DIE: site.json gives no PostgreSQL major version")
        and result.stderr.count("\n") == 1
    )


def test_phpredis_is_a_package_and_nothing_compiles(tmp_path):
    result, installed = platform("platform_install_php 8.4 true", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "php8.4-pecl-redis6" in installed
    assert not {"gcc", "make", "php-pear", "php8.4-devel"} & set(installed)
    assert not re.search(r"\bpecl install\b|\bgcc\b|-devel\b", re.sub(r"#.*", "", PLATFORM.read_text()))


def test_an_extension_that_does_not_load_stops_the_node_in_one_line(tmp_path):
    result, _ = platform(
        "platform_install_php 8.4 true", tmp_path, modules="[PHP Modules]\napcu\nmemcached\n"
    )
    assert (result.returncode, result.stderr) == (
        1,
        "DIE: PHP 8.4 does not load redis after installing its package\n",
    )


def test_site_json_carries_the_major_of_the_engine_version():
    template = json.loads(app.build().to_json())
    files = template["Resources"]["WebLaunchTemplate"]["Metadata"]["AWS::CloudFormation::Init"]["config"][
        "files"
    ]
    site = files["/etc/moodle-cfn/site.json"]["content"]
    assert site["DATABASE_MAJOR_VERSION"] == {
        "Fn::Select": [0, {"Fn::Split": [".", {"Ref": "DatabaseEngineVersion"}]}]
    }


# validate: the AMI parameters ------------------------------------------------------------------------------


VALID = "TemplatesBucketName: my-bucket\n"
PINNED_X86 = "WebAmiX8664:\n  parameter: /moodle/al2023-x86_64\n"

LATEST = "/aws/service/ami-amazon-linux-latest/"
GOOD_AMIS = {
    "public default kernel": (f"WebAmiArm64: {LATEST}al2023-ami-kernel-default-arm64\n", "WebAmiArm64",
                              f"{LATEST}al2023-ami-kernel-default-arm64"),
    "public kernel 6.12": (f"WebAmiX8664: {LATEST}al2023-ami-kernel-6.12-x86_64\n", "WebAmiX8664",
                           f"{LATEST}al2023-ami-kernel-6.12-x86_64"),
    "pinned at the minimum": (PINNED_X86 + f"  release: {MINIMUM}\n", "WebAmiX8664", "/moodle/al2023-x86_64"),
    "pinned newer, AMI name form": (PINNED_X86 + "  release: 2023.11.20260526.0\n", "WebAmiX8664",
                                    "/moodle/al2023-x86_64"),
}  # fmt: skip


@pytest.mark.parametrize(("text", "name", "value"), list(GOOD_AMIS.values()), ids=list(GOOD_AMIS))
def test_validate_accepts_latest_al2023_parameters_and_pinned_amis_new_enough(
    tmp_path, capsys, text, name, value
):
    path = tmp_path / "p.yaml"
    path.write_text(VALID + text)
    assert main(["params", str(path)]) == 0
    given = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(capsys.readouterr().out)}
    assert given[name] == value


def test_the_ami_defaults_are_public_latest_al2023_parameters():
    for ami, arch in ((web_node.AMI_ARM64, "arm64"), (web_node.AMI_X86_64, "x86_64")):
        assert al2023.latest_parameter(arch).match(ami.parameter.Default)
        assert app.EXPANDERS[ami.name](ami.parameter.Default, "p.yaml") == {ami.name: ami.parameter.Default}


BAD_AMIS = {
    "pinned without its release": (
        "WebAmiX8664: /moodle/al2023-x86_64\n",
        "WebAmiX8664: /moodle/al2023-x86_64 holds a pinned AMI whose Amazon Linux 2023 release validate cannot "
        f"see: write {{parameter: /moodle/al2023-x86_64, release: <that AMI's release>}}; the nodes need {MINIMUM} "
        "or newer",
    ),
    "release too old": (
        PINNED_X86 + "  release: 2023.8.20250818\n",
        f"WebAmiX8664.release: 2023.8.20250818 is older than {MINIMUM}, the oldest Amazon Linux 2023 release "
        "known to package everything the nodes install: it lacks php8.3-pecl-memcached, php8.4-pecl-memcached "
        "(an AMI installs from its own release only)",
    ),
    "release not AL2023": (
        PINNED_X86 + "  release: 2.0.20250818.0\n",
        f"WebAmiX8664.release: '2.0.20250818.0' is not an Amazon Linux 2023 release such as {MINIMUM}",
    ),
    "release a number": (
        PINNED_X86 + "  release: 2023.10\n",
        f"WebAmiX8664.release: 2023.1 is not an Amazon Linux 2023 release such as {MINIMUM}",
    ),
    "missing parameter": (
        f"WebAmiX8664:\n  release: {MINIMUM}\n",
        "WebAmiX8664: missing parameter (a pinned AMI is {parameter, release})",
    ),
    "unknown field": (
        PINNED_X86 + f"  release: {MINIMUM}\n  kernel: '6.12'\n",
        "WebAmiX8664: unknown kernel (a pinned AMI is {parameter, release})",
    ),
    "bad parameter name": (
        f"WebAmiX8664:\n  parameter: 'ami id'\n  release: {MINIMUM}\n",
        "WebAmiX8664.parameter: 'ami id' is not an SSM parameter name",
    ),
    "not Amazon Linux 2023": (
        "WebAmiArm64: /aws/service/ami-amazon-linux-latest/amzn2-ami-hvm-arm64-gp2\n",
        "WebAmiArm64: /aws/service/ami-amazon-linux-latest/amzn2-ami-hvm-arm64-gp2 is not the public parameter "
        "of a standard Amazon Linux 2023 arm64 AMI",
    ),
    "other architecture": (
        "WebAmiArm64: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\n",
        "WebAmiArm64: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64 is not the public "
        "parameter of a standard Amazon Linux 2023 arm64 AMI",
    ),
    "a list": (
        "WebAmiX8664: [a, b]\n",
        "WebAmiX8664: expected an SSM parameter name, or {parameter, release} for a pinned AMI, found a list",
    ),
}


@pytest.mark.parametrize(("text", "message"), list(BAD_AMIS.values()), ids=list(BAD_AMIS))
def test_validate_refuses_a_bad_ami_in_one_line_naming_file_key_and_reason(tmp_path, capsys, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(VALID + text)
    for command in ("validate", "params"):
        assert main([command, str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err
        assert err.count("\n") == 1 and err.startswith(f"moodle-cfn: error: {path}: {message}"), err


def test_the_design_notes_state_the_minimum_release():
    design = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text()
    assert f"**release {MINIMUM} or newer**" in design and f"That is **{MINIMUM}**" in design
