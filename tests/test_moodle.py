"""Moodle on the web nodes: the bootstrap files lint clean, config.php gives the right $CFG for every
engine and Moodle line, and the launch template carries the files and the boot steps in order."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from moodle_cfn import bootstrap
from moodle_cfn.checks import run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.layers import app, edge, mail, moodle
from tests.cfn_eval import resolve_ifs
from tests.conftest import tool
from tests.node_rig.cfn_init import resolve

BOOTSTRAP_DIR = Path(bootstrap.__file__).parent
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="php-cli is not installed (.ci/run installs it)")


def php_files() -> list[Path]:
    return sorted(BOOTSTRAP_DIR.glob("*.php"))


def test_php_cli_is_installed_where_the_suite_runs_in_ci():
    # .ci/run installs php-cli and sets MOODLE_CFN_REQUIRE_PHP: CI must not skip the PHP checks below.
    if not os.environ.get("MOODLE_CFN_REQUIRE_PHP"):
        pytest.skip("php-cli only required where MOODLE_CFN_REQUIRE_PHP is set (.ci/run)")
    assert PHP is not None, "install php-cli (apt-get install php-cli), as .ci/run does"


@needs_php
@pytest.mark.parametrize("path", php_files(), ids=lambda p: p.name)
def test_php_files_lint_clean(path):
    result = subprocess.run([PHP, "-l", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


RIG_PLATFORM = Path(__file__).parent / "node_rig" / "platform-debian.sh"


@pytest.mark.parametrize(
    "path",
    [
        BOOTSTRAP_DIR / "moodle-node-setup.sh",
        BOOTSTRAP_DIR / "platform-al2023.sh",
        BOOTSTRAP_DIR / "moodle-metrics.sh",
        RIG_PLATFORM,
    ],
    ids=lambda p: p.name,
)
def test_node_scripts_are_shellcheck_clean(path):
    # -x follows the setup script's `source` of the platform file, so its variables are known.
    result = subprocess.run([tool("shellcheck"), "-x", "-s", "bash", str(path)],
                            capture_output=True, text=True, check=False, cwd=path.parent)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "")


def platform_names(path: Path) -> set[str]:
    """The variables and functions a platform file defines."""
    text = path.read_text()
    return set(re.findall(r"^readonly (\w+)=", text, re.M)) | set(
        re.findall(r"^(platform_\w+)\(\)", text, re.M)
    )


def test_the_rehearsal_platform_defines_what_the_al2023_one_does():
    assert platform_names(RIG_PLATFORM) >= platform_names(BOOTSTRAP_DIR / "platform-al2023.sh")
    scripts = "".join(
        bootstrap.read(f"{name}.sh")
        for name in ("moodle-node-setup", "moodle-node-ready", "moodle-node-drain")
    )
    used = set(re.findall(r"\b(platform_\w+)\b", scripts))
    assert used == {
        n for n in platform_names(BOOTSTRAP_DIR / "platform-al2023.sh") if n.startswith("platform_")
    }


SETUP_STUB = "<?php echo json_encode($CFG);\n"


def settings(session_engine: str, router: bool) -> dict[str, Any]:
    session: dict[str, Any] = (
        {"engine": "memcached", "servers": ["n1.cache:11211", "n2.cache:11211"]}
        if session_engine == "memcached"
        else {
            "engine": "valkey",
            "host": "primary.cache",
            "port": 6379,
            "auth": "token123",
            "cafile": "/etc/pki/tls/certs/ca-bundle.crt",
        }
    )
    return {
        "wwwroot": "https://moodle.example.edu",
        "router": router,
        "database": {
            "host": "db.cluster",
            "port": 5432,
            "name": "moodle",
            "user": "moodle",
            "password": "pw",
        },
        "paths": {
            "dataroot": "/var/moodledata/data",
            "cachedir": "/var/moodledata/cache",
            "tempdir": "/var/moodledata/temp",
            "backuptempdir": "/var/moodledata/backuptemp",
            "localcachedir": "/var/cache/moodle",
        },
        "session": session,
        "application": {"engine": "memcached", "servers": ["a1.cache:11211"]},
    }


def run_config(tmp_path: Path, layout: str, data: dict[str, Any], cli: bool = False) -> dict[str, Any]:
    """Execute the real config.php against a stub lib/setup.php that prints $CFG: as a web request, or as a
    Moodle command-line script (`cli`: CLI_SCRIPT defined first, as every admin/cli script does)."""
    root = tmp_path / "moodle"
    lib = root / ("public/lib" if layout == "5.1+" else "lib")
    lib.mkdir(parents=True)
    (lib / "setup.php").write_text(SETUP_STUB)
    shutil.copy(BOOTSTRAP_DIR / "config.php", root / "config.php")
    settings_file = tmp_path / "moodle.json"
    settings_file.write_text(json.dumps(data))
    script = (
        ["-r", f"define('CLI_SCRIPT', true); require '{root / 'config.php'}';"]
        if cli
        else [str(root / "config.php")]
    )
    result = subprocess.run([PHP, *script], capture_output=True, text=True, check=False,
                            env={"MOODLE_CFN_SETTINGS": str(settings_file), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_php
@pytest.mark.parametrize("layout", ["4.5", "5.1+"])
def test_config_php_with_memcached_sessions(tmp_path, layout):
    cfg = run_config(tmp_path, layout, settings("memcached", router=layout != "4.5"))
    assert cfg["wwwroot"] == "https://moodle.example.edu" and cfg["sslproxy"] is True
    assert (cfg["dbtype"], cfg["dbhost"], cfg["dbuser"]) == ("pgsql", "db.cluster", "moodle")
    assert cfg["dboptions"]["dbport"] == 5432
    assert cfg["lock_factory"] == "\\core\\lock\\postgres_lock_factory"
    assert cfg["session_handler_class"] == "\\core\\session\\memcached"
    assert cfg["session_memcached_save_path"] == "n1.cache:11211,n2.cache:11211"
    # A lock left behind by a cache that stopped answering lasts CloudFront's origin read timeout at most.
    assert (cfg["session_memcached_acquire_lock_timeout"], cfg["session_memcached_lock_expire"]) == (10, 60)
    assert cfg["session_memcached_lock_expire"] == edge.ORIGIN_READ_TIMEOUT
    assert (cfg["dataroot"], cfg["localcachedir"]) == ("/var/moodledata/data", "/var/cache/moodle")
    assert cfg.get("routerconfigured", False) is (layout != "4.5")


@needs_php
@pytest.mark.parametrize("layout", ["4.5", "5.1+"])
def test_config_php_with_valkey_sessions(tmp_path, layout):
    cfg = run_config(tmp_path, layout, settings("valkey", router=layout != "4.5"))
    assert cfg["session_handler_class"] == "\\core\\session\\redis"
    # A bare host: Moodle splits host:port on ':' (a tls:// prefix breaks it); TLS comes from the context.
    assert (cfg["session_redis_host"], cfg["session_redis_port"], cfg["session_redis_auth"]) == (
        "primary.cache", 6379, "token123")  # fmt: skip
    assert cfg["session_redis_encrypt"] == {
        "cafile": "/etc/pki/tls/certs/ca-bundle.crt", "verify_peer": True, "verify_peer_name": True}  # fmt: skip
    assert "session_memcached_save_path" not in cfg
    assert (cfg["session_redis_acquire_lock_timeout"], cfg["session_redis_lock_expire"]) == (10, 60)
    # Moodle 5.x's connect and reply timeout and retries: about 4.5 s at most on a valkey that stopped answering.
    assert (cfg["session_redis_connection_timeout"], cfg["session_redis_max_retries"]) == (2, 1)


def test_site_json_gives_the_script_every_setting_it_reads():
    given = set(app.node_settings(app.site_host(object(), object()), object(), object()))
    given |= set(mail.node_settings(object()))
    assert moodle.settings_names() == given


def test_launch_template_carries_every_bootstrap_file_verbatim(app_template):
    files = app_template["Resources"]["WebLaunchTemplate"]["Metadata"]["AWS::CloudFormation::Init"]["config"][
        "files"
    ]
    for name, mode in moodle.SHARED_FILES:
        entry = files[f"{moodle.SHARE_DIR}/{name}"]
        assert (entry["content"], entry["mode"]) == (bootstrap.read(name), mode)
    # One JSON object of references: cfn-init writes it as JSON, so no value is ever parsed by a shell.
    site_json = files["/etc/moodle-cfn/site.json"]
    assert site_json["mode"] == "000600" and isinstance(site_json["content"], dict)
    assert site_json["content"]["SITE_FULL_NAME"] == {"Ref": "MoodleSiteFullName"}
    assert "password" not in json.dumps(site_json).lower().replace("secret_arn", "")


def test_boot_steps_run_in_order():
    user_data = bootstrap.read("user-data.sh")
    order = [
        "dnf install",
        "/opt/aws/bin/cfn-init -v",
        "exec /usr/share/moodle-cfn/moodle-node-ready.sh --first-boot",
    ]
    positions = [user_data.index(step) for step in order]
    assert positions == sorted(positions)
    ready = bootstrap.read("moodle-node-ready.sh")
    main = ready[ready.index("main() {") :]
    steps = ['rm -f "$ready_file"', "moodle-node-setup.sh", "moodle_answers && break", '> "$ready_file.partial"',
             "complete_hook CONTINUE", "signal SUCCESS"]  # fmt: skip
    assert [main.index(step) for step in steps] == sorted(main.index(step) for step in steps)
    script = bootstrap.read("moodle-node-setup.sh")
    main = script[script.index("main() {") :]
    steps = ["install_base_packages", "mount_moodledata", "choose_release", "install_php", "fetch_code",
             "write_settings", "configure_web_server", "install_or_upgrade", "start_cron_and_logs"]  # fmt: skip
    assert [main.index(step) for step in steps] == sorted(main.index(step) for step in steps)


def test_only_one_node_installs_and_it_checks_inside_the_lock():
    script = bootstrap.read("moodle-node-setup.sh")
    body = script[script.index("install_or_upgrade() {") : script.index("start_cron_and_logs() {")]
    assert (
        body.index("flock 9")
        < body.index("to_regclass('public.mdl_config')")
        < body.index("install_database.php")
    )
    assert '9> "$state_dir/install.lock"' in body
    upgrade = body[body.index("upgrade_site() {") :]
    assert upgrade.index("maintenance_on") < upgrade.index("upgrade.php\" --non-interactive") < upgrade.index(
        "maintenance_off")  # fmt: skip


def test_code_is_verified_and_identical_on_every_node():
    script = bootstrap.read("moodle-node-setup.sh")
    assert "sha256sum -c" in script and 'git clone --quiet --depth 1 --branch "v$moodle_release"' in script
    assert re.search(r'rev-parse HEAD\)" == "\$commit"', bootstrap.read("moodle-plugins.sh"))
    # The release (and its archive on EFS) is named by everything that makes the code: the resolved
    # release, the bundle's digest and the plugins with their pins.
    release = script[script.index("release_id() {") : script.index("build_release() {")]
    for name in ("moodle_release", "MOODLE_CODE_SHA256", "MOODLE_PLUGINS"):
        assert f"${name}" in release or f"${{{name}" in release


def test_efs_is_mounted_over_tls_and_survives_a_reboot():
    script = bootstrap.read("platform-al2023.sh")
    assert "efs _netdev,noresvport,tls,iam,accesspoint=$access_point" in script and ">> /etc/fstab" in script


def test_vhost_routes_unknown_paths_to_r_php_for_moodle_5():
    script = bootstrap.read("moodle-node-setup.sh")
    assert 'router="FallbackResource /r.php"' in script
    assert "@ROUTER@" in bootstrap.read("moodle-vhost.conf") and "@DOCUMENT_ROOT@" in bootstrap.read(
        "moodle-vhost.conf"
    )


def test_opcache_uses_shared_memory():
    ini = bootstrap.read("php-moodle.ini")
    assert "opcache.file_cache_only" not in ini and "opcache.memory_consumption = 256" in ini
    assert "max_input_vars = 5000" in ini


def test_a_code_bundle_needs_its_checksum():
    run_checks(
        moodle.CHECKS,
        {"MoodleCodeS3Uri": "", "MoodleCodeSha256": "", "MoodleVersion": "latest", "MoodlePlugins": "[]"},
        "p.yaml",
    )
    with pytest.raises(InputError, match=r"p\.yaml: MoodleCodeSha256: is required with MoodleCodeS3Uri"):
        run_checks(
            moodle.CHECKS, {"MoodleCodeS3Uri": "s3://b-1/moodle.tar.gz", "MoodleCodeSha256": ""}, "p.yaml"
        )


def test_admin_password_is_generated_and_kept(app_template):
    secret = app_template["Resources"]["MoodleAdminSecret"]
    # Kept, unless the create that made it rolls back (tests/test_first_create.py).
    assert (secret["DeletionPolicy"], secret["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["RequireEachIncludedType"] is True and generated["PasswordLength"] >= 16
    assert app_template["Outputs"]["MoodleAdminSecretArn"]["Value"] == {"Ref": "MoodleAdminSecret"}


# --- The fleet's life: readiness through the lifecycle hook, rolling on every input ---------------------


def launch_template(app_template: dict[str, Any]) -> dict[str, Any]:
    return app_template["Resources"]["WebLaunchTemplate"]


def metadata_references(value: Any) -> set[str]:
    """Every parameter, pseudo parameter and resource the launch template's Metadata refers to."""
    if isinstance(value, list):
        return set().union(*(metadata_references(item) for item in value)) if value else set()
    if not isinstance(value, dict):
        return set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", value)) if isinstance(value, str) else set()
    if set(value) == {"Ref"}:
        return {value["Ref"]}
    if set(value) == {"Fn::GetAtt"}:
        return {".".join(value["Fn::GetAtt"])}
    return set().union(*(metadata_references(item) for item in value.values())) if value else set()


