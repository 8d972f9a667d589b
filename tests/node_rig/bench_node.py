"""make bench-node: what the rig's two web nodes serve, and what it costs them, under each node configuration.

The rig's two-node site (tests/node_rig/rehearse_node.py, memcached leg on PostgreSQL 17: the memcached
leg is the one whose application cache leaves the most on the shared disk) boots from the templates' node
files with its shared "EFS" directory behind a latency model of EFS (bench/efs_latency.py: 0.5 ms per
read-type, 2 ms per write-type operation, counted by type). Each node configuration in turn is installed on
both nodes, PHP-FPM restarted, every cache purged, then the workload is run and measured:
- `plan` (the default; bench_plan.py): Moodle's own load-test plan (admin/tool/generator, size
  BENCH_PLAN_SIZE, S by default: 30 users x 5 loops of 14 steps on a generated course), replayed step for
  step; per step p50/p95 and errors, throughput, CPU per sample by process, shared-disk operations by path;
- `pages` (bench_pages.py): three pages (dashboard, a course page, the login page) loaded with wrk.

Configurations: `reference` is the node configuration of aws-samples/aws-refarch-moodle, written from its
own files (bench/refarch/); `shipped` is the node files of src/moodle_cfn/bootstrap, as the node setup
installs them; each `shipped - X` is shipped with one kept setting X reverted (X's own effect), each
`shipped + X` shipped with a candidate X added (CHANGES); with BENCH_COMPARE_REF=<git ref>,
`shipped@<ref>` is that commit's node files. Figures are compared with the reference's in the same run:
absolute numbers depend on the machine.

Environment: BENCH_WORKLOAD (plan or pages), BENCH_PLAN_SIZE (S), BENCH_ROUNDS (1; each round measures
every configuration again, in the opposite order), BENCH_VARIANTS (all, or a comma-separated list of
names), BENCH_COMPARE_REF; for `pages`, BENCH_USERS (16), BENCH_SECONDS (15) and BENCH_WARMUP (10) per
page. Writes .rig/bench.json (not the rehearsal's timings file).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.node_rig import bench_pages, bench_plan, bench_storm, flamegraph, services
from tests.node_rig.aws import running_aws
from tests.node_rig.efs_standin import EfsModel, efs_layer
from tests.node_rig.node import PLATFORM_FILE, Node
from tests.node_rig.rehearse_node import CACHE, ROOT, SITE_HOST, Site, machine_php, php_refuses, running_site

HERE = Path(__file__).resolve().parent / "bench"
RESULTS = CACHE / "bench.json"
# Moodle 4.5 as in the published table; on a machine whose PHP 4.5 does not run on (Debian 13's 8.4), 5.1.
LEG = os.environ.get("BENCH_LEG") or ("memcached-17" if php_refuses("4.5.0") is None else "memcached-17-5.1")
WORKLOAD = os.environ.get("BENCH_WORKLOAD", "plan")
PLAN_SIZE = os.environ.get("BENCH_PLAN_SIZE", "S")
PROFILE = os.environ.get("BENCH_PROFILE", "1") == "1"
# BENCH_STRICT=1 (CI): an error anywhere (a failed plan step, a storm student who could not submit, a
# non-200 page) fails the run; otherwise the figures are printed and the run succeeds.
STRICT = os.environ.get("BENCH_STRICT") == "1"
PROBLEMS: list[str] = []
# Seconds the EFS model's client keeps lookups, attributes and "no such file" answers: 1 (a kind model of an
# NFS client, which keeps them 3-60 s) or 0 (none: every path resolution reaches "EFS").
EFS_LOOKUP_CACHE = float(os.environ.get("BENCH_EFS_LOOKUP_CACHE", "1"))
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
    names = ("MAX_CHILDREN", "START_SERVERS", "MIN_SPARE_SERVERS", "MAX_SPARE_SERVERS", "LISTEN_BACKLOG",
             "PAGE_CONNECTIONS", "APACHE_THREADS")  # fmt: skip
    sizing = json.loads((ROOT / BOOTSTRAP / "php-fpm-sizing.json").read_text())
    return {**dict(zip(names, sizes, strict=True)), "QUEUE_SECONDS": str(sizing["queue_seconds"])}


OPCACHE_BLACKLIST = "/etc/moodle-cfn/opcache-moodledata.blacklist"
PROFILE_INI = f"/etc/php/{PHP_VERSION}/fpm/conf.d/95-bench-profile.ini"
PROFILE_DIR = "/var/log/moodle-cfn-excimer"
MARKERS = {"WEB_USER": "www-data", "FPM_SOCKET": "/run/php-fpm/www.sock", "FPM_HEALTH_SOCKET": "/run/php-fpm/health.sock",
           "PHP_ERROR_LOG": "/var/log/php-fpm/www-error.log", "PHP_SLOW_LOG": "/var/log/php-fpm/www-slow.log",
           "OPCACHE_BLACKLIST": OPCACHE_BLACKLIST,
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
    Change("shipped - strings in APCu", muc=((TWEAK, "unmap-strings"),)),
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
                   read("config.php"), (("-d", "apc.enable_cli=1", str(muc_script)),))  # fmt: skip


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


def as_web_user(node: Node, *argv: str) -> str:
    result = node.run([*WEB_RUN, *argv], check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} on {node.name} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")  # fmt: skip
    return result.stdout


def restart_web(node: Node) -> None:
    """PHP-FPM and Apache (re)started on `node` as the platform starts them, reading their settings anew."""
    node.run(["bash", "-c", f"source {PLATFORM_FILE} && platform_start_web"])


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
        restart_web(node)
    # Each variant's MUC choices from Moodle's defaults, not from the previous variant's.
    for script in ((str(HERE / "muc-files.php"),), *variant.muc):
        as_web_user(site.nodes[0], *script)
    as_web_user(site.nodes[0], "/var/www/moodle/admin/cli/purge_caches.php")


def plan_workload(site: Site, model: EfsModel, chosen: list[Variant]) -> tuple[str, dict]:
    """Moodle's own plan (bench_plan.py) under each configuration, ROUNDS times in alternating order."""
    made = json.loads(as_web_user(site.nodes[0], str(HERE / "plan.php"), PLAN_SIZE, PASSWORD))
    (CACHE / "bench-plan.jmx").write_text(made["plan"])
    plan = bench_plan.parse_plan(made["plan"], made["users"])
    print(f"Moodle's plan, size {PLAN_SIZE}: {plan.threads} users x {plan.loops} loops of {len(plan.steps)} steps, "
          f"ramp-up {plan.rampup_seconds:.0f} s (course id {made['course']}; plan in {CACHE / 'bench-plan.jmx'})",
          flush=True)  # fmt: skip

    def forum_posts_reset() -> Callable[[], None]:
        last = int(site.db("SELECT COALESCE(MAX(id), 0) FROM mdl_forum_posts") or 0)
        return lambda: site.db(f"DELETE FROM mdl_forum_posts WHERE id > {last}")

    measured: dict[str, list[bench_plan.Measured]] = {}
    storms: list[str] = []
    for round_number in range(ROUNDS):
        for variant in chosen if round_number % 2 == 0 else reversed(chosen):
            install(site, variant)
            result = bench_plan.measure_plan(
                plan, [(n.address, 80) for n in site.nodes], SITE_HOST, model.counts, forum_posts_reset
            )
            print("\n".join(bench_plan.report_lines(variant.name, result)), flush=True)
            measured.setdefault(variant.name, []).append(result)
            if result.run.errors:
                PROBLEMS.append(f"{variant.name}: {result.run.errors} errors in Moodle's plan")
            if bench_storm.STUDENTS:
                storms.append(exam_start_storm(site, f"{variant.name} round {round_number + 1}"))
                print(storms[-1], flush=True)
    ordered = {v.name: measured[v.name] for v in chosen}
    profile = profile_shipped(site, plan, forum_posts_reset) if PROFILE else ""
    heading = (f"Moodle's plan (size {PLAN_SIZE}: {plan.threads} users, {plan.loops} loops, {ROUNDS} round(s)); "
               f"EFS model 0.5 ms/read-type op, 2 ms/write-type op, lookups cached {EFS_LOOKUP_CACHE:g} s")  # fmt: skip
    text = heading + "\n\n" + bench_plan.summary(ordered) + profile
    if storms:
        text += "\n\nExam-start storm (after each configuration's plan run):\n" + "\n".join(storms)
    return text, bench_plan.results_json(ordered)


