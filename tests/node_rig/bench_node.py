"""make bench-node: how many Moodle pages the rig's two web nodes serve, under each node configuration.

The rig's two-node site (tests/node_rig/rehearse_node.py, memcached leg on PostgreSQL 17: the memcached
leg is the one whose application cache leaves the most on the shared disk) boots from the templates' node
files with its shared "EFS" directory behind a latency model of EFS (bench/efs_latency.py: 0.5 ms per
read-type, 2 ms per write-type operation, counted by type). N students, each logged in beforehand with
their own Moodle session, load three pages with wrk (bench/load.lua: one connection per user, half of
the users on each node): the dashboard (/my/), a course page with a dozen activities and the login page
(anonymous). Each node configuration in turn is installed on both nodes, PHP-FPM restarted, every cache
purged and warmed, then each page measured for BENCH_SECONDS.

Configurations: `reference` is the node configuration of aws-samples/aws-refarch-moodle, written from its
own files (bench/refarch/); `shipped` is the node files of src/moodle_cfn/bootstrap, as the node setup
installs them; each `shipped - X` is shipped with one kept setting X reverted (X's own effect), each
`shipped + X` shipped with a candidate X added (CHANGES); with BENCH_COMPARE_REF=<git ref>,
`shipped@<ref>` is that commit's node files. The figure is each geometric mean over the reference's, in
the same run: absolute numbers depend on the machine.

Environment: BENCH_USERS (16), BENCH_SECONDS per page (15), BENCH_WARMUP per page (10), BENCH_ROUNDS (1;
each round measures every configuration again, in the opposite order),
BENCH_VARIANTS (all, or a comma-separated list of names), BENCH_COMPARE_REF. Writes .rig/bench.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.node_rig import services
from tests.node_rig.aws import running_aws
from tests.node_rig.node import PLATFORM_FILE, Browser, Node
from tests.node_rig.rehearse_node import CACHE, ROOT, SITE_HOST, Site, machine_php, php_refuses, running_site

HERE = Path(__file__).resolve().parent / "bench"
FUSE_PYTHON = CACHE / "fuse" / "bin" / "python"
RESULTS = CACHE / "bench.json"
# Moodle 4.5 as in the published table; on a machine whose PHP 4.5 does not run on (Debian 13's 8.4), 5.1.
LEG = os.environ.get("BENCH_LEG") or ("memcached-17" if php_refuses("4.5.0") is None else "memcached-17-5.1")
USERS = int(os.environ.get("BENCH_USERS", "16"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
PASSWORD = "Bench-User-Pass-1!"
BOOTSTRAP = "src/moodle_cfn/bootstrap"
# Where the node setup installs each file on the rig's platform (tests/node_rig/platform-debian.sh).
# Debian's one PHP (8.2 on Debian 12, 8.4 on Debian 13), as the platform file finds it.
PHP_VERSION = machine_php()
INI = f"/etc/php/{PHP_VERSION}/fpm/conf.d/90-moodle.ini"
POOL = f"/etc/php/{PHP_VERSION}/fpm/pool.d/www.conf"


def pool_size() -> dict[str, str]:
    """The PHP-FPM pool a node on this machine sizes for itself (php-fpm-size.sh, from its memory and CPUs)."""
    memory_mib = (
        int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1)) // 1024
    )
    sizes = subprocess.run(["bash", str(ROOT / BOOTSTRAP / "php-fpm-size.sh"), str(memory_mib), str(os.cpu_count())],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return dict(
        zip(("MAX_CHILDREN", "START_SERVERS", "MIN_SPARE_SERVERS", "MAX_SPARE_SERVERS"), sizes, strict=True)
    )


OPCACHE_BLACKLIST = "/etc/moodle-cfn/opcache-moodledata.blacklist"
MARKERS = {"WEB_USER": "www-data", "FPM_SOCKET": "/run/php-fpm/www.sock",
           "PHP_ERROR_LOG": "/var/log/php-fpm/www-error.log", "OPCACHE_BLACKLIST": OPCACHE_BLACKLIST,
           **pool_size()}  # fmt: skip
WEB_RUN = ["runuser", "-u", "www-data", "--", "env", "MOODLE_DIR=/var/www/moodle",
           "MOODLE_CFN_SETTINGS=/etc/moodle-cfn/moodle.json", "php"]  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """A node configuration: the PHP settings, the PHP-FPM pool, config.php, and the PHP scripts (with
    arguments) that set the shared MUC configuration."""

    name: str
    ini: str
    pool: str
    config: str
    muc: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Change:
    """The shipped configuration with one setting changed: (file, shipped text, new text) replacements (an
    empty shipped text appends), and MUC script calls added after the shipped ones. `name` is
    "shipped - X" for a kept setting X reverted (X's own effect), "shipped + X" for a candidate X."""

    name: str
    edits: tuple[tuple[str, str, str], ...] = ()
    muc: tuple[tuple[str, ...], ...] = ()


TWEAK = str(HERE / "muc-tweak.php")
# Each kept setting of the shipped configuration reverted (its comment in the shipped file gives the
# measured effect), then the candidates measured and not kept (README, "Node performance and sizing", says why).
CHANGES = (
    Change("shipped - dbpersist", (("config", "'dbpersist' => true", "'dbpersist' => false"),)),
    Change("shipped - opcache blacklist",
           (("ini", f"opcache.blacklist_filename = {OPCACHE_BLACKLIST}", "opcache.blacklist_filename ="),)),
    Change("shipped + local-safe caches in APCu", muc=(("-d", "apc.enable_cli=1", TWEAK, "map-local"),)),
    Change("shipped + opcache.validate_timestamps=0",
           (("ini", "opcache.validate_timestamps = 1", "opcache.validate_timestamps = 0"),)),
    Change("shipped + opcache.jit=tracing", (("ini", "", "opcache.jit = tracing\nopcache.jit_buffer_size = 64M\n"),)),
    Change("shipped + memcached without compression", muc=((TWEAK, "compression=0"),)),
    Change("shipped + pm.max_children=12",
           (("pool", f"pm.max_children = {MARKERS['MAX_CHILDREN']}", "pm.max_children = 12"),)),
)  # fmt: skip


def render(text: str) -> str:
    """A shipped file with the node setup's @NAME@ markers replaced as on the rig."""
    for name, value in MARKERS.items():
        text = text.replace(f"@{name}@", value)
    return text


def shipped_variant(name: str, read: Callable[[str], str], muc_script: Path) -> Variant:
    return Variant(name, render(read("php-moodle.ini")), render(read("php-fpm-moodle.conf")),
                   read("config.php"), ((str(muc_script),),))  # fmt: skip


def variants(ref: str | None) -> list[Variant]:
    """reference, shipped, shipped@ref, then each of CHANGES; BENCH_VARIANTS picks some."""
    own = ROOT / BOOTSTRAP
    shipped = shipped_variant("shipped", lambda f: (own / f).read_text(), own / "muc-configure.php")
    reference = Variant("reference", (HERE / "refarch/php.ini").read_text(),
                        (HERE / "refarch/php-fpm.conf").read_text(), (HERE / "refarch/config.php").read_text(),
                        ())  # fmt: skip
    found = [reference, shipped]
    if ref:
        show = lambda f: subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{BOOTSTRAP}/{f}"],  # noqa: E731
                                        capture_output=True, text=True, check=True).stdout  # fmt: skip
        script = CACHE / f"muc-configure-{re.sub(r'[^A-Za-z0-9]', '_', ref)}.php"
        script.write_text(show("muc-configure.php"))
        found.append(shipped_variant(f"shipped@{ref}", show, script))
    wanted = os.environ.get("BENCH_VARIANTS", "all")
    for change in CHANGES:
        if wanted != "all" and change.name not in wanted.split(","):
            continue
        files = {"ini": shipped.ini, "pool": shipped.pool, "config": shipped.config}
        for key, old, new in change.edits:
            assert old in files[key], f"the shipped {key} no longer has {old!r}: update CHANGES"
            files[key] = files[key].replace(old, new) if old else files[key] + new
        found.append(
            Variant(change.name, files["ini"], files["pool"], files["config"], shipped.muc + change.muc)
        )
    if wanted == "all":
        return found
    names = wanted.split(",")
    return [v for v in found if v.name in names]


