"""Node rehearsal: the files the launch template ships bring up a real two-node Moodle on this machine.

Run by `make rehearse-node` (not by `make test`: it takes minutes per leg). Real parts: Moodle from the
operator's code bundle (../shared/fixtures), PostgreSQL 17 or 16 with an RDS-like master role, two
memcached servers or two TLS + AUTH redis servers standing in for valkey, Apache (event MPM) + PHP-FPM per
node. AWS answers from a moto server (Secrets Manager, S3) and an ElastiCache stand-in. The node files
come from templates/app.yaml (tests/node_rig/cfn_init.py); what differs from Amazon Linux 2023 is only
tests/node_rig/platform-debian.sh.

Legs: ENGINE-POSTGRESQL[-LINE], a cache engine, a PostgreSQL major and a Moodle line (4.5 unless named):
see ALL_LEGS for the ones CI runs and why; RIG_LEGS=memcached-17,valkey-17-5.1 picks some. A leg whose
Moodle line does not run on the machine's PHP (4.5 on Debian 13's PHP 8.4) is skipped, saying so.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any, TypeVar

import pytest

from moodle_cfn import bootstrap
from moodle_cfn.functions import database_role
from moodle_cfn.layers import moodle
from moodle_cfn.layers.database_role import OWNER_ROLE
from moodle_cfn.releases import LINES_FILE
from tests.node_rig import services
from tests.node_rig.argv_watch import ArgvWatch, watching_argument_lists
from tests.node_rig.aws import Aws, Imds, running_aws
from tests.node_rig.cfn_init import app_template, database_parameters, init_files, resolve
from tests.node_rig.iam_check import StackState, denied_report, evaluate, group_tags
from tests.node_rig.memory_cgroup import MemoryCgroup, namespace_processes
from tests.node_rig.metrics_check import check_moodle_health_metrics
from tests.node_rig.node import PLATFORM_FILE, RIG_HOSTS, Browser, Node
from tests.test_mail import AWS_EXAMPLE_SECRET_KEY, AWS_REFERENCE_PASSWORDS

ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    """../shared/fixtures beside the checkout (MOODLE_CFN_FIXTURES overrides it); for a clone made elsewhere,
    beside the repository it was cloned from."""
    candidates = [Path(p) for p in [os.environ.get("MOODLE_CFN_FIXTURES")] if p]
    candidates.append(ROOT.parent / "shared" / "fixtures")
    origin = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / "shared" / "fixtures")
    for candidate in candidates:
        if (candidate / "moodle-4.5.0.tar.gz").is_file():
            return candidate
    raise FileNotFoundError(f"the Moodle fixtures are not in any of {[str(c) for c in candidates]}")


FIXTURES = fixtures_dir()
# The release the rig runs of each Moodle line, from the operator's bundle of it in ../shared/fixtures.
RELEASES = {"4.5": "4.5.0", "5.1": "5.1.3"}
MOODLE_BUNDLE = FIXTURES / "moodle-4.5.0.tar.gz"


def bundle_of(release: str) -> Path:
    return FIXTURES / f"moodle-{release}.tar.gz"


def web_root(release: str) -> str:
    """Where the web-facing code and the plugins are, inside the code tree: public/ from Moodle 5.1."""
    return "public/" if tuple(map(int, release.split(".")[:2])) >= (5, 1) else ""


def machine_php() -> str:
    """The PHP (X.Y) of this machine's Debian (what the rig's platform file installs)."""
    return subprocess.run(["php", "-r", 'echo PHP_MAJOR_VERSION, ".", PHP_MINOR_VERSION;'], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def php_refuses(release: str) -> str | None:
    """Why this machine's PHP cannot run `release` (moodle-lines.json, the node's own table), or None."""
    line = ".".join(release.split(".")[:2])
    low, high = json.loads(bootstrap.read(LINES_FILE))["lines"][line]["php"]
    php = machine_php()
    version = tuple(map(int, php.split(".")))
    if tuple(map(int, low.split("."))) <= version <= tuple(map(int, high.split("."))):
        return None
    return f"Moodle {line} runs on PHP {low}-{high}; this machine's Debian packages PHP {php}"


def leg_parts(leg: str) -> tuple[str, int, str]:
    """(cache engine, PostgreSQL major, Moodle release) of a leg such as valkey-17-5.1."""
    engine, major, *line = leg.split("-")
    return engine, int(major), RELEASES[line[0] if line else "4.5"]


PLUGIN_BUNDLE = FIXTURES / "moodle-cachestore_memcached.bundle"
PLUGIN_COMMIT = "db68d31ab5856cb55210478fdd452dc0cd6c6d05"
WORK = Path(os.environ.get("RIG_WORK", "/tmp/moodle-cfn-rig"))
CACHE = ROOT / ".rig"
AWS_CLI_BIN = CACHE / "awscli" / "bin"
TIMINGS = CACHE / "timings.json"

SITE_HOST = "moodle.rig.test"
# Every character the parameters admit (src/moodle_cfn/layers/moodle.py): all printable ASCII and more
# for the full name, every RFC 5322 atom character for the e-mail's local part.
SITE_FULL_NAME = "".join(chr(c) for c in range(33, 127)) + " é学"
ADMIN_EMAIL = "o'neil!#$%&*+/=?^_`{|}~-x.y@mail-1.example.edu"
ADMIN_PASSWORD = "Rig-Admin-Pass-1!x"
# The code archives' "EFS" directory, beside the moodledata one in each leg's work directory.
CODE_DIR = "efs-code"
# The web server's user on the rig's platform (platform-debian.sh), what Moodle's PHP runs as.
WEB_USER = "www-data"
MASTER = {"username": "moodleadmin", "password": "Master-Pass-1"}
APP_USER = {"username": "moodle", "password": "App-User-Pass-1"}
CACHE_TOKEN = "Cache-Auth-Token-0123456789"
NODE_ADDRESSES = ("127.0.0.11", "127.0.0.12")
HEALTH_PATH = "/lb-health"
NODE_SETUP_FAILED = "moodle-node-setup: FAILED"
HEARTBEAT_SECONDS = 10
# Node 2 is told it is a t4g.medium (4 GiB, 2 vCPUs): its PHP-FPM pool is sized from that
# (platform-debian.sh), and a test holds it to that memory.
SMALL_NODE = {"RIG_MEMORY_MIB": "4096", "RIG_VCPUS": "2"}
# The heaviest pages a logged-in user of the rig's site opens (the dashboard, the admin tree, the course
# list, the profile): what fills a PHP-FPM worker's memory.
LOAD_PAGES = ("/my/", "/admin/search.php", "/course/index.php", "/user/profile.php")
MAIL_SENDER = {"username": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": AWS_EXAMPLE_SECRET_KEY}
# Where Moodle's mail goes on every leg: SES's SMTP endpoint of the rig's Region, which each node resolves
# to the loopback (node.RIG_HOSTS); the mail test's sink listens there.
SES_SMTP = ("email-smtp.us-east-1.amazonaws.com", 587)
# The rig's servers listen from here: below Linux's ephemeral range (32768-60999), so that while one is
# stopped (a fault) no client's connection to it can take its port (a TCP self-connect), which would
# keep it from starting again. Seen: PostgreSQL on 55400 could not restart after a 60 s outage.
PORTS = 25400
INSTALL_LINE = "installing the Moodle database"
UPGRADE_LINE = "upgrading Moodle to release"
# A plugin of the operator's own, shipped as a moodle.org-style zip in S3 (one top directory).
LOCAL_PLUGIN = {"component": "local_rigcheck", "version": 2026112500, "name": "Rig check plugin"}
PLUGINS_PREFIX = "s3://rig-code/plugins/"
# The plugin whose version the upgrade bundle bumps.
BUMPED_PLUGIN = ("mod/label/version.php", "mod_label")  # under the web root
T = TypeVar("T")
# CI's legs, chosen to cover each engine, each PostgreSQL major and each Moodle line within CI's time:
# memcached x 17 on 4.5 also carries the major upgrade to 5.1.3 (the memcached store plugin on 5.1 with
# it) and the restored site; valkey x 16 on 4.5; valkey x 17 on 5.1, a fresh 5.1.3 install (the
# default path: MoodleVersion latest on Aurora 17 is a 5.x release). valkey-17 and memcached-16 on 4.5
# ran in CI until the 5.1 legs came; they differ from these only in a pairing.
ALL_LEGS = ("memcached-17", "valkey-16", "valkey-17-5.1")
# The leg that upgrades 4.5.0 to 5.1.3 across the major line, on both nodes.
MAJOR_UPGRADE_LEG = "memcached-17"
LEGS = [leg for leg in os.environ.get("RIG_LEGS", ",".join(ALL_LEGS)).split(",") if leg]
# The legs whose database has a streaming replica as Aurora's reader (the reader endpoint is the writer's
# address elsewhere, as Aurora's is in a cluster with no replica): the default path (Aurora 17, Moodle 5.x),
# and the fault rehearsal's leg, which black-holes the writer and the reader apart.
REPLICA_LEGS = ("valkey-17-5.1", "memcached-17-5.1")
# The replica's address: the writer's port, another loopback address, as Aurora's endpoints share a port.
REPLICA_ADDRESS = "127.0.0.2"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tls() -> Iterator[services.Tls]:
    # The server certificate names SES's SMTP endpoint too: the mail test's sink answers for it.
    material = services.make_ca(WORK / "tls", ["localhost", *RIG_HOSTS])
    services.trust_ca(material)
    yield material
    services.untrust_ca()


@pytest.fixture(scope="session")
def aws() -> Iterator[Aws]:
    with running_aws() as endpoints:
        yield endpoints


def local_plugin_zip() -> Path:
    """local_rigcheck as moodle.org ships a plugin: a zip holding one directory named after it."""
    target = WORK / "local_rigcheck.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    component, version = LOCAL_PLUGIN["component"], LOCAL_PLUGIN["version"]
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("rigcheck/version.php", (
            "<?php\ndefined('MOODLE_INTERNAL') || die();\n"
            f"$plugin->component = '{component}';\n$plugin->version = {version};\n"
            "$plugin->requires = 2024100700;\n$plugin->maturity = MATURITY_STABLE;\n"
        ))  # fmt: skip
        archive.writestr(f"rigcheck/lang/en/{component}.php", (
            f"<?php\ndefined('MOODLE_INTERNAL') || die();\n$string['pluginname'] = '{LOCAL_PLUGIN['name']}';\n"
        ))  # fmt: skip
        archive.writestr("rigcheck/classes/task/busy_task.php", BUSY_TASK)
        archive.writestr("rigcheck/strings.php", STRINGS_IN_APCU)
    return target


# A page of the rig's plugin: the language revision this request saw, and the core strings' entries in
# the serving node's APCu (PHP-FPM's shared memory, which a CLI process cannot see). The string cache's
# keys are "<lang>_<component>_<langrev>" (core_string_manager_standard::load_component_strings); a simple
# key is stored as "<key>-<definition's key prefix>" (core_cache\helper::hash_key), after the APCu
# store's prefix and the definition's hash and "__".
STRINGS_IN_APCU = """<?php
define('NO_MOODLE_COOKIES', true);
require(__DIR__ . '/../../config.php');
$keys = [];
foreach (new APCUIterator('/__en_core_[0-9]+-/', APC_ITER_KEY) as $entry) {
    $keys[] = $entry['key'];
}
header('Content-Type: application/json');
echo json_encode(['langrev' => (int) get_config('core', 'langrev'), 'keys' => $keys,
    'entries' => apcu_cache_info(true)['num_entries']]);