def exam_start_storm(site: Site, name: str) -> str:
    """A new quiz (bench/storm.php), then the storm on it; its table, with the finished attempts counted."""
    made = as_web_user(site.nodes[0], str(HERE / "storm.php"), str(bench_storm.STUDENTS), PASSWORD,
                       str(bench_storm.QUESTIONS), name)  # fmt: skip
    cmid = json.loads(made)["cmid"]
    result = bench_storm.storm([(n.address, 80) for n in site.nodes], SITE_HOST, cmid, PASSWORD)
    finished = int(site.db("SELECT COUNT(*) FROM mdl_quiz_attempts a JOIN mdl_course_modules cm ON cm.instance = "
                           f"a.quiz JOIN mdl_modules m ON m.id = cm.module AND m.name = 'quiz' WHERE cm.id = {cmid} "
                           "AND a.state = 'finished'"))  # fmt: skip
    errors = sum(r.errors for r in result.steps.values())
    if errors or finished != bench_storm.STUDENTS:
        PROBLEMS.append(
            f"{name}: {errors} errors in the storm, {finished} of {bench_storm.STUDENTS} attempts finished"
        )
    return "\n".join(bench_storm.report(name, result, finished, bench_storm.STUDENTS))


def profile_shipped(
    site: Site, plan: bench_plan.Plan, forum_posts_reset: Callable[[], Callable[[], None]]
) -> str:
    """The plan once more under the shipped configuration with Excimer sampling each request's CPU every
    millisecond (bench/excimer-prepend.php); the stacks summed into .rig/bench-profile.collapsed and
    drawn in .rig/bench-flamegraph.svg. Returns the profile's top frames."""
    shipped = next(v for v in variants(None) if v.name == "shipped")
    install(site, shipped)
    extra = f"extension=excimer.so\nauto_prepend_file={HERE / 'excimer-prepend.php'}\n"
    for node in site.nodes:
        (node.root / PROFILE_INI.lstrip("/")).write_text(extra)
        node.run(["install", "-d", "-o", "www-data", "-g", "www-data", PROFILE_DIR])
        node.run(["find", PROFILE_DIR, "-name", "*.collapsed", "-delete"])
        restart_web(node)
    try:
        profiled = bench_plan.measure_plan(plan, [(n.address, 80) for n in site.nodes], SITE_HOST, dict,
                                           forum_posts_reset)  # fmt: skip
    finally:
        for node in site.nodes:
            (node.root / PROFILE_INI.lstrip("/")).unlink()
            restart_web(node)
    if profiled.run.errors:
        PROBLEMS.append(f"profile: {profiled.run.errors} errors in Moodle's plan")
    lines = [line for node in site.nodes
             for found in sorted((node.root / PROFILE_DIR.lstrip("/")).glob("*.collapsed"))
             for line in found.read_text().splitlines()]  # fmt: skip
    stacks = flamegraph.parse(lines)
    (CACHE / "bench-profile.collapsed").write_text("".join(f"{k} {v}\n" for k, v in sorted(stacks.items())))
    total = sum(stacks.values())
    title = (f"PHP-FPM CPU, Moodle's plan (size {PLAN_SIZE}), shipped configuration: {total} samples of 1 ms "
             f"over {profiled.run.samples} plan samples")  # fmt: skip
    (CACHE / "bench-flamegraph.svg").write_text(flamegraph.svg(stacks, title))
    text = [f"\nProfile ({title}; {profiled.run.errors} errors):",
            f"  CPU ms per plan sample while profiled: {total / max(profiled.run.samples, 1):.1f}",
            "  by script: " + ", ".join(f"{name} {100 * n / max(total, 1):.1f}%" for name, n in
                                        flamegraph.first_frames(stacks).most_common(8)),
            "  top self time: " + ", ".join(f"{name} {100 * n / max(total, 1):.1f}%" for name, n in
                                            flamegraph.self_time(stacks).most_common(15)),
            "  top inclusive time: " + ", ".join(f"{name} {100 * n / max(total, 1):.1f}%" for name, n in
                                                 flamegraph.inclusive_time(stacks, skip_first=True).most_common(25)),
            f"  (stacks in {CACHE / 'bench-profile.collapsed'}, flame graph in {CACHE / 'bench-flamegraph.svg'})"]  # fmt: skip
    return "\n".join(text)