@dataclass
class EfsModel:
    """The latency layer's process and where it reports its counts."""

    stats: Path
    process: subprocess.Popen | None = None

    def counts(self) -> dict[str, int]:
        time.sleep(0.25)  # the layer writes its counts every 0.1 s
        return json.loads(self.stats.read_text()) if self.stats.exists() else {}


def efs_model(model: EfsModel) -> Callable[[Path, Path], object]:
    @contextmanager
    def layer(workdir: Path, shared: Path) -> Iterator[EfsModel]:
        backing = workdir / "efs-backing"
        backing.mkdir()
        model.stats = workdir / "efs-stats.json"
        log = (workdir / "efs-latency.log").open("w")
        model.process = subprocess.Popen([str(FUSE_PYTHON), str(HERE / "efs_latency.py"), str(backing), str(shared),
                                          "--stats", str(model.stats)], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 15
        while subprocess.run(["mountpoint", "-q", str(shared)]).returncode != 0:
            if time.monotonic() > deadline or model.process.poll() is not None:
                raise RuntimeError(f"the EFS latency layer did not mount; see {workdir / 'efs-latency.log'}")
            time.sleep(0.1)
        try:
            yield model
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(shared)], check=False)
            model.process.terminate()
            model.process.wait(10)

    return layer


def as_web_user(node: Node, *argv: str) -> str:
    result = node.run([*WEB_RUN, *argv], check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} on {node.name} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")  # fmt: skip
    return result.stdout