@pytest.mark.parametrize("branch", [True, False], ids=["conditions-true", "conditions-false"])
def test_every_node_input_changes_the_launch_template_data(app_template, branch):
    """A node reads what the Metadata refers to; each of those, changed alone, must change LaunchTemplateData
    (a new version, so a rolling update), not only the Metadata (no version, no roll). Both branches of
    every Fn::If are covered (the site's host is a domain, CloudFront's name or the load balancer's)."""
    lt = launch_template(app_template)
    conditions = dict.fromkeys(app_template["Conditions"], branch)
    metadata = resolve_ifs(lt["Metadata"], conditions)
    user_data = resolve_ifs(lt["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"], conditions)
    local = {"Host"}  # Fn::Sub's own variable in WWWROOT, bound to one of the references
    inputs = metadata_references(metadata) - local - {"AWS::Region", "AWS::StackName", "AWS::Partition"}
    assert {
        "MoodleVersion",
        "MoodleCodeSha256",
        "DatabaseEndpoint",
        "SessionCacheEngine",
        "FileSystemId",
    } <= inputs
    names = {name: f"value-of-{name}" for name in inputs | {"AWS::StackName", "AWS::Region"}}
    base = resolve(user_data, names)
    unchanged = [
        name for name in sorted(inputs) if resolve(user_data, {**names, name: names[name] + "-2"}) == base
    ]
    assert unchanged == [], f"changing these inputs would not roll the fleet: {unchanged}"