def pages_workload(site: Site, model: EfsModel, chosen: list[Variant]) -> tuple[str, dict]:
    """The three pages (bench_pages.py) under each configuration, ROUNDS times in alternating order."""
    pages, cookies = bench_pages.prepare(site, as_web_user)
    # Rounds in alternating order, summed: a drift of the machine's speed during the run (other work on it,
    # the database warming) weighs on every configuration alike.
    results: dict[str, dict[str, bench_pages.PageResult]] = {}
    for round_number in range(ROUNDS):
        for variant in chosen if round_number % 2 == 0 else reversed(chosen):
            install(site, variant)
            for page, result in bench_pages.measure(site, model.counts, variant.name, pages, cookies).items():
                results.setdefault(variant.name, {}).setdefault(page, bench_pages.PageResult()).add(result)
    results = {v.name: results[v.name] for v in chosen}
    PROBLEMS.extend(f"{name}: {sum(r.non_200 for r in res.values())} non-200 answers" for name, res in results.items()
                    if any(r.non_200 for r in res.values()))  # fmt: skip
    text = (f"{bench_pages.USERS} users, {ROUNDS} x {bench_pages.SECONDS} s per page after {bench_pages.WARMUP} s "
            "of warm-up; EFS model 0.5 ms/read-type op, 2 ms/write-type op\n\n" + bench_pages.report(results, list(pages)))  # fmt: skip
    for name in ("reference", "shipped"):
        for page, result in results.get(name, {}).items():
            top = ", ".join(
                f"{place} {n / max(result.requests, 1):.1f}" for place, n in list(result.places.items())[:4]
            )
            text += f"\n  {name} {page}: EFS ops per request by place: {top or 'none'}"
    return text, bench_pages.results_json(results)