def install(site: Site, variant: Variant) -> None:
    """The variant on both nodes, PHP-FPM and Apache restarted, the shared MUC set, every cache purged."""
    for node in site.nodes:
        release = node.run(["readlink", "-f", "/var/www/moodle"]).stdout.strip()
        for path, text in (
            (INI, variant.ini),
            (POOL, variant.pool),
            (f"{release}/config.php", variant.config),
        ):
            (node.root / path.lstrip("/")).write_text(text)
        node.run(["install", "-d", "-o", "www-data", "-g", "www-data", "/var/www/.opcache"])
        node.run(["bash", "-c", f"source {PLATFORM_FILE} && platform_start_web"])
    # Each variant's MUC choices from Moodle's defaults, not from the previous variant's.
    for script in ((str(HERE / "muc-files.php"),), *variant.muc):
        as_web_user(site.nodes[0], *script)
    as_web_user(site.nodes[0], "/var/www/moodle/admin/cli/purge_caches.php")


@dataclass
class PageResult:
    requests: int = 0
    seconds: float = 0.0
    non_200: int = 0
    efs: dict[str, int] = field(default_factory=dict)
    places: dict[str, int] = field(default_factory=dict)

    def add(self, other: PageResult) -> None:
        """Another measurement of the same page, summed into this one."""
        self.requests += other.requests
        self.seconds += other.seconds
        self.non_200 += other.non_200
        for mine, theirs in ((self.efs, other.efs), (self.places, other.places)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        self.places = dict(sorted(self.places.items(), key=lambda item: -item[1]))

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def load(site: Site, path: str, cookie_files: list[Path | None], seconds: int) -> PageResult:
    """wrk on both nodes at once for `seconds`, half of the users each."""
    per_node = max(1, USERS // len(site.nodes))
    processes = []
    for node, cookies in zip(site.nodes, cookie_files, strict=True):
        env = {**os.environ, "BENCH_HOST": SITE_HOST, "BENCH_COOKIES": str(cookies or "")}
        argv = ["wrk", "-t", str(per_node), "-c", str(per_node), "-d", f"{seconds}s", "--timeout", "30s",
                "-s", str(HERE / "load.lua"), f"http://{node.address}{path}"]  # fmt: skip
        processes.append(
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    result = PageResult()
    for process in processes:
        output, _ = process.communicate(timeout=seconds + 120)
        done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
        if process.returncode != 0 or not done:
            raise RuntimeError(f"wrk failed on {path}:\n{output}")
        result.requests += int(done.group(1))
        elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
        result.seconds = max(result.seconds, elapsed)
        result.non_200 += int(re.search(r"BENCH_NON_200 (\d+)", output).group(1))
    return result


def delta(before: dict, after: dict) -> dict[str, int]:
    """The counts that grew between two snapshots of the EFS layer's counters, largest first."""
    grown = {
        k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int) and v != before.get(k, 0)
    }
    return dict(sorted(grown.items(), key=lambda item: -item[1]))


def log_in_users(site: Site, course: int) -> list[Path]:
    """Each student logged in through one node (alternating); a Cookie header file per node."""
    lines: list[list[str]] = [[] for _ in site.nodes]
    for i in range(1, USERS + 1):
        node_index = i % len(site.nodes)
        browser = Browser(SITE_HOST)
        browser.log_in(site.nodes[node_index], f"bench{i}", PASSWORD)
        status, final, _ = browser.request(site.nodes[node_index], "GET", f"/course/view.php?id={course}")
        if status != 200 or not final.startswith("/course/view.php"):
            raise RuntimeError(f"bench{i} cannot open the course (status {status}, ended at {final})")
        lines[node_index].append("; ".join(f"{k}={v}" for k, v in browser.cookies.items()))
    files = []
    for n, node_lines in enumerate(lines):
        path = CACHE / f"bench-cookies-{n}.txt"
        path.write_text("\n".join(node_lines) + "\n")
        files.append(path)
    return files


def measure(site: Site, model: EfsModel, variant: Variant, pages: dict[str, str],
            cookies: list[Path]) -> dict[str, PageResult]:  # fmt: skip
    install(site, variant)
    results = {}
    for page, path in pages.items():
        files: list[Path | None] = [None, None] if page == "login" else list(cookies)
        load(site, path, files, WARMUP)
        before = model.counts()
        result = load(site, path, files, SECONDS)
        after = model.counts()
        result.efs = delta(before, after)
        result.places = delta(before.get("places", {}), after.get("places", {}))
        results[page] = result
        print(
            f"  {variant.name:<45} {page:<10} {result.rate:7.1f} req/s  non-200 {result.non_200}", flush=True
        )
    rss = [int(kib) for kib in subprocess.run(["ps", "-o", "rss=", "-C", f"php-fpm{PHP_VERSION}"], capture_output=True,
                                                text=True).stdout.split()]  # fmt: skip
    if rss:
        print(f"  {variant.name:<45} PHP-FPM processes {len(rss)}, resident {sum(rss) / len(rss) / 1024:.0f} MiB "
              f"on average (shared OPcache/APCu pages counted in each)")  # fmt: skip
    return results


READ_OPS = ("getattr", "access", "open", "opendir", "read", "readdir", "readlink", "statfs")


def efs_per_request(result: PageResult) -> str:
    """Shared-disk reads + writes per request; n/a when no request completed."""
    if not result.requests:
        return "n/a"
    reads = sum(n for op, n in result.efs.items() if op in READ_OPS)
    writes = sum(n for op, n in result.efs.items() if op not in READ_OPS)
    return f"{reads / result.requests:.1f}+{writes / result.requests:.1f}"


def geometric_mean(rates: list[float]) -> float | None:
    """The geometric mean of the pages' rates; None when a page completed no request in its window (the
    window was too short to measure that page: give it more BENCH_SECONDS or BENCH_WARMUP)."""
    if not rates or min(rates) <= 0:
        return None
    return math.exp(sum(math.log(rate) for rate in rates) / len(rates))


def report(all_results: dict[str, dict[str, PageResult]], pages: list[str]) -> str:
    geomean = {name: geometric_mean([r.rate for r in res.values()]) for name, res in all_results.items()}
    base = geomean.get("reference")
    head = f"{'configuration':<45}" + "".join(f"{p + ' req/s':>16}" for p in pages)
    head += f"{'geomean':>10}{'x ref':>8}" + "".join(f"{p + ' EFS r+w/req':>22}" for p in pages)
    lines = [head, "-" * len(head)]
    for name, res in all_results.items():
        mean = geomean[name]
        row = f"{name:<45}" + "".join(f"{res[p].rate:>16.1f}" for p in pages)
        row += f"{mean:>10.1f}" if mean is not None else f"{'n/a':>10}"
        row += f"{mean / base:>8.2f}" if mean is not None and base else f"{'n/a':>8}"
        row += "".join(f"{efs_per_request(res[p]):>22}" for p in pages)
        errors = sum(r.non_200 for r in res.values())
        lines.append(row + (f"   ({errors} non-200 answers)" if errors else ""))
    if None in geomean.values():
        lines.append(
            "n/a: a page completed no request in its window; measure longer (BENCH_SECONDS, BENCH_WARMUP)"
        )
    return "\n".join(lines)


def main() -> int:
    if os.geteuid() != 0:
        print("make bench-node needs root (mounts, namespaces, services)", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request log
    chosen = variants(os.environ.get("BENCH_COMPARE_REF"))
    model = EfsModel(CACHE / "efs-stats.json")
    started = time.monotonic()
    tls = services.make_ca(Path("/tmp/moodle-cfn-rig/tls"), ["localhost"])
    services.trust_ca(tls)
    try:
        with (
            running_aws() as aws,
            running_site(LEG, 0, tls, aws, efs_model(model), record_timings=False) as site,
        ):
            for node, (status, output) in zip(site.nodes, site.boot, strict=True):
                if status != 0:
                    raise RuntimeError(f"{node.name} setup failed:\n{output[-3000:]}")
            if site.cron is not None:  # measured pages only: cron would take CPU at random moments
                site.cron.terminate()
                site.cron.wait()
            booted = time.monotonic() - started
            course = json.loads(as_web_user(site.nodes[0], str(HERE / "site.php"), str(USERS), PASSWORD))[
                "course"
            ]
            cookies = log_in_users(site, course)
            pages = {
                "dashboard": "/my/",
                "course": f"/course/view.php?id={course}",
                "login": "/login/index.php",
            }
            # Rounds in alternating order, summed: a drift of the machine's speed during the run (other work
            # on it, the database warming) weighs on every configuration alike.
            results: dict[str, dict[str, PageResult]] = {}
            for round_number in range(ROUNDS):
                for variant in chosen if round_number % 2 == 0 else reversed(chosen):
                    for page, result in measure(site, model, variant, pages, cookies).items():
                        results.setdefault(variant.name, {}).setdefault(page, PageResult()).add(result)
            results = {v.name: results[v.name] for v in chosen}
            # Leave the shipped configuration in place, as the node setup made it.
    finally:
        services.untrust_ca()
    table = report(results, list(pages))
    print(f"\n{USERS} users, {ROUNDS} x {SECONDS} s per page after {WARMUP} s of warm-up; EFS model 0.5 ms/read-type op, "
          f"2 ms/write-type op; site boot {booted:.0f} s, whole run {time.monotonic() - started:.0f} s\n")  # fmt: skip
    print(table)
    for name in ("reference", "shipped"):
        for page, result in results.get(name, {}).items():
            top = ", ".join(
                f"{place} {n / max(result.requests, 1):.1f}" for place, n in list(result.places.items())[:4]
            )
            print(f"  {name} {page}: EFS ops per request by place: {top or 'none'}")
    RESULTS.write_text(json.dumps({
        "users": USERS, "seconds": SECONDS, "warmup": WARMUP, "rounds": ROUNDS, "leg": LEG,
        "results": {name: {page: {"requests": r.requests, "seconds": r.seconds, "rate": r.rate,
                                  "non_200": r.non_200, "efs_ops": r.efs,
                                  "efs_ops_by_place": dict(list(r.places.items())[:12])} for page, r in res.items()}
                    for name, res in results.items()},
    }, indent=2) + "\n")  # fmt: skip
    print(f"\n(written to {RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
