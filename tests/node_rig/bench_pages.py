"""make bench-node's second workload (BENCH_WORKLOAD=pages): three pages loaded with wrk.

N students (BENCH_USERS), each logged in beforehand with their own Moodle session, load three pages with wrk
(bench/load.lua: one connection per user, half of the users on each node): the dashboard (/my/), a course
page with a dozen activities and the login page (anonymous), each for BENCH_WARMUP then BENCH_SECONDS.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.node_rig.node import Browser
from tests.node_rig.rehearse_node import CACHE, SITE_HOST, Site, machine_php

HERE = Path(__file__).resolve().parent / "bench"
USERS = int(os.environ.get("BENCH_USERS", "16"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))
PASSWORD = "Bench-User-Pass-1!"
PAGES = {"dashboard": "/my/", "course": "/course/view.php?id={course}", "login": "/login/index.php"}


def prepare(site: Site, as_web_user: Callable[..., str]) -> tuple[dict[str, str], list[Path]]:
    """The course and its students (bench/site.php), each student logged in: the pages and cookie files."""
    course = json.loads(as_web_user(site.nodes[0], str(HERE / "site.php"), str(USERS), PASSWORD))["course"]
    cookies = log_in_users(site, course)
    return {name: path.format(course=course) for name, path in PAGES.items()}, cookies


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


def measure(site: Site, efs_counts: Callable[[], dict], name: str, pages: dict[str, str],
            cookies: list[Path]) -> dict[str, PageResult]:  # fmt: skip
    """Each page loaded for WARMUP seconds, then measured for SECONDS, under the installed configuration."""
    results = {}
    for page, path in pages.items():
        files: list[Path | None] = [None, None] if page == "login" else list(cookies)
        load(site, path, files, WARMUP)
        before = efs_counts()
        result = load(site, path, files, SECONDS)
        after = efs_counts()
        result.efs = delta(before, after)
        result.places = delta(before.get("places", {}), after.get("places", {}))
        results[page] = result
        print(f"  {name:<45} {page:<10} {result.rate:7.1f} req/s  non-200 {result.non_200}", flush=True)
    rss = [int(kib) for kib in subprocess.run(["ps", "-o", "rss=", "-C", f"php-fpm{machine_php()}"], capture_output=True,
                                                text=True).stdout.split()]  # fmt: skip
    if rss:
        print(f"  {name:<45} PHP-FPM processes {len(rss)}, resident {sum(rss) / len(rss) / 1024:.0f} MiB "
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


def results_json(results: dict[str, dict[str, PageResult]]) -> dict:
    return {name: {page: {"requests": r.requests, "seconds": r.seconds, "rate": r.rate,
                          "non_200": r.non_200, "efs_ops": r.efs,
                          "efs_ops_by_place": dict(list(r.places.items())[:12])} for page, r in res.items()}
            for name, res in results.items()}  # fmt: skip