def main() -> int:
    if os.geteuid() != 0:
        print("make bench-node needs root (mounts, namespaces, services)", file=sys.stderr)
        return 2
    if WORKLOAD not in WORKLOADS:
        print(f"BENCH_WORKLOAD: {WORKLOAD!r} is not one of {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request log
    chosen = variants(os.environ.get("BENCH_COMPARE_REF"))
    model = EfsModel(CACHE / "efs-stats.json", lookup_cache_seconds=EFS_LOOKUP_CACHE)
    started = time.monotonic()
    tls = services.make_ca(Path("/tmp/moodle-cfn-rig/tls"), ["localhost"])
    services.trust_ca(tls)
    try:
        with (
            running_aws() as aws,
            running_site(LEG, 0, tls, aws, efs_layer(model), record_timings=False) as site,
        ):
            for node, (status, output) in zip(site.nodes, site.boot, strict=True):
                if status != 0:
                    raise RuntimeError(f"{node.name} setup failed:\n{output[-3000:]}")
            if site.cron is not None:  # measured requests only: cron would take CPU at random moments
                site.cron.terminate()
                site.cron.wait()
            booted = time.monotonic() - started
            text, results = WORKLOADS[WORKLOAD](site, model, chosen)
            # Leave the shipped configuration in place, as the node setup made it.
    finally:
        services.untrust_ca()
    print(f"\n{text}\n\nsite boot {booted:.0f} s, whole run {time.monotonic() - started:.0f} s")
    RESULTS.write_text(json.dumps({"workload": WORKLOAD, "rounds": ROUNDS, "leg": LEG,
                                   "efs_lookup_cache_seconds": EFS_LOOKUP_CACHE, "results": results},
                                  indent=2) + "\n")  # fmt: skip
    print(f"(written to {RESULTS})")
    if PROBLEMS:
        print("\nProblems:\n" + "\n".join(f"  {problem}" for problem in PROBLEMS), file=sys.stderr)
        return 1 if STRICT else 0
    return 0


WORKLOADS = {"plan": plan_workload, "pages": pages_workload}

if __name__ == "__main__":
    sys.exit(main())