def test_node_files_digest_is_in_the_launch_template_data(app_template):
    user_data = json.dumps(launch_template(app_template)["Properties"]["LaunchTemplateData"]["UserData"])
    assert moodle.node_files_digest() in user_data


def test_the_group_waits_for_each_node_through_a_launch_hook(app_template):
    group = app_template["Resources"]["WebAutoScalingGroup"]["Properties"]
    hook, _ = group["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert hook["DefaultResult"] == "ABANDON" and hook["LifecycleHookName"] == "moodle-node-ready"
    ready = bootstrap.read("moodle-node-ready.sh")
    user_data = bootstrap.read("user-data.sh")
    # Both paths complete the hook: CONTINUE once Moodle answers, ABANDON on any failure (also before the
    # node files exist, from user-data.sh).
    assert ready.index("moodle_answers && break") < ready.index("complete_hook CONTINUE")
    assert "complete_hook ABANDON" in ready[ready.index("fail() {") : ready.index("trap 'fail")]
    assert "--lifecycle-action-result ABANDON" in user_data
    assert user_data.index('abandon "cannot install aws-cfn-bootstrap"') < user_data.index("exec /usr/share")


def test_the_group_waits_for_a_leaving_node_to_finish_its_task(app_template):
    _, drain = app_template["Resources"]["WebAutoScalingGroup"]["Properties"][
        "LifecycleHookSpecificationList"
    ]
    assert drain["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert (drain["LifecycleHookName"], drain["DefaultResult"]) == ("moodle-node-drain", "CONTINUE")
    script = bootstrap.read("moodle-node-drain.sh")
    heartbeat = int(re.search(r"MOODLE_CFN_HEARTBEAT_SECONDS:-(\d+)", script).group(1))
    budget = int(re.search(r"^readonly drain_budget=(\d+)$", script, re.M).group(1))
    # Heartbeats well inside the hook's timeout; the whole wait inside what a lifecycle action allows (48 hours
    # or 100 heartbeat timeouts, whichever is less: EC2 Auto Scaling User Guide, lifecycle hooks).
    assert heartbeat * 2 <= drain["HeartbeatTimeout"]
    assert budget <= min(48 * 3600, 100 * drain["HeartbeatTimeout"])
    # In order: no new cron run, the running one asked to finish, the wait, then the completion.
    steps = ["platform_stop_cron_timer", "kill -TERM", "while kill -0", "complete-lifecycle-action"]
    assert [script.index(step) for step in steps] == sorted(script.index(step) for step in steps)
    assert "moodle-node-drain.service" in bootstrap.read("platform-al2023.sh")


# What an operator may type reaches the node (the rehearsal proves the rest of the way, into Moodle) ------


@pytest.mark.parametrize(
    ("value", "admitted"),
    [
        ("admin@example.edu", True),
        ("o'neil!#$%&*+/=?^_`{|}~-x.y@mail-1.example.edu", True),  # every atom character Moodle accepts
        ("admin@localhost", False),  # Moodle's validate_email wants a dotted domain
        ("a..b@example.edu", False),
        ("a b@example.edu", False),
        ('"quoted"@example.edu', False),
        ("admin@-example.edu", False),
    ],
)
def test_the_admin_email_pattern_admits_what_moodle_accepts(value, admitted):
    assert bool(re.fullmatch(moodle.EMAIL_PATTERN, value)) is admitted


def test_a_site_name_with_quotes_dollars_and_brackets_is_admitted():
    pattern = moodle.SITE_FULL_NAME.parameter.AllowedPattern
    for name in [
        "Moodle (development)",
        'King\'s "College" <Moodle> & $HOME `id` \\ é 学',
        "".join(map(chr, range(33, 127))),
    ]:
        assert re.fullmatch(pattern, name), name
    assert not re.fullmatch(pattern, "two\nlines") and not re.fullmatch(pattern, "x" * 101)


# ---- issue 26: the shared disk's PHP files are never cached, the reader takes the safe reads ----


def rendered_blacklist() -> tuple[list[str], str]:
    """(entries, dataroot): opcache-moodledata.blacklist as moodle-node-setup.sh renders it, and the
    dataroot the same script writes into moodle.json."""
    script = bootstrap.read("moodle-node-setup.sh")
    moodledata = re.search(r"^readonly moodledata=(\S+)$", script, re.M).group(1)
    assert 'dataroot: ($data + "/data")' in script and '--arg data "$moodledata"' in script
    assert '"MOODLEDATA=$moodledata" \\\n    "DATAROOT=$moodledata/data"' in script
    text = bootstrap.read("opcache-moodledata.blacklist")
    text = text.replace("@MOODLEDATA@", moodledata).replace("@DATAROOT@", f"{moodledata}/data")
    assert "@" not in text
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith(";")]
    return entries, f"{moodledata}/data"


def test_opcache_never_caches_moodles_php_files_on_the_shared_disk():
    entries, dataroot = rendered_blacklist()
    # Prefixes (php-src zend_accelerator_blacklist.c): customised strings, language packs, MUC's config.
    assert entries == [f"{dataroot}/lang/", f"{dataroot}/muc/"]
    for written in ("lang/en_local/moodle.php", "lang/de/moodle.php", "muc/config.php"):
        assert any(f"{dataroot}/{written}".startswith(entry) for entry in entries), written
    # Moodle's class map stays cached (it checks its own version when it loads it).
    assert not any("/var/moodledata/cache/core_component.php".startswith(entry) for entry in entries)
    assert "opcache.blacklist_filename = @OPCACHE_BLACKLIST@" in bootstrap.read("php-moodle.ini")
    script = bootstrap.read("moodle-node-setup.sh")
    assert 'install_rendered opcache-moodledata.blacklist "$opcache_blacklist"' in script
    assert 'install_rendered php-moodle.ini "$php_ini_path" "OPCACHE_BLACKLIST=$opcache_blacklist"' in script


@needs_php
@pytest.mark.parametrize("layout", ["4.5", "5.1+"])
def test_config_php_sends_safe_reads_to_the_reader_endpoint(tmp_path, layout):
    data = settings("valkey", router=layout != "4.5")
    data["database"]["reader_host"] = "db.cluster-ro"
    cfg = run_config(tmp_path, layout, data)
    # Moodle's read-only replica option: the reader logs in with the writer's user, password and port.
    assert cfg["dboptions"]["readonly"] == {
        "instance": [{"dbhost": "db.cluster-ro"}], "latency": 1, "connecttimeout": 2}  # fmt: skip
    assert (cfg["dbhost"], cfg["dboptions"]["dbport"]) == ("db.cluster", 5432)


@needs_php
@pytest.mark.parametrize("reader", ["", "db.cluster", None])
def test_config_php_without_a_separate_reader_uses_the_writer_alone(tmp_path, reader):
    data = settings("memcached", router=False)
    if reader is not None:
        data["database"]["reader_host"] = reader
    assert "readonly" not in run_config(tmp_path, "4.5", data)["dboptions"]


@needs_php
def test_command_line_runs_read_from_the_writer_alone(tmp_path):
    """Cron's task manager re-reads a task's row after taking its lock: on a lagging reader a second node
    would see it still due and run it again."""
    data = settings("memcached", router=False)
    data["database"]["reader_host"] = "db.cluster-ro"
    (tmp_path / "web").mkdir()
    (tmp_path / "cli").mkdir()
    assert "readonly" in run_config(tmp_path / "web", "4.5", data)["dboptions"]
    assert "readonly" not in run_config(tmp_path / "cli", "4.5", data, cli=True)["dboptions"]


def test_the_node_is_given_the_reader_endpoint(app_template):
    files = app_template["Resources"]["WebLaunchTemplate"]["Metadata"]["AWS::CloudFormation::Init"]["config"][
        "files"
    ]
    site = files["/etc/moodle-cfn/site.json"]["content"]
    assert site["DATABASE_READER_HOST"] == {"Ref": "DatabaseReaderEndpoint"}
    assert '--arg reader "${DATABASE_READER_HOST:-}"' in bootstrap.read("moodle-node-setup.sh")