"""

# An ad-hoc task of the rig's plugin: busy for `seconds` (its custom data), as a course backup or restore
# is; it fails when asked to (`fail`). Sleeps in 1-second steps, so a signal cannot cut it short.
BUSY_TASK = """<?php
namespace local_rigcheck\\task;

defined('MOODLE_INTERNAL') || die();

class busy_task extends \\core\\task\\adhoc_task {
    public function execute() {
        $data = $this->get_custom_data();
        if (!empty($data->fail)) {
            throw new \\coding_exception('the rig asked this task to fail');
        }
        $end = time() + (int) $data->seconds;
        while (time() < $end) {
            sleep(1);
        }
        mtrace('rig busy task done after ' . (int) $data->seconds . ' s');
    }
}
"""


@dataclass(frozen=True)
class UpgradeBundle:
    path: Path
    version: int


def bumped_bundle(release: str) -> UpgradeBundle:
    """The release's bundle with one plugin's version bumped: what an operator uploads to upgrade."""
    target = WORK / f"moodle-{release}-bumped.tar.gz"
    tree = WORK / f"bumped-{release}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(bundle_of(release)), "-C", str(tree)], check=True)
    version_file = tree / "moodle" / f"{web_root(release)}{BUMPED_PLUGIN[0]}"
    text = version_file.read_text()
    version = int(re.search(r"\$plugin->version\s*=\s*(\d+);", text).group(1))
    version_file.write_text(text.replace(str(version), str(version + 1), 1))
    subprocess.run(["tar", "-czf", str(target), "-C", str(tree), "moodle"], check=True)
    shutil.rmtree(tree)
    return UpgradeBundle(target, version + 1)


@dataclass
class Site:
    """One leg's site: two nodes and everything they share."""

    leg: str
    engine: str
    release: str
    postgres: services.Postgres
    aws: Aws
    tls: services.Tls
    nodes: list[Node]
    parameters: dict[str, str]
    names: dict[str, str]
    shared: Path
    cache_ports: dict[str, int]
    # The running cache servers by role (session, application), for the faults that stop one.
    caches: dict[str, Any] = field(default_factory=dict)
    boot: list[tuple[int, str]] = field(default_factory=list)
    cron: subprocess.Popen | None = None
    # Seconds each step took (first boot of the site, a reboot, an upgrade roll), for the timings report.
    steps: dict[str, float] = field(default_factory=dict)
    # Every process's argument list, sampled during the first boot (which installs the site).
    argv_watch: ArgvWatch | None = None
    # The streaming replica standing in for Aurora's reader, on the legs of REPLICA_LEGS.
    replica: services.Postgres | None = None

    def timed(self, step: str, run: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return run()
        finally:
            self.steps[step] = round(time.monotonic() - started, 1)

    @property
    def code_releases(self) -> Path:
        """The code archives' access point's directory of releases (RIG_CODE_DIR, beside "EFS")."""
        return self.shared.parent / CODE_DIR / "releases"

    def write_init_files(self, node: Node, **changes: str) -> None:
        """What a stack create or update gives a node: its files, and the role's policies for the same
        values (the rig's AWS records the node's calls against them)."""
        self.aws.stack = StackState({**self.parameters, **changes}, dict(self.names))
        node.install_init_files(init_files({**self.parameters, **changes}, self.names))

    def setup_all(self) -> list[tuple[int, str]]:
        """Both setups started at the same moment; their exit status and output."""
        processes = [node.start_setup() for node in self.nodes]
        results = []
        for node, process in zip(self.nodes, processes, strict=True):
            output, _ = process.communicate(timeout=1800)
            node.logs.append(output)
            results.append((process.returncode, output))
        return results

    def db(self, query: str) -> str:
        return self.postgres.sql(query, "moodle")

    def stop_cache(self, role: str) -> None:
        self.caches[role].stop()

    def start_cache(self, role: str) -> None:
        """Start a stopped cache server again, empty, on its port (as a replaced cache node comes back)."""
        port, workdir = self.cache_ports[role], self.caches[role].log.parent
        if self.engine == "memcached":
            self.caches[role] = services.start_memcached(port, workdir)
        else:
            self.caches[role] = services.start_redis_tls(port, workdir, self.tls, CACHE_TOKEN)

    def cache_keys(self, role: str) -> list[str]:
        port = self.cache_ports[role]
        if self.engine == "memcached":
            return services.memcached_keys(port)
        return services.redis_keys(port, self.tls, CACHE_TOKEN)


def start_caches(
    engine: str, workdir: Path, tls: services.Tls, base: int
) -> tuple[dict[str, Any], dict[str, int]]:
    ports = {"session": base, "application": base + 1}
    if engine == "memcached":
        started = {role: services.start_memcached(port, workdir) for role, port in ports.items()}
    else:
        started = {
            role: services.start_redis_tls(port, workdir, tls, CACHE_TOKEN) for role, port in ports.items()
        }
    return started, ports


def stack_values(engine: str, aws: Aws, postgres: services.Postgres, cache_ports: dict[str, int],
                 leg: str, release: str) -> tuple[dict[str, str], dict[str, str]]:  # fmt: skip
    """(parameters, names): what the app stack's parameters and the other layers' outputs would be."""
    bucket = "rig-code"
    code_uri = aws.upload(bucket, f"moodle-{release}.tar.gz", str(bundle_of(release)))
    plugin_uri = aws.upload(bucket, "plugins/moodle-cachestore_memcached.bundle", str(PLUGIN_BUNDLE))
    local_zip = local_plugin_zip()
    local_uri = aws.upload(bucket, "plugins/local_rigcheck.zip", str(local_zip))
    # The memcached store as a git bundle in S3 (VPCs without a code host), the operator's own plugin as
    # a zip: both mechanisms of MoodlePlugins, in the JSON text the stack parameter carries.
    plugins = [
        {"component": "cachestore_memcached", "git": plugin_uri, "commit": PLUGIN_COMMIT},
        {"component": LOCAL_PLUGIN["component"], "s3": local_uri, "sha256": sha256(local_zip)},
    ]
    parameters = {
        "SiteName": "rig",
        "DomainName": SITE_HOST,
        "MoodleVersion": release,
        "MoodleAdminEmail": ADMIN_EMAIL,
        "MoodleSiteFullName": SITE_FULL_NAME,
        "MoodleSiteShortName": "rig-site_1",
        "MoodleCodeS3Uri": code_uri,
        "MoodleCodeSha256": sha256(bundle_of(release)),
        "MoodlePlugins": moodle.plugins_json(plugins),
        "MoodlePluginsS3Prefix": PLUGINS_PREFIX,
        "SessionCacheEngine": engine,
        "ApplicationCacheEngine": engine,
        "DatabaseName": "moodle",
        # The cluster's version, as the data stack's parameter gives it (the node installs its client).
        "DatabaseEngineVersion": postgres.version.split()[1],
    }
    names = {
        "AWS::Region": "us-east-1",
        "AWS::StackName": f"rig-{leg}-app",
        "AWS::Partition": "aws",
        "AWS::AccountId": "123456789012",
        "DatabaseEndpoint": postgres.host,
        "DatabasePort": str(postgres.port),
        "DatabaseMasterSecretArn": aws.secret(f"rig-{leg}-master", MASTER),
        "DatabaseAppUserSecretArn": aws.secret(f"rig-{leg}-moodle", APP_USER),
        "MoodleAdminSecret": aws.secret(
            f"rig-{leg}-admin", {"username": "admin", "password": ADMIN_PASSWORD}
        ),
        # The SES SMTP sender's access key, as the stack keeps it (AWS's documented example key).
        "MailCredentialsSecret": aws.secret(f"rig-{leg}-mail", MAIL_SENDER),
        "FileSystemId": "fs-0rehearsal",
        "FileSystemAccessPointId": "fsap-0rehearsal",
        # platform-debian.sh mounts RIG_CODE_DIR for this one.
        "FileSystemCodeAccessPointId": "fsap-0code",
    }
    # The ARNs the node's policies name (the data stack's outputs), as AWS composes them from the ids.
    names["AWS::StackId"] = (
        f"arn:aws:cloudformation:us-east-1:123456789012:stack/{names['AWS::StackName']}/{leg}"
    )
    efs = "arn:aws:elasticfilesystem:us-east-1:123456789012:"
    names["FileSystemArn"] = f"{efs}file-system/{names['FileSystemId']}"
    names["FileSystemAccessPointArn"] = f"{efs}access-point/{names['FileSystemAccessPointId']}"
    names["FileSystemCodeAccessPointArn"] = f"{efs}access-point/{names['FileSystemCodeAccessPointId']}"
    # The parameter's name as the template makes it (its policy names exactly that one).
    release_name = app_template()["Resources"]["MoodleReleaseParameter"]["Properties"]["Name"]
    names["MoodleReleaseParameter"] = resolve(release_name, {**parameters, **names})
    for role, port in cache_ports.items():
        prefix = role.capitalize()
        cluster = f"rig-{leg}-{role}"
        names[f"{prefix}CacheId"] = cluster
        names[f"{prefix}CachePort"] = str(port)
        if engine == "memcached":
            aws.clusters[cluster] = [("127.0.0.1", port)]
            names[f"{prefix}CacheEndpoint"] = f"127.0.0.1:{port}"
            names[f"{prefix}CacheAuthSecretArn"] = "none"
        else:
            # The certificate names localhost: the node verifies the server's name, as on ElastiCache.
            names[f"{prefix}CacheEndpoint"] = "localhost"
            names[f"{prefix}CacheAuthSecretArn"] = aws.secret(
                f"rig-{leg}-{role}-auth", {"token": CACHE_TOKEN}
            )
    return parameters, names


@pytest.fixture(scope="module", params=LEGS)
def site(request: pytest.FixtureRequest, tls: services.Tls, aws: Aws) -> Iterator[Site]:
    refused = php_refuses(leg_parts(request.param)[2])
    if refused:
        pytest.skip(f"{request.param}: {refused}")
    with running_site(request.param, LEGS.index(request.param), tls, aws) as booted:
        yield booted


# What stands between the nodes and the shared directory: given (leg's work directory, shared directory),
# a context in which the shared directory is ready (make bench-node puts a latency model of EFS there).
SharedLayer = Callable[[Path, Path], AbstractContextManager[object]]


@contextmanager
def running_site(leg: str, index: int, tls: services.Tls, aws: Aws, shared_layer: SharedLayer | None = None,
                 record_timings: bool = True, node_size: dict[str, str] | None = None) -> Iterator[Site]:  # fmt: skip
    """One leg's site booted (both nodes set up, cron started on node 1), stopped on exit; `index` picks
    the leg's ports; its step timings go to .rig/timings.json unless `record_timings` is false (the bench);
    `node_size` (RIG_MEMORY_MIB, RIG_VCPUS) sizes both nodes, instead of node 2 alone (SMALL_NODE)."""
    engine, major, release = leg_parts(leg)
    started_at = time.monotonic()
    workdir = WORK / leg
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    binaries = services.postgres_binaries(major, CACHE / "postgres")
    postgres = services.start_postgres(binaries, workdir / "postgres", PORTS + index, tls, MASTER["username"],
                                       MASTER["password"], "moodle")  # fmt: skip
    apply_cluster_parameters(postgres)
    replica = (
        services.start_replica(postgres, workdir / "replica", REPLICA_ADDRESS)
        if leg in REPLICA_LEGS
        else None
    )
    caches, cache_ports = start_caches(engine, workdir, tls, PORTS + 100 + 10 * index)
    shared = workdir / "efs"
    shared.mkdir()
    code = workdir / CODE_DIR
    code.mkdir()
    layer = shared_layer(workdir, shared) if shared_layer else nullcontext()
    layer.__enter__()
    parameters, names = stack_values(engine, aws, postgres, cache_ports, leg, release)
    names["DatabaseReaderEndpoint"] = replica.host if replica else postgres.host
    environment = {
        **aws.environment,
        "MOODLE_CFN_PLATFORM": str(PLATFORM_FILE),
        "RIG_SHARED_DIR": str(shared),
        "RIG_CODE_DIR": str(code),
        "PATH": f"{AWS_CLI_BIN}:{os.environ['PATH']}",
        # Lifecycle heartbeats every 10 s instead of 2 minutes, so that a boot of a minute records several
        # (each is an AWS CLI call: at 2 s they took half a core of the rig's two).
        "MOODLE_CFN_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    }
    group = f"rig-{leg}-web"
    aws.groups[group] = "1"
    # The group carries the template's tags, which the node role's autoscaling:ResourceTag condition reads.
    aws.group_tags[group] = group_tags(StackState(parameters, names))
    nodes = []
    for n, address in enumerate(NODE_ADDRESSES, start=1):
        imds = Imds({
            "instance-id": f"i-0{leg.replace('-', '')}node{n}",
            "tags/instance/aws:autoscaling:groupName": group,
            "tags/instance/aws:ec2launchtemplate:version": "1",
            "autoscaling/target-lifecycle-state": "InService",
        })  # fmt: skip
        node_environment = {**environment, "RIG_IMDS_URL": imds.url, "RIG_NODE_ADDRESS": address}
        if n == 2:
            node_environment.update(SMALL_NODE)
        node_environment.update(node_size or {})
        nodes.append(Node(f"node{n}", address, workdir / f"node{n}", node_environment, imds=imds))
    site = Site(
        leg, engine, release, postgres, aws, tls, nodes, parameters, names, shared, cache_ports, caches
    )
    site.replica = replica
    try:
        # What the data stack's database-role custom resource does, with its own code, before any node boots.
        run_database_role_function(site, "moodle")
        for node in nodes:
            node.boot_namespace()
            site.write_init_files(node)
        with watching_argument_lists(ADMIN_PASSWORD, "moodle-install.php") as site.argv_watch:
            site.boot = site.timed("first boot of both nodes (one installs the site)", site.setup_all)
        if all(status == 0 for status, _ in site.boot):
            site.cron = start_cron_as_its_unit_runs_it(nodes[0])
        yield site
    finally:
        for node in nodes:
            node.stop()
            node.imds.stop()
        for service in site.caches.values():
            service.stop()
        if replica:
            replica.stop()
        postgres.stop()
        layer.__exit__(None, None, None)
        if record_timings:
            timings = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
            timings[f"{leg} ({postgres.version.split(' on ')[0]})"] = {
                "whole leg": round(time.monotonic() - started_at, 1),
                **site.steps,
            }
            TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")


def apply_cluster_parameters(postgres: services.Postgres) -> None:
    """The cluster parameter group's PostgreSQL settings on the rig's server (RDS's own rds.* settings are
    modelled by the server's configuration: TLS offered, scram-sha-256)."""
    for name, value in database_parameters().items():
        if not name.startswith("rds."):
            postgres.sql(f"ALTER SYSTEM SET {name} = '{value}'")
    postgres.sql("SELECT pg_reload_conf()")


def role_function_settings(site: Site, database: str) -> dict[str, str]:
    """What the database-role function is given (its custom resource's properties, or its environment when
    Secrets Manager runs it to rotate), for the rig's server."""
    return {
        "MasterSecretArn": site.names["DatabaseMasterSecretArn"],
        "AppSecretArn": site.names["DatabaseAppUserSecretArn"],
        "Host": site.postgres.host,
        "Port": str(site.postgres.port),
        "Database": database,
        "OwnerRole": OWNER_ROLE,
    }


def run_database_role_function(site: Site, database: str) -> None:
    """The data stack's database-role custom resource: its own code and PostgreSQL client, logging in to the
    rig's server over TLS as the master, as the function does to Aurora from the VPC."""
    database_role.ensure_site(site.aws.client("secretsmanager"), role_function_settings(site, database))


def start_cron_as_its_unit_runs_it(node: Node) -> subprocess.Popen:
    """The installed moodle-cron.service's command, as systemd runs it: the environment file read as root,
    the command run as the unit's user."""
    unit = node.file("/etc/systemd/system/moodle-cron.service")
    user = re.search(r"^User=(.+)$", unit, re.M).group(1)
    command = re.search(r"^ExecStart=/bin/sh -c '(.+)'$", unit, re.M).group(1)
    environment = re.search(r"^EnvironmentFile=(.+)$", unit, re.M).group(1)
    script = f'set -a; . {environment}; exec runuser -u {user} -- sh -c "$0"'
    return subprocess.Popen(node.command(["sh", "-c", script, command]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def lines_with(site: Site, text: str) -> list[str]:
    return [line for node in site.nodes for log in node.logs for line in log.splitlines() if text in line]


def test_both_setups_succeed_and_the_database_is_installed_once(site: Site) -> None:
    for node, (status, output) in zip(site.nodes, site.boot, strict=True):
        assert status == 0, f"{node.name} setup failed:\n{output[-4000:]}"
        assert "node ready" in output
    assert len(lines_with(site, INSTALL_LINE)) == 1
    assert site.db("SELECT count(*) FROM mdl_user WHERE username = 'admin'") == "1"


def health(node: Node) -> int:
    """The load balancer's health check of a node (any Host header: the check uses the node's address)."""
    connection = http.client.HTTPConnection(node.address, 80, timeout=30)
    connection.request("GET", HEALTH_PATH, headers={"Host": node.address})
    response = connection.getresponse()
    response.read()
    return response.status


def test_each_node_completes_its_launch_hook_and_signals_only_once_moodle_answers(site: Site) -> None:
    for node in site.nodes:
        instance = node.imds.metadata["instance-id"]
        (hook,) = site.aws.calls_of("CompleteLifecycleAction", instance)
        assert (hook["LifecycleActionResult"], hook["LifecycleHookName"]) == ("CONTINUE", "moodle-node-ready")
        # The lease was kept while the setup ran: heartbeats for the same hook, all before the completion.
        heartbeats = site.aws.calls_of("RecordLifecycleActionHeartbeat", instance)
        assert heartbeats and all(h["LifecycleHookName"] == "moodle-node-ready" for h in heartbeats)
        assert site.aws.calls.index(heartbeats[-1]) < site.aws.calls.index(hook)
        assert hook["AutoScalingGroupName"] == f"rig-{site.leg}-web"
        (signal,) = site.aws.calls_of("SignalResource", instance)
        assert (signal["Status"], signal["LogicalResourceId"]) == ("SUCCESS", "WebAutoScalingGroup")
        assert site.aws.calls.index(hook) < site.aws.calls.index(signal)
        assert health(node) == 200


def test_admin_logs_in_on_node_1_and_the_session_holds_on_node_2(site: Site) -> None:
    node1, node2 = site.nodes
    anonymous = Browser(SITE_HOST)
    for node in site.nodes:
        status, _, page = anonymous.request(node, "GET", "/login/index.php")
        assert status == 200 and 'name="logintoken"' in page
    browser = Browser(SITE_HOST)
    final = browser.log_in(node1, "admin", ADMIN_PASSWORD)
    assert not final.startswith("/login/index.php"), f"login on node 1 ended at {final}"
    status, final, page = browser.request(node2, "GET", "/user/profile.php")
    assert status == 200 and final == "/user/profile.php", f"node 2 sent the session to {final}"
    assert "sesskey" in page and "/login/logout.php" in page


def test_the_plugins_are_on_both_nodes_and_in_moodles_plugin_list(site: Site) -> None:
    """MoodlePlugins: the git bundle from S3 and the zip from S3, each verified and placed where its type
    goes, byte-identical on both nodes, installed once in the database and listed by Moodle."""
    digests = set()
    for node in site.nodes:
        listing = node.run(["sh", "-c", f"cd /var/www/moodle/{web_root(site.release)} && find local/rigcheck "
                            "cache/stores/memcached -type f -print0 | sort -z | xargs -0 sha256sum"]).stdout  # fmt: skip
        assert "local/rigcheck/version.php" in listing and "cache/stores/memcached/version.php" in listing
        digests.add(listing)
    assert len(digests) == 1
    component = LOCAL_PLUGIN["component"]
    installed = site.db(
        f"SELECT value FROM mdl_config_plugins WHERE plugin = '{component}' AND name = 'version'"
    )
    assert installed == str(LOCAL_PLUGIN["version"])
    admin = Browser(SITE_HOST)
    admin.log_in(site.nodes[1], "admin", ADMIN_PASSWORD)
    status, _, page = admin.request(site.nodes[1], "GET", "/admin/plugins.php?contribonly=1")
    assert status == 200 and LOCAL_PLUGIN["name"] in page and "cachestore_memcached" in page


def test_the_release_is_recorded_on_efs_and_published_to_ssm(site: Site) -> None:
    assert (site.shared / ".moodle-cfn" / "moodle-release").read_text() == f"{site.release}\n"
    parameter = site.aws.client("ssm").get_parameter(Name=site.names["MoodleReleaseParameter"])["Parameter"]
    assert parameter["Value"] == site.release
    assert any(
        f"this node runs Moodle {site.release}" in line for line in lines_with(site, "this node runs Moodle")
    )


def test_sessions_and_application_cache_land_in_their_own_clusters(site: Site) -> None:
    Browser(SITE_HOST).log_in(site.nodes[1], "admin", ADMIN_PASSWORD)
    session_keys, application_keys = site.cache_keys("session"), site.cache_keys("application")
    session_prefix = "memc.sess.key." if site.engine == "memcached" else "sess_"
    assert any(key.startswith(session_prefix) for key in session_keys), session_keys[:20]
    assert not any(key.startswith(session_prefix) for key in application_keys)
    assert any(key.startswith("mdl_") for key in application_keys), application_keys[:20]
    assert not any(key.startswith("mdl_") for key in session_keys)
    muc = subprocess.run(
        ["php", "-r", 'define("MOODLE_INTERNAL", 1); include $argv[1]; echo json_encode($configuration);',
         str(site.shared / "data" / "muc" / "config.php")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    configuration = json.loads(muc)
    store = configuration["stores"]["moodle-cfn-application"]
    assert store["plugin"] == ("memcached" if site.engine == "memcached" else "redis")
    if site.engine == "valkey":
        assert store["configuration"]["server"] == f"localhost:{site.cache_ports['application']}"
        assert store["configuration"]["encryption"] and store["configuration"]["cafile"]
    application_mode = [m for m in configuration["modemappings"] if m["mode"] == 1]
    assert [m["store"] for m in application_mode] == ["moodle-cfn-application"]


def test_a_setting_changed_through_node_1_shows_on_node_2(site: Site) -> None:
    node1, node2 = site.nodes
    reader = Browser(SITE_HOST)

    def title_on_node_2() -> str:
        _, _, page = reader.request(node2, "GET", "/login/index.php")
        return unescape(re.search(r"<title>(.*?)</title>", page, re.S).group(1))

    assert title_on_node_2().endswith("| rig-site_1")  # node 2 has the current value cached
    admin = Browser(SITE_HOST)
    admin.log_in(node1, "admin", ADMIN_PASSWORD)
    _, _, page = admin.request(node1, "GET", "/admin/settings.php?section=frontpagesettings")
    sesskey = re.search(r'"sesskey":"([^"]+)"', page).group(1)

    def set_short_name(value: str) -> None:
        admin.request(node1, "POST", "/admin/settings.php", {
            "section": "frontpagesettings", "action": "save-settings", "sesskey": sesskey, "return": "",
            "s__shortname": value,
        })  # fmt: skip
        assert site.db("SELECT shortname FROM mdl_course WHERE id = 1") == value

    set_short_name(f"coherence-{site.leg}")
    assert title_on_node_2().endswith(f"| coherence-{site.leg}")
    set_short_name("rig-site_1")
    assert title_on_node_2().endswith("| rig-site_1")


def test_site_name_and_admin_email_arrive_unchanged(site: Site) -> None:
    assert site.db("SELECT fullname FROM mdl_course WHERE id = 1") == SITE_FULL_NAME
    assert site.db("SELECT shortname FROM mdl_course WHERE id = 1") == "rig-site_1"
    assert site.db("SELECT email FROM mdl_user WHERE username = 'admin'") == ADMIN_EMAIL
    settings = json.loads(site.nodes[0].file("/etc/moodle-cfn/site.json"))
    assert (settings["SITE_FULL_NAME"], settings["ADMIN_EMAIL"]) == (SITE_FULL_NAME, ADMIN_EMAIL)


def body_text(message: Any) -> str:
    """Every text part of a parsed mail, decoded."""
    return "".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")


def request_password_reset(node: Node, username: str) -> str:
    """Moodle's own forgot-password form, anonymously through `node`: the page it answers with."""
    browser = Browser(SITE_HOST)
    _, _, page = browser.request(node, "GET", "/login/forgot_password.php")
    # The form's hidden fields (sesskey, _qf__login_forgot_password_form), whatever their attribute order.
    hidden = {}
    for tag in re.findall(r'<input\b[^>]*\btype="hidden"[^>]*>', page):
        name, value = re.search(r'\bname="([^"]*)"', tag), re.search(r'\bvalue="([^"]*)"', tag)
        if name and value:
            hidden[name.group(1)] = unescape(value.group(1))
    assert "sesskey" in hidden, f"the forgot-password page has no sesskey: {page[:1500]}"
    form = {**hidden, "username": username, "submitbuttonusername": "Search", "email": ""}
    status, _, answer = browser.request(node, "POST", "/login/forgot_password.php", form)
    assert status == 200, answer[:2000]
    return answer


def test_a_password_reset_mail_leaves_each_node_through_ses_smtp_over_tls(site: Site) -> None:
    """Moodle's forgot-password flow on node 1, then on node 2: each sends the reset mail to SES's SMTP
    endpoint (the rig's sink, resolved there by the nodes), over STARTTLS, authenticated by AUTH LOGIN with
    the access key id and the SMTP password the node derived from the secret's key, From the site's noreply
    address. One leg: nothing here depends on the cache engine or the database major."""
    if site.leg != LEGS[0]:
        pytest.skip(f"the mail test runs on the first leg ({LEGS[0]}) only")
    password = AWS_REFERENCE_PASSWORDS["us-east-1"]
    sink = services.start_smtp_sink("127.0.0.1", SES_SMTP[1], site.tls, MAIL_SENDER["username"], password)
    started = time.monotonic()
    try:
        site.db("DELETE FROM mdl_user_password_resets")
        for node in site.nodes:
            settings = json.loads(node.file("/etc/moodle-cfn/moodle.json"))["mail"]
            assert settings == {"smtphosts": f"{SES_SMTP[0]}:{SES_SMTP[1]}", "user": MAIL_SENDER["username"],
                                "password": password, "noreplyaddress": f"noreply@{SITE_HOST}",
                                "allowedemaildomains": SITE_HOST}  # fmt: skip
            before = len(sink.messages)
            page = request_password_reset(node, "admin")
            assert "Error sending password change confirmation email" not in page
            assert "then an email should have been sent to you" in page
            deadline = time.monotonic() + 30
            resets: list[tuple[dict[str, Any], Any]] = []
            while not resets and time.monotonic() < deadline:
                time.sleep(0.1)
                parsed = [(m, email.message_from_bytes(m["content"], policy=email.policy.default))
                          for m in sink.messages[before:]]  # fmt: skip
                resets = [(m, p) for m, p in parsed if "forgot_password.php?token=" in body_text(p)]
            assert resets, f"{node.name}: no reset mail reached the sink; logins {sink.logins}"
            (accepted, message), *_ = resets
            assert accepted["tls"] and accepted["login"] == MAIL_SENDER["username"]
            assert message["From"].addresses[0].addr_spec == f"noreply@{SITE_HOST}"
            assert accepted["rcpt_tos"] == [ADMIN_EMAIL]
        assert all(ok and mechanism == "LOGIN" for mechanism, _, ok in sink.logins), sink.logins
    finally:
        sink.stop()
        site.steps["mail: a reset mail from each node"] = round(time.monotonic() - started, 1)


def test_tables_belong_to_moodles_owner_role_and_no_node_holds_master_credentials(site: Site) -> None:
    """Moodle logs in as `moodle` (or, after a rotation, its alternate), whose sessions act as the owner
    role: every table the install made belongs to the owner, which cannot log in."""
    # The node is not even told where the master secret is.
    master_arn = site.names["DatabaseMasterSecretArn"]
    assert all(master_arn not in item.content for item in init_files(site.parameters, site.names))
    assert site.db("SELECT rolsuper FROM pg_roles WHERE rolname = 'moodle'") == "f"
    assert site.db(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{OWNER_ROLE}'") == "f"
    assert site.db("SELECT datdba::regrole FROM pg_database WHERE datname = 'moodle'") == OWNER_ROLE
    owners = site.db("SELECT tableowner, count(*) FROM pg_tables WHERE schemaname = 'public' GROUP BY 1")
    assert [line.split("|")[0] for line in owners.splitlines()] == [OWNER_ROLE]
    assert int(owners.split("|")[1]) > 300
    for node in site.nodes:
        for path in (
            "/etc/moodle-cfn/moodle.json",
            "/var/www/moodle/config.php",
            "/etc/moodle-cfn/runtime.env",
        ):
            text = node.file(path)
            assert MASTER["password"] not in text and MASTER["username"] not in text, path


def as_web_user(node: Node, script: str) -> subprocess.CompletedProcess:
    """A shell command on the node as the web server's user, the user Moodle's PHP runs as."""
    return node.run(["runuser", "-u", WEB_USER, "--", "sh", "-c", script], check=False)


def test_only_root_reaches_the_instance_metadata_service(site: Site) -> None:
    """The instance role's credentials are the metadata service's: PHP (the web server's user) is refused
    at the socket, root's tools (the AWS CLI, the agents) reach it."""
    php = (
        "$c = stream_context_create(['http' => ['method' => 'PUT', 'timeout' => 5, 'ignore_errors' => true,"
        " 'header' => \"X-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\"]]);"
        " echo @file_get_contents(getenv('IMDS') . '/latest/api/token', false, $c) === false ? 'refused' : 'reached';"
    )
    for node in site.nodes:
        command = f"IMDS={node.imds.url} php -r {shlex.quote(php)}"
        assert node.run(["sh", "-c", command]).stdout == "reached"
        web = as_web_user(node, command)
        assert web.stdout == "refused", web.stdout + web.stderr
        curl = as_web_user(node, f"curl -sS -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "
                                 f"{node.imds.url}/latest/api/token")  # fmt: skip
        # curl's exit 7: the connection was refused (the filter's TCP reset), not a timeout or an HTTP error.
        assert curl.returncode == 7 and "Failed to connect" in curl.stderr, curl.stderr


def test_the_web_user_can_neither_rewrite_nor_reach_the_code_archives(site: Site) -> None:
    """The archives every node unpacks, and the digests they are checked against, are on their own access
    point, mounted under a root-only directory: Moodle's user cannot read, let alone rewrite, them."""
    releases = site.code_releases
    archives = sorted(releases.glob("*.tar.gz"))
    assert archives and all(Path(f"{archive}.sha256").is_file() for archive in archives)
    assert not list((site.shared / ".moodle-cfn").glob("**/*.tar.gz")), "code archives left on moodledata"
    for node in site.nodes:
        archive = f"/var/lib/moodle-cfn/code/releases/{archives[0].name}"
        assert node.run(["test", "-s", archive], check=False).returncode == 0
        for attempt in (f"echo x >> {archive}", f"echo x >> {archive}.sha256", f"head -c 1 {archive}",
                        "ls /var/lib/moodle-cfn/code"):  # fmt: skip
            result = as_web_user(node, attempt)
            assert result.returncode != 0 and "Permission denied" in result.stderr, (attempt, result.stderr)


def test_no_argument_list_held_the_admin_password_during_the_install(site: Site) -> None:
    """/proc/PID/cmdline is readable by every local user: sampled every 50 ms while the first boot installed
    the site, no process's arguments held the admin password (which logs in: the tests above)."""
    watch = site.argv_watch
    assert watch is not None and watch.marked >= 5, f"the watch overlapped the install {watch.marked} times"
    assert watch.leaks == []


def test_a_slow_statement_is_logged_without_its_values(site: Site) -> None:
    """The cluster parameter group logs statements slower than log_min_duration_statement with their text
    only. Moodle sends values as bind parameters (pg_query_params); so does this statement. The control, the
    same statement with parameter logging back on, shows the log would have held the value."""
    query = "SELECT pg_sleep(2.1), $1::text"
    php = (
        "$c = pg_connect(getenv('DSN')); if (getenv('CONTROL')) pg_query($c, 'SET log_parameter_max_length = -1');"
        f" pg_query_params($c, '{query}', [getenv('VALUE')]);"
    )
    user = (f"host=127.0.0.1 port={site.postgres.port} dbname=moodle sslmode=require user={APP_USER['username']} "
            f"password={APP_USER['password']}")  # fmt: skip
    superuser = f"host={site.postgres.socket_dir} port={site.postgres.port} dbname=moodle user={services.PG_BOOTSTRAP}"
    before = site.postgres.log.stat().st_size
    for dsn, control, value in ((user, "", "rig-canary-moodle"), (superuser, "1", "rig-canary-control")):
        subprocess.run(["php", "-r", php], check=True, timeout=30,
                       env={**os.environ, "DSN": dsn, "CONTROL": control, "VALUE": value})  # fmt: skip
    with site.postgres.log.open(errors="replace") as log:
        log.seek(before)
        logged = log.read()
    assert logged.count("pg_sleep(2.1)") >= 2, logged[-2000:]
    assert "rig-canary-control" in logged
    assert "rig-canary-moodle" not in logged, logged[-2000:]


def test_cron_as_its_unit_runs_it(site: Site) -> None:
    # Started right after the boot (Moodle's cron keeps itself alive for cron_keepalive, 3 minutes by
    # default), so it runs while the checks above use the site, as it would on a live node.
    assert site.cron is not None
    output, errors = site.cron.communicate(timeout=900)
    assert site.cron.returncode == 0, output[-3000:] + errors[-3000:]
    assert "Cron run completed correctly" in output


# The leg whose node 2 runs under load in 4 GiB, and leaves the group while it runs a long ad-hoc task (one
# leg: each takes its time).
DRAIN_LEG = "valkey-17-5.1"
BUSY_SECONDS = 30


def test_a_4_gib_node_sizes_its_pool_to_fit_and_holds_under_load(site: Site) -> None:
    """Node 2 is told it is a 4 GiB, 2 vCPU node (a t4g.medium): its PHP-FPM pool is sized from that at boot,
    then held to 4 GiB (a memory cgroup, as MemoryMax= would) while twice as many logged-in users as it has
    workers load the heaviest pages the rig has, for 20 s. No worker is killed for memory, every page is
    served, and the peak stays under the limit."""
    if site.leg != DRAIN_LEG:
        pytest.skip(f"the 4 GiB node is loaded on {DRAIN_LEG}")
    node = site.nodes[1]
    pool = node.file(f"/etc/php/{machine_php()}/fpm/pool.d/www.conf")
    workers = int(re.search(r"^pm\.max_children = (\d+)$", pool, re.M).group(1))
    expected = subprocess.run(["bash", str(ROOT / "src/moodle_cfn/bootstrap/php-fpm-size.sh"), SMALL_NODE["RIG_MEMORY_MIB"],
                               SMALL_NODE["RIG_VCPUS"]], capture_output=True, text=True, check=True).stdout.split()[0]  # fmt: skip
    assert workers == int(expected)
    try:
        cgroup = MemoryCgroup.create(f"moodle-cfn-rig-{site.leg}", int(SMALL_NODE["RIG_MEMORY_MIB"]) * 2**20)
    except (RuntimeError, OSError) as error:
        pytest.skip(f"no memory cgroup to hold the node to 4 GiB: {error}")
    try:
        cgroup.adopt(namespace_processes(node.holder.pid, "php-fpm"))
        # A graceful reload: the master starts new workers, born in the cgroup, so their memory counts there.
        master = int(node.file(f"/run/php/php{machine_php()}-fpm.pid"))
        os.kill(master, signal.SIGUSR2)
        time.sleep(3)
        users = 2 * workers
        browsers = [Browser(SITE_HOST) for _ in range(users)]
        for browser in browsers:
            browser.log_in(node, "admin", ADMIN_PASSWORD)
        statuses: list[int] = []
        peak = [0]
        stop = time.monotonic() + 20

        def load(browser: Browser) -> None:
            while time.monotonic() < stop:
                for path in LOAD_PAGES:
                    statuses.append(browser.request(node, "GET", path)[0])
                    peak[0] = max(peak[0], cgroup.current())

        threads = [threading.Thread(target=load, args=(browser,)) for browser in browsers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        measured = max(peak[0], cgroup.peak() or 0)
        site.steps[f"4 GiB node under {users} users: peak MiB of PHP-FPM ({workers} workers)"] = (
            measured // 2**20
        )
        site.steps[f"4 GiB node under {users} users: pages served in 20 s"] = len(statuses)
        assert cgroup.oom_kills() == 0
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert measured < int(SMALL_NODE["RIG_MEMORY_MIB"]) * 2**20
    finally:
        cgroup.remove()


def test_the_node_logs_rotate(site: Site) -> None:
    """The node's logrotate file, as logrotate.timer runs it: the cron log is rotated, the writer's file
    truncated in place (it keeps it open), the old lines kept beside it."""
    node = site.nodes[0]
    conf = "/etc/moodle-cfn/logrotate.conf"
    node.run(["sh", "-c", 'for i in $(seq 1 200); do echo "cron line $i"; done >> /var/log/moodle-cron.log'])
    checked = node.run(["logrotate", "-d", "-s", "/var/lib/moodle-cfn/logrotate.state", conf], check=False)
    assert checked.returncode == 0 and "error" not in checked.stderr.lower(), checked.stderr
    node.run(["logrotate", "-f", "-s", "/var/lib/moodle-cfn/logrotate.state", conf])
    assert node.file("/var/log/moodle-cron.log") == ""
    assert "cron line 200" in node.file("/var/log/moodle-cron.log.1")


def test_a_resized_memcached_cluster_is_used_without_a_reboot(site: Site) -> None:
    """ElastiCache adds a node to each memcached cluster: each node's 5-minute refresh (run here at once)
    puts it in moodle.json (sessions) and, once for the site, in Moodle's cache configuration on EFS
    (application cache). Both nodes then hash keys over the same servers: a session opened on node 1 holds
    on node 2, and the new servers receive keys. (Sessions hashed to other servers before the resize are
    gone: memcached sessions do not survive a resize, README.) Then the clusters shrink back the same way."""
    if site.engine != "memcached":
        pytest.skip("valkey has one endpoint whatever its size")
    extra = {
        role: services.start_memcached(port + 50, site.shared.parent)
        for role, port in site.cache_ports.items()
    }
    clusters = {role: f"rig-{site.leg}-{role}" for role in site.cache_ports}

    def resize(grown: bool) -> None:
        for role, port in site.cache_ports.items():
            site.aws.clusters[clusters[role]] = [("127.0.0.1", port)] + (
                [("127.0.0.1", port + 50)] if grown else []
            )
        for node in site.nodes:
            refreshed = node.run(
                ["bash", "/usr/share/moodle-cfn/moodle-node-setup.sh", "--refresh-settings"], check=False
            )
            assert refreshed.returncode == 0, refreshed.stderr[-2000:]
            settings = json.loads(node.file("/etc/moodle-cfn/moodle.json"))
            for role, port in site.cache_ports.items():
                assert settings[role]["servers"] == [f"127.0.0.1:{port}"] + (
                    [f"127.0.0.1:{port + 50}"] if grown else []
                )

    try:
        resize(grown=True)
        muc = (site.shared / "data/muc/config.php").read_text()
        assert str(site.cache_ports["application"] + 50) in muc, (
            "the application cache's store misses the new node"
        )
        for _ in range(8):  # 8 sessions: each lands on either server
            browser = Browser(SITE_HOST)
            browser.log_in(site.nodes[0], "admin", ADMIN_PASSWORD)
            final = browser.request(site.nodes[1], "GET", "/my/")[1]
            assert not final.startswith("/login/"), (
                f"the session opened on node 1 is not found on node 2 ({final})"
            )
        for role in site.cache_ports:
            assert services.memcached_keys(site.cache_ports[role] + 50), f"the new {role} node holds no key"
    finally:
        resize(grown=False)
        for server in extra.values():
            server.stop()


def queue_busy_task(node: Node, seconds: int, fail: bool = False) -> None:
    """Queue the rig plugin's busy task through Moodle's task API, as a course backup queues its own."""
    php = ("define('CLI_SCRIPT', true); require getenv('MOODLE_DIR') . '/config.php';"
           " $task = new \\local_rigcheck\\task\\busy_task();"
           f" $task->set_custom_data(['seconds' => {seconds}, 'fail' => {'true' if fail else 'false'}]);"
           " \\core\\task\\manager::queue_adhoc_task($task);")  # fmt: skip
    result = as_web_user(node, f"MOODLE_DIR=/var/www/moodle MOODLE_CFN_SETTINGS=/etc/moodle-cfn/moodle.json "
                               f"php -r {shlex.quote(php)}")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def busy_tasks(site: Site) -> str:
    """The rig's busy tasks in Moodle's queue: 'id:started' per row, started 't' once a runner took it."""
    return site.db("SELECT coalesce(string_agg(id || ':' || (timestarted IS NOT NULL), ','), '') FROM mdl_task_adhoc "
                   "WHERE classname = '\\local_rigcheck\\task\\busy_task'")  # fmt: skip


def test_a_node_leaving_the_group_finishes_its_running_task_before_its_hook_completes(site: Site) -> None:
    """Scale-in while a long ad-hoc task runs on the node: the drain (moodle-node-drain.sh, as its unit runs
    it) starts no new cron run, lets the running one finish its task, heartbeats the terminate hook while it
    waits, and completes the hook only then; no task is left marked running."""
    if site.leg != DRAIN_LEG:
        pytest.skip(f"the drain is rehearsed on {DRAIN_LEG}")
    if site.cron is not None and site.cron.poll() is None:
        site.cron.communicate(timeout=900)  # node 1's cron run (keeps alive 3 minutes) must not take the task
    node = site.nodes[1]
    instance = node.imds.metadata["instance-id"]
    assert busy_tasks(site) == ""
    queue_busy_task(node, BUSY_SECONDS)
    cron = start_cron_as_its_unit_runs_it(node)
    deadline = time.monotonic() + 120
    while not busy_tasks(site).endswith(":true"):
        assert time.monotonic() < deadline and cron.poll() is None, "node 2's cron never took the busy task"
        time.sleep(0.5)
    taken = time.monotonic()
    node.imds.metadata["autoscaling/target-lifecycle-state"] = "Terminated"
    try:
        drain = node.run(["env", "MOODLE_CFN_DRAIN_POLL_SECONDS=1", "bash", "/usr/share/moodle-cfn/moodle-node-drain.sh"],
                         check=False, timeout=600)  # fmt: skip
    finally:
        node.imds.metadata["autoscaling/target-lifecycle-state"] = "InService"
    drained = time.monotonic()
    processes = subprocess.run(["pgrep", "-af", "cron"], capture_output=True, text=True).stdout
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert "asking it to finish its current task" in drain.stderr, drain.stderr + processes
    output, errors = cron.communicate(timeout=60)
    site.steps["drain of a node running a 30 s ad-hoc task"] = round(drained - taken, 1)
    assert node.run(["test", "-e", "/run/moodle-cron-timer-stopped"], check=False).returncode == 0
    # Moodle's cron took the signal as "finish this task, then exit", and did.
    assert "rig busy task done after 30 s" in output, output[-3000:] + errors[-3000:]
    assert cron.returncode == 0, output[-3000:] + errors[-3000:]
    assert busy_tasks(site) == "", "a task is left in the queue or marked running"
    assert site.db("SELECT count(*) FROM mdl_task_adhoc WHERE timestarted IS NOT NULL") == "0"
    (completion,) = [c for c in site.aws.calls_of("CompleteLifecycleAction", instance)
                     if c["LifecycleHookName"] == "moodle-node-drain"]  # fmt: skip
    assert completion["LifecycleActionResult"] == "CONTINUE"
    heartbeats = [c for c in site.aws.calls_of("RecordLifecycleActionHeartbeat", instance)
                  if c["LifecycleHookName"] == "moodle-node-drain"]  # fmt: skip
    assert heartbeats and site.aws.calls.index(heartbeats[-1]) < site.aws.calls.index(completion)
    # The hook waited for the task: at least the task's remaining time passed after the runner took it.
    assert drained - taken >= BUSY_SECONDS - 5, drained - taken
    assert "drained in" in drain.stderr and "asking it to finish its current task" in drain.stderr, (
        drain.stderr
    )


def test_moodles_health_reaches_cloudwatch_once_per_site_and_crosses_the_cron_alarm(site: Site) -> None:
    """With cron stopped (the run above ended), time set back and a failing ad-hoc task: both nodes' agents
    in one minute, one publish, read back from moto (tests/node_rig/metrics_check.py)."""
    measured = site.timed("Moodle health metrics check", lambda: check_moodle_health_metrics(site))
    (CACHE / f"metrics-{site.leg}.json").write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


def node_state(site: Site, node: Node) -> str:
    """A digest of what a setup run could change on a node and in what it shares."""
    listing = node.run(["sh", "-c", "find /etc/moodle-cfn /var/www /etc/apache2/sites-enabled /etc/php/*/fpm "
                        "/etc/systemd/system -maxdepth 2 -type f -newer /proc/1 -o -type f -print0 | sort -z "
                        "| xargs -0 sha256sum; readlink /var/www/moodle"]).stdout  # fmt: skip
    database = site.db("SELECT count(*) FROM mdl_upgrade_log") + site.db(
        "SELECT string_agg(name || '=' || value, ',' ORDER BY name) FROM mdl_config "
        "WHERE name IN ('version', 'release', 'allversionshash')"
    )
    muc = (site.shared / "data" / "muc" / "config.php").read_bytes()
    return hashlib.sha256(listing.encode() + database.encode() + muc).hexdigest()


def test_a_reboot_changes_nothing(site: Site) -> None:
    node = site.nodes[0]
    before = node_state(site, node)
    status, output = site.timed("a reboot of one node", lambda: node.setup(first_boot=False))
    assert status == 0, output[-4000:]
    assert INSTALL_LINE not in output and UPGRADE_LINE not in output
    assert node_state(site, node) == before
    assert Browser(SITE_HOST).request(node, "GET", "/login/index.php")[0] == 200


def test_an_upgrade_bundle_is_rolled_onto_both_nodes_by_exactly_one(site: Site) -> None:
    # Same MoodleVersion, new bundle: a new release all the same.
    upgrade_bundle = bumped_bundle(site.release)
    uri = site.aws.upload(
        "rig-code", f"moodle-{site.release}-bumped-{site.leg}.tar.gz", str(upgrade_bundle.path)
    )
    site.parameters.update(MoodleCodeS3Uri=uri, MoodleCodeSha256=sha256(upgrade_bundle.path))
    for node in site.nodes:
        site.write_init_files(node)
    old_ready = (site.nodes[1].root / "etc/moodle-cfn/ready.json").read_text()
    maintenance = site.shared / "data" / "climaintenance.html"
    seen: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(maintenance.exists())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = site.timed("upgrade roll of both nodes (one upgrades)", site.setup_all)
    finally:
        done.set()
        watcher.join()
    for status, output in results:
        assert status == 0, output[-4000:]
    upgraders = [output for _, output in results if UPGRADE_LINE in output]
    assert len(upgraders) == 1
    assert any(seen) and not maintenance.exists()
    component = BUMPED_PLUGIN[1]
    installed = site.db(
        f"SELECT value FROM mdl_config_plugins WHERE plugin = '{component}' AND name = 'version'"
    )
    assert installed == str(upgrade_bundle.version)
    for node in site.nodes:
        assert Browser(SITE_HOST).request(node, "GET", "/login/index.php")[0] == 200
        assert str(upgrade_bundle.version) in node.file(
            f"/var/www/moodle/{web_root(site.release)}{BUMPED_PLUGIN[0]}"
        )
        assert health(node) == 200
    # A node still on the old code (its readiness from before the upgrade): its first page finds that the
    # database runs other code, answers 503, and from then on its health check fails too (replaced).
    ready = site.nodes[1].root / "etc/moodle-cfn/ready.json"
    new_ready = ready.read_text()
    ready.write_text(old_ready)
    assert health(site.nodes[1]) == 200  # nothing seen yet: the health check reads only the node's own disk
    status, _, page = Browser(SITE_HOST).request(site.nodes[1], "GET", "/login/index.php")
    assert status == 503 and "being replaced" in page
    assert health(site.nodes[1]) == 503
    ready.write_text(new_ready)
    (site.nodes[1].root / "var/cache/moodle/node-stale").unlink()  # what the node's next boot does
    assert health(site.nodes[1]) == 200
    assert Browser(SITE_HOST).request(site.nodes[1], "GET", "/login/index.php")[0] == 200


def test_a_stale_warm_pool_node_is_discarded_without_failing_the_update(site: Site) -> None:
    node = site.nodes[1]
    instance = node.imds.metadata["instance-id"]
    group = node.imds.metadata["tags/instance/aws:autoscaling:groupName"]
    signals = len(site.aws.calls_of("SignalResource", instance))
    site.aws.groups[group] = "2"  # the stack moved on while this node sat stopped in the warm pool
    try:
        started = time.monotonic()
        status, output = node.setup(first_boot=False)
    finally:
        site.aws.groups[group] = "1"
    assert status == 0 and "launch template version 1, the group runs 2: discarding" in output
    assert "moodle-node-setup" not in output and time.monotonic() - started < 30
    assert site.aws.calls_of("CompleteLifecycleAction", instance)[-1]["LifecycleActionResult"] == "ABANDON"
    # No FAILURE for CloudFormation: the rolling update that took this node from the pool goes on.
    assert len(site.aws.calls_of("SignalResource", instance)) == signals
    assert health(node) == 503
    status, output = node.setup(first_boot=False)
    assert status == 0 and health(node) == 200, output[-3000:]


def test_moodle_records_the_viewers_address(site: Site) -> None:
    # The chain the load balancer passes for the template's X-Forwarded-For mode: behind CloudFront it
    # preserves CloudFront's header (what the client sent, then the viewer CloudFront saw).
    attributes = app_template()["Resources"]["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
    (mode,) = [a["Value"] for a in attributes if a["Key"] == "routing.http.xff_header_processing.mode"]
    assert mode == {"Fn::If": ["UseCloudFront", "preserve", "append"]}
    forged, viewer = "198.51.100.9", "203.0.113.7"
    browser = Browser(SITE_HOST, {"X-Forwarded-For": f"{forged}, {viewer}"})
    browser.log_in(site.nodes[0], "admin", ADMIN_PASSWORD)
    assert site.db("SELECT lastip FROM mdl_user WHERE username = 'admin'") == viewer


def test_a_failure_is_one_line_that_says_what_failed(site: Site) -> None:
    node = site.nodes[1]
    wrong = site.aws.secret(f"rig-{site.leg}-moodle-wrong", {**APP_USER, "password": "not-the-password"})
    cases = {
        "wrong database secret": ({"DatabaseAppUserSecretArn": wrong}, "password authentication failed"),
        "unreachable database": ({"DatabasePort": "1"}, "Connection refused"),
        "missing secret": ({"DatabaseAppUserSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone"},
                           "cannot read the secret"),
    }  # fmt: skip
    good = dict(site.names)
    try:
        for case, (changes, reason) in cases.items():
            site.names = {**good, **changes}
            site.write_init_files(node)
            status, output = node.setup()
            failures = [line for line in output.splitlines() if NODE_SETUP_FAILED in line]
            assert status != 0, case
            assert len(failures) == 1 and reason in failures[0], f"{case}: {failures or output[-2000:]}"
            # The node gives itself up at once: the hook abandoned, CloudFormation told.
            instance = node.imds.metadata["instance-id"]
            assert (
                site.aws.calls_of("CompleteLifecycleAction", instance)[-1]["LifecycleActionResult"]
                == "ABANDON"
            )
            assert site.aws.calls_of("SignalResource", instance)[-1]["Status"] == "FAILURE"
            assert health(node) == 503
    finally:
        site.names = good
        site.write_init_files(node)
        status, output = node.setup()
    assert status == 0, output[-4000:]


def test_a_rotated_database_login_reaches_every_node_and_the_site_never_stops(site: Site) -> None:
    """Secrets Manager's rotation of Moodle's login, the function's own four steps (alternating users), twice.
    After each, both nodes still serve on the login they hold, then take the new one at their 5-minute check
    (run here at once) and serve on it; the second rotation retires the first login's password. Before the
    restore below, which stops these nodes."""
    secrets = site.aws.client("secretsmanager")
    arn = site.names["DatabaseAppUserSecretArn"]
    settings = role_function_settings(site, "moodle")
    logins = []
    for _ in range(2):
        token = str(uuid.uuid4())
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            database_role.rotate(secrets, settings, arn, token, step)
        login = json.loads(secrets.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
        logins.append(login["username"])
        for node in site.nodes:
            assert Browser(SITE_HOST).request(node, "GET", "/login/index.php")[0] == 200, "before the check"
            checked = node.run(["bash", "/usr/share/moodle-cfn/moodle-node-setup.sh", "--refresh-settings"],
                               check=False)  # fmt: skip
            assert checked.returncode == 0, checked.stderr[-2000:]
            assert f"logs in to the database as {login['username']}" in checked.stderr
            settings_now = json.loads(node.file("/etc/moodle-cfn/moodle.json"))
            assert settings_now["database"]["user"] == login["username"]
            final = Browser(SITE_HOST).log_in(node, "admin", ADMIN_PASSWORD)
            assert not final.startswith("/login/index.php"), f"{node.name}: login ended at {final}"
    assert logins == ["moodle_clone", "moodle"]
    with pytest.raises(services.SqlError):
        site.postgres.sql_as("moodle", APP_USER["password"], "SELECT 1", "moodle")


def assert_router_answers(node: Node) -> None:
    """Moodle 5.x: a path no file serves goes to r.php (FallbackResource), and Moodle's router (Slim)
    answers it with its own 404 page, not Apache's ("...was not found on this server")."""
    status, _, page = Browser(SITE_HOST).request(node, "GET", "/no/such/route")
    assert status == 404 and "verify the URI and try again" in page, (status, page[:300])
    assert "was not found on this server" not in page


def test_moodle_5_sends_unknown_paths_to_its_router(site: Site) -> None:
    if int(site.release.split(".")[0]) < 5:
        pytest.skip("the router is Moodle 5.0+")
    for node in site.nodes:
        assert_router_answers(node)
        assert node.run(["test", "-f", "/var/www/moodle/public/r.php"]).returncode == 0
    vhost = site.nodes[0].file("/etc/apache2/sites-enabled/moodle.conf")
    assert 'DocumentRoot "/var/www/moodle/public"' in vhost and "FallbackResource /r.php" in vhost


def poll_pages(nodes: list[Node], stop: threading.Event, seen: list[tuple[float, str, int, str]]) -> None:
    """Anonymous login-page requests to each node in `nodes` (the ones in service: a list the caller
    changes) in turn until `stop`: (time, node, status, page's title or first line), what a viewer sent
    there by the load balancer would get."""
    browser = Browser(SITE_HOST)
    while not stop.is_set():
        for node in list(nodes):
            try:
                status, _, page = browser.request(node, "GET", "/login/index.php")
            except (OSError, http.client.HTTPException) as error:
                status, page = 0, str(error)
            title = re.search(r"<title>(.*?)</title>", page, re.S)
            seen.append(
                (time.monotonic(), node.name, status, (title.group(1) if title else page)[:120].strip())
            )
        time.sleep(0.1)


def test_a_major_upgrade_to_5_1_is_rolled_onto_both_nodes(site: Site) -> None:
    """4.5.0 to 5.1.3 (the public/ layout, the router), as a stack update rolls it: node 2 is replaced
    first and upgrades the database under the lock and maintenance mode while node 1, still on 4.5.0, keeps
    answering; then node 1 is replaced. A node being replaced is out of service (on AWS a new node takes no
    traffic until its launch hook completes); no node in service may answer a page with anything but the
    page, the maintenance page or "being replaced" (503) at any moment."""
    if site.leg != MAJOR_UPGRADE_LEG or site.release != "4.5.0":
        pytest.skip(f"the major upgrade runs on {MAJOR_UPGRADE_LEG} (Moodle 4.5.0) only")
    target = RELEASES["5.1"]
    refused = php_refuses(target)
    if refused:
        pytest.skip(refused)
    uri = site.aws.upload("rig-code", f"moodle-{target}.tar.gz", str(bundle_of(target)))
    site.parameters.update(
        MoodleVersion=target, MoodleCodeS3Uri=uri, MoodleCodeSha256=sha256(bundle_of(target))
    )
    node1, node2 = site.nodes
    maintenance = site.shared / "data" / "climaintenance.html"
    seen: list[tuple[float, str, int, str]] = []
    windows: list[float] = []
    stop = threading.Event()

    def watch_maintenance() -> None:
        while not stop.is_set():
            if maintenance.exists():
                windows.append(time.monotonic())
            time.sleep(0.05)

    in_service = [node1]
    threads = [threading.Thread(target=poll_pages, args=(in_service, stop, seen)),
               threading.Thread(target=watch_maintenance)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        site.write_init_files(node2)
        status, output = site.timed("major upgrade: node 2 replaced (upgrades the database)", node2.setup)
        assert status == 0, output[-4000:]
        assert UPGRADE_LINE in output
        in_service[:] = [node2]
        site.write_init_files(node1)
        status, output = site.timed("major upgrade: node 1 replaced", node1.setup)
        assert status == 0, output[-4000:]
        assert UPGRADE_LINE not in output
        in_service[:] = [node1, node2]
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    site.release = target
    assert site.db("SELECT value FROM mdl_config WHERE name = 'release'").startswith(target)
    assert windows, "maintenance mode was never on"
    site.steps["major upgrade: maintenance mode on"] = round(windows[-1] - windows[0], 1)
    # What viewers got during the roll: pages, the maintenance page, or node 1's "being replaced" once
    # the database ran newer code than its own; never an error from old code against the new database.
    statuses = {(node, status, text if status != 200 else "") for _, node, status, text in seen}
    bad = {item for item in statuses if item[1] not in (200, 503)}
    assert not bad, sorted(bad)
    unavailable = {}
    for node in site.nodes:
        mine = [(at, status) for at, name, status, _ in seen if name == node.name]
        unavailable[node.name] = round(sum(0.1 for _, status in mine if status != 200), 1)
    site.steps["major upgrade: seconds of 503 seen per node (approx.)"] = unavailable  # type: ignore[assignment]
    for node in site.nodes:
        browser = Browser(SITE_HOST)
        assert not browser.log_in(node, "admin", ADMIN_PASSWORD).startswith("/login/index.php")
        assert health(node) == 200
        assert node.run(["test", "-d", "/var/www/moodle/public"]).returncode == 0
    assert_router_answers(node1)
    # The application cache after the upgrade, on 5.1 (with the memcached store plugin on memcached legs).
    Browser(SITE_HOST).log_in(node2, "admin", ADMIN_PASSWORD)
    assert any(key.startswith("mdl_") for key in site.cache_keys("application"))


# ---- Moodle's PHP files on the shared disk are never served stale (issue 26) ----------------------------
# Moodle writes PHP files to dataroot on EFS and includes them: customised strings and language packs
# (dataroot/lang) and the MUC configuration (dataroot/muc/config.php). OPcache re-checks a cached file at
# most every revalidate_freq (60 s) and Moodle's opcache_invalidate() reaches only the writer's PHP, so
# without opcache-moodledata.blacklist a change made twice within a minute stayed old on both nodes.
# Each change below is made on node 1 with Moodle's own API, as the web user (a CLI run, whose OPcache is
# off, as an admin's CLI run would be), the second one seconds after both nodes served the first.

# Files OPcache saw modified less than opcache.file_update_protection (2 s) ago are not cached: wait past
# it before the first page, so that without the blacklist the first value would be cached.
UPDATE_PROTECTION_SECONDS = 2.5


def moodle_php(node: Node, code: str, *args: str) -> str:
    """PHP run on `node` as the web user inside Moodle (config.php loaded, CLI_SCRIPT); its stdout."""
    script = "define('CLI_SCRIPT', true); require('/var/www/moodle/config.php'); " + code
    result = node.run(["runuser", "-u", WEB_USER, "--", "php", "-r", script, "--", *args], check=False)
    assert result.returncode == 0, f"{node.name}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


# What tool_customlang does when an administrator edits a string and saves it to the language pack:
# the edit form sets the string's `local` value and `modified` (admin/tool/customlang/edit.php), then
# tool_customlang_utils::checkin() writes dataroot/lang/en_local/moodle.php and resets the string caches.
CUSTOMISE_STRING = r"""
require_once($CFG->dirroot . '/admin/tool/customlang/locallib.php');
[, $stringid, $value] = $argv;
$componentid = $DB->get_field('tool_customlang_components', 'id', ['name' => 'core'])
    ?: $DB->insert_record('tool_customlang_components', (object) ['name' => 'core', 'version' => null]);
$now = time();
$record = $DB->get_record('tool_customlang', ['lang' => 'en', 'componentid' => $componentid, 'stringid' => $stringid]);
if ($record) {
    $DB->update_record('tool_customlang', (object) ['id' => $record->id, 'local' => $value, 'modified' => 1,
        'timecustomized' => $now]);
} else {
    $original = get_string_manager()->load_component_strings('core', 'en', true, true)[$stringid];
    $DB->insert_record('tool_customlang', (object) ['lang' => 'en', 'componentid' => $componentid,
        'stringid' => $stringid, 'original' => $original, 'master' => $original, 'local' => $value,
        'timemodified' => $now, 'timecustomized' => $now, 'outdated' => 0, 'modified' => 1]);
}
tool_customlang_utils::checkin('en');
"""

# What tool_langimport does with a downloaded pack (lang_installer, then the controller): the pack's
# directory replaced by the zip's under dataroot/lang, then the string caches reset.
INSTALL_LANGUAGE_PACK = r"""
require_once($CFG->libdir . '/filelib.php');
[, $zip, $lang] = $argv;
fulldelete("$CFG->dataroot/lang/$lang");
get_file_packer('application/zip')->extract_to_pathname($zip, "$CFG->dataroot/lang/");
get_string_manager()->reset_caches();
"""

# A change through Moodle's cache administration API (cache_config_writer, what cache/admin.php calls):
# a new file store instance, a definition mapped to it alone, the previous probe store removed.
MAP_DEFINITION_TO_NEW_STORE = r"""
[, $store, $previous] = $argv;
require_once($CFG->dirroot . '/cache/stores/file/lib.php');  // deleting an instance makes one of its class
$writer = cache_config_writer::instance();
if ($store !== '') {
    $writer->add_store_instance($store, 'file', []);
}
$writer->set_definition_mappings('core/htmlpurifier', $store === '' ? [] : [$store]);
if ($previous !== '') {
    $writer->delete_store_instance($previous);
}
"""


def pages_show(site: Site, browser: Browser, path: str, marker: str) -> dict[str, bool]:
    """Whether each node's next page at `path` holds `marker`."""
    return {node.name: marker in browser.request(node, "GET", path)[2] for node in site.nodes}


def assert_second_change_shows_on_both_nodes(site: Site, browser: Browser, path: str,
                                             change: Callable[[str], None], values: tuple[str, str]) -> None:  # fmt: skip
    """`change` made on node 1 with the first value, both nodes' pages served it, then the second value
    seconds later: both nodes' next page shows the second value."""
    first, second = values
    change(first)
    time.sleep(UPDATE_PROTECTION_SECONDS)
    assert pages_show(site, browser, path, first) == {"node1": True, "node2": True}
    started = time.monotonic()
    change(second)
    shown = pages_show(site, browser, path, second)
    elapsed = time.monotonic() - started
    assert elapsed < 50, (
        f"the second change and the pages took {elapsed:.0f} s: the test no longer proves anything"
    )
    assert shown == {"node1": True, "node2": True}, f"{elapsed:.0f} s after the change: {shown}"


def test_a_string_customised_twice_within_a_minute_shows_on_both_nodes(site: Site) -> None:
    node1 = site.nodes[0]
    reader = Browser(SITE_HOST)

    def customise(value: str) -> None:
        moodle_php(node1, CUSTOMISE_STRING, "username", value)

    try:
        assert_second_change_shows_on_both_nodes(
            site, reader, "/login/index.php", customise, ("Rig username first", "Rig username second")
        )
        # Each node served the strings from its own APCu (muc-configure.php maps core/string there),
        # under the revision the change raised: the test above proved a node-local string cache right.
        for node in site.nodes:
            seen = json.loads(reader.request(node, "GET", "/local/rigcheck/strings.php")[2])
            assert any(f"__en_core_{seen['langrev']}-" in key for key in seen["keys"]), (node.name, seen)
    finally:
        moodle_php(node1, "require_once($CFG->dirroot . '/admin/tool/customlang/locallib.php');"
                   " $DB->delete_records('tool_customlang'); tool_customlang_utils::checkin('en');")  # fmt: skip


def language_pack_zip(lang: str, username: str) -> Path:
    """A language pack as download.moodle.org ships one: a zip of its directory (langconfig.php names it)."""
    target = WORK / f"langpack-{lang}-{hashlib.sha256(username.encode()).hexdigest()[:8]}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = "<?php\ndefined('MOODLE_INTERNAL') || die();\n"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(f"{lang}/langconfig.php", header + (
            "$string['thislanguage'] = 'Rig pack';\n$string['thislanguageint'] = 'Rig pack';\n"
            "$string['parentlanguage'] = '';\n$string['locale'] = 'en_AU.UTF-8';\n"
        ))  # fmt: skip
        archive.writestr(f"{lang}/moodle.php", header + f"$string['username'] = '{username}';\n")
    target.chmod(0o644)
    return target


def test_a_language_pack_installed_twice_within_a_minute_shows_on_both_nodes(site: Site) -> None:
    node1, lang = site.nodes[0], "xr"
    reader = Browser(SITE_HOST)

    def install(username: str) -> None:
        # Where lang_installer downloads to: Moodle's tempdir, on the shared disk.
        zip_path = site.shared / "temp" / f"rig-langpack-{username.replace(' ', '-')}.zip"
        shutil.copyfile(language_pack_zip(lang, username), zip_path)
        shutil.chown(zip_path, WEB_USER, WEB_USER)
        moodle_php(node1, INSTALL_LANGUAGE_PACK, f"/var/moodledata/temp/{zip_path.name}", lang)

    try:
        assert_second_change_shows_on_both_nodes(
            site, reader, f"/login/index.php?lang={lang}", install, ("Rig pack first", "Rig pack second")
        )
    finally:
        moodle_php(node1, "require_once($CFG->libdir . '/filelib.php'); fulldelete($CFG->dataroot . '/lang/'"
                   " . $argv[1]); get_string_manager()->reset_caches();",
                   lang)  # fmt: skip


def test_a_cache_definition_mapped_twice_within_a_minute_shows_on_both_nodes(site: Site) -> None:
    node1 = site.nodes[0]
    admin = Browser(SITE_HOST)
    admin.log_in(node1, "admin", ADMIN_PASSWORD)
    stores: list[str] = []

    def map_definition(store: str) -> None:
        moodle_php(node1, MAP_DEFINITION_TO_NEW_STORE, store, stores[-1] if stores else "")
        stores.append(store)

    try:
        assert_second_change_shows_on_both_nodes(site, admin, "/cache/admin.php", map_definition,
                                                 ("rigprobefirst", "rigprobesecond"))  # fmt: skip
        # The first store is gone from both nodes' view as well.
        assert pages_show(site, admin, "/cache/admin.php", "rigprobefirst") == {
            "node1": False,
            "node2": False,
        }
    finally:
        if stores:
            moodle_php(node1, MAP_DEFINITION_TO_NEW_STORE, "", stores[-1])


# ---- The Aurora reader takes the safe reads (issue 26) ----------------------------------------------------
# config.php gives Moodle the cluster's reader endpoint as its read-only replica (dboptions['readonly']);
# on REPLICA_LEGS it is a streaming replica of the rig's database, REPLICA_APPLY_DELAY_MS behind it.


def forms_inputs(page: str, action: str) -> dict[str, str]:
    """The named inputs (hidden ones with their values) of the page's form whose action holds `action`."""
    form = re.search(rf'<form[^>]*action="[^"]*{re.escape(action)}[^"]*"[^>]*>(.*?)</form>', page, re.S)
    assert form, f"no form posting to {action}"
    inputs = {}
    for tag in re.findall(r"<input\b[^>]*>", form.group(1)):
        name, value = re.search(r'\bname="([^"]*)"', tag), re.search(r'\bvalue="([^"]*)"', tag)
        kind = re.search(r'\btype="([^"]*)"', tag)
        if name and kind and kind.group(1) == "hidden":
            inputs[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return inputs


# The cookie by which config.php sends a browser's reads to the writer for a while after a form post.
WROTE_COOKIE = "MOODLECFN_WROTE"


def post_to_forum(browser: Browser, node: Node, forum: str, subject: str, guarded: bool = True) -> str:
    """A new discussion in `forum` through `node`'s form, as a user posts it; the page Moodle shows next.
    Unguarded: the browser drops config.php's cookie before it follows the redirect (the control)."""
    _, _, page = browser.request(node, "GET", f"/mod/forum/post.php?forum={forum}")
    form = forms_inputs(page, "post.php")
    form.update({"subject": subject, "message[text]": f"<p>{subject}</p>", "submitbutton": "Post to forum"})
    form.setdefault("message[format]", "1")
    status, final, shown = browser.request(node, "POST", "/mod/forum/post.php", form, follow=guarded)
    if not guarded:
        assert status in (302, 303), f"{node.name}: posting answered {status}"
        browser.cookies.pop(WROTE_COOKIE, None)
        # Where Moodle sends the poster of a new discussion (mod/forum/post.php).
        status, final, shown = browser.request(node, "GET", f"/mod/forum/view.php?f={forum}")
    assert status == 200, f"{node.name}: posting answered {status} at {final}"
    return shown


def test_the_reader_takes_the_safe_reads_and_a_post_shows_on_the_next_page(site: Site) -> None:
    """With the replica as the reader: a share of Moodle's SELECTs run on it rather than on the writer
    during a page mix on both nodes, and every post a user makes shows on the next page, on the node that
    took it and on the other one, although the replica applies each commit REPLICA_APPLY_DELAY_MS late."""
    if site.replica is None:
        pytest.skip(f"{site.leg} has no replica (REPLICA_LEGS: {', '.join(REPLICA_LEGS)})")
    for node in site.nodes:
        settings = json.loads(node.file("/etc/moodle-cfn/moodle.json"))
        assert settings["database"]["reader_host"] == REPLICA_ADDRESS
    forum = moodle_php(site.nodes[0], "require_once($CFG->dirroot . '/mod/forum/lib.php');"
                       " echo forum_get_course_forum(SITEID, 'news')->id;")  # fmt: skip
    admin = Browser(SITE_HOST)
    admin.log_in(site.nodes[0], "admin", ADMIN_PASSWORD)
    pages = ("/my/", "/", f"/mod/forum/view.php?f={forum}", "/user/profile.php", "/course/index.php")
    time.sleep(6)  # past the login's own read-from-the-writer pause (config.php)
    for server in (site.postgres, site.replica):
        server.sql("SELECT pg_stat_statements_reset()", "postgres")
    for _ in range(3):
        for path in pages:
            for node in site.nodes:
                status, final, _ = admin.request(node, "GET", path)
                assert status == 200, f"{node.name} {path}: {status} at {final}"
    writer, reader = (services.statements_run(server, "moodle") for server in (site.postgres, site.replica))
    selects = writer.get("SELECT", 0) + reader.get("SELECT", 0)
    share = reader.get("SELECT", 0) / selects
    print(f"\npage mix: SELECTs on the writer {writer.get('SELECT', 0)}, on the reader {reader.get('SELECT', 0)}: "
          f"{share:.0%} left the writer; the reader ran {reader}; the writer {writer}")  # fmt: skip
    stale, tag = [], uuid.uuid4().hex[:8]
    for round_ in range(6):
        writer_node, other = site.nodes[round_ % 2], site.nodes[(round_ + 1) % 2]
        subject = f"Rig reader post {tag} {round_}"
        if subject not in post_to_forum(admin, writer_node, forum, subject):
            stale.append(f"{writer_node.name}, the page after the post")
        if subject not in admin.request(other, "GET", f"/mod/forum/view.php?f={forum}")[2]:
            stale.append(f"{other.name}, the forum right after the post on {writer_node.name}")
        time.sleep(1)
    print(f"posts: {len(stale)} old pages in 6 rounds of a post and two pages: {stale}")
    # The control: the same without config.php's cookie, Moodle's own per-request guard alone.
    unguarded = []
    for round_ in range(6):
        writer_node, other = site.nodes[round_ % 2], site.nodes[(round_ + 1) % 2]
        subject = f"Rig unguarded post {tag} {round_}"
        if subject not in post_to_forum(admin, writer_node, forum, subject, guarded=False):
            unguarded.append(f"{writer_node.name}, the page after the post")
        admin.cookies.pop(WROTE_COOKIE, None)
        if subject not in admin.request(other, "GET", f"/mod/forum/view.php?f={forum}")[2]:
            unguarded.append(f"{other.name}, the forum right after the post on {writer_node.name}")
        time.sleep(1)
    print(f"without the cookie: {len(unguarded)} old pages in 6 rounds: {unguarded}")
    assert not stale, f"read-after-write returned old data: {stale}"
    writes = {"INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "TRUNCATE"}
    assert not writes & set(reader), f"the reader was sent writes: {reader}"
    # Measured: 57% (1,377 of 2,428) on valkey-17-5.1 (README, Data design).
    assert share > 0.4, f"only {share:.0%} of the SELECTs left the writer"


def test_an_existing_site_restored_from_a_snapshot_comes_up_without_a_reinstall(site: Site) -> None:
    """Bring an existing site: its database restored (a copy of the installed one, as a snapshot restore
    is, with its tables owned by the old site's own user) and its filedir copied to a new, empty EFS. The
    database-role function hands the tables to Moodle's role; new nodes find the installed site, match
    its release and never reinstall. One leg: nothing here depends on the cache engine."""
    if site.leg != LEGS[0]:
        pytest.skip(f"the restore path runs on the first leg ({LEGS[0]}) only")
    for node in site.nodes:  # the old site's nodes go (a copy needs no other connections to the source)
        node.stop()
    site.postgres.sql_as(MASTER["username"], MASTER["password"], "CREATE ROLE oldsite LOGIN PASSWORD 'old-1'",
                         "moodle")  # fmt: skip
    site.postgres.sql("CREATE DATABASE restored TEMPLATE moodle OWNER oldsite")
    site.postgres.sql(
        "DO $d$DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP "
        "EXECUTE format('ALTER TABLE public.%I OWNER TO oldsite', t); END LOOP; END$d$; "
        "ALTER SCHEMA public OWNER TO oldsite",
        "restored",
    )
    assert site.postgres.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
                             "restored") == "oldsite"  # fmt: skip
    run_database_role_function(site, "restored")
    owners = site.postgres.sql(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", "restored"
    )
    assert owners == OWNER_ROLE
    # moodledata: only the files (filedir) come over, as DataSync or an rsync from an old node would copy
    # them; caches, sessions, temp and the old MUC config stay behind.
    shared = site.shared.parent / "efs-restored"
    shutil.copytree(site.shared / "data" / "filedir", shared / "data" / "filedir")
    code = site.shared.parent / "efs-restored-code"
    code.mkdir()
    nodes = []
    for n, address in enumerate(NODE_ADDRESSES, start=1):
        imds = Imds({**site.nodes[n - 1].imds.metadata, "instance-id": f"i-0restored{n}"})
        environment = {
            **site.nodes[n - 1].environment,
            "RIG_SHARED_DIR": str(shared),
            "RIG_CODE_DIR": str(code),
            "RIG_IMDS_URL": imds.url,
        }
        nodes.append(Node(f"restored{n}", address, shared.parent / f"restored{n}", environment, imds=imds))
    try:
        for node in nodes:
            node.boot_namespace()
            site.write_init_files(node, DatabaseName="restored")

        def boot() -> list[tuple[str, int]]:
            processes = [node.start_setup() for node in nodes]
            return [(process.communicate(timeout=1800)[0], process.returncode) for process in processes]

        results = site.timed("first boot of both nodes of a restored site", boot)
        for output, status in results:
            assert status == 0, output[-4000:]
            assert INSTALL_LINE not in output and UPGRADE_LINE not in output
            assert f"the database runs {site.release}" in output
        assert (shared / ".moodle-cfn" / "moodle-release").read_text() == f"{site.release}\n"
        for node in nodes:
            # The old site's admin and password: the site came over, it was not installed anew.
            browser = Browser(SITE_HOST)
            assert not browser.log_in(node, "admin", ADMIN_PASSWORD).startswith("/login/index.php")
            assert health(node) == 200
        assert site.postgres.sql("SELECT count(*) FROM mdl_user WHERE username = 'admin'", "restored") == "1"
    finally:
        for node in nodes:
            node.stop()
            node.imds.stop()


def every_aws_call_a_node_made_is_allowed(site: Site) -> None:
    """Every request this leg's nodes made (recorded by the rig's AWS front door: tests/node_rig/aws.py) is
    allowed by the policies templates/app.yaml gives the nodes' role for the values in force then, as an
    offline IAM evaluator decides (tests/node_rig/iam_check.py)."""
    stack = site.names["AWS::StackName"]
    calls = [
        (state, call)
        for state, call in site.aws.node_calls
        if state and state.names["AWS::StackName"] == stack
    ]
    assert calls, "the rig recorded no AWS call of this leg's nodes"
    verdicts = evaluate(calls)
    denied = denied_report(verdicts)
    assert not denied, f"{len(denied.splitlines())} lines of denied calls:\n{denied}"
    # What the check covered, for the log: each distinct action and resource once.
    print(
        "\n".join(
            sorted({f"{v.call.action} {v.call.resource} <- {', '.join(v.allowed_by)}" for v in verdicts})
        )
    )


# Last of the module: every call the tests above made.
def test_every_aws_call_a_node_made_is_allowed(site: Site) -> None:
    every_aws_call_a_node_made_is_allowed(site)
