"""Moodle's own load-test plan, replayed: make bench-node's workload (docs/benchmark.md).

Moodle's generator (admin/tool/generator) makes a course of a given size and a JMeter plan for it. Debian's
JMeter cannot load that plan (XStream refuses its classes), so the plan's "Moodle Test" thread group is read
from the .jmx and replayed here, step for step: the same requests (method, path, arguments, in order), the
same regular-expression extractors feeding later steps (login token, sesskey, form item ids), the same
response assertions, the same users (the plan's users file), threads, loops and ramp-up, and cookies
cleared at each loop as its cookie manager does. No think time, as the plan has none. Each request goes
to the next node in turn, as the load balancer (no stickiness) sends it; one keep-alive connection per
user and node, as JMeter keeps one.

While the plan runs, the CPU time of every process on the machine is read from /proc and summed by
program (PHP-FPM, PostgreSQL, Apache, the cache servers, the EFS model): CPU per plan request by process.
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import re
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from tests.node_rig.bench_pages import READ_OPS, delta

THREAD_GROUP = "Moodle Test"
# A web node: (address, port).
Address = tuple[str, int]
VARIABLE = re.compile(r"\$\{([A-Za-z_][\w]*)\}")
# ${__property(users,users,30)}: the plan's own value is the default of a JMeter property.
PROPERTY_DEFAULT = re.compile(r"\$\{__property\([^,]*,[^,]*,([^)]*)\)\}")


@dataclass(frozen=True)
class Extractor:
    """A RegexExtractor: the first match's group 1 into `variable`, else `default`."""

    variable: str
    pattern: re.Pattern[str]
    default: str


@dataclass(frozen=True)
class Step:
    """One HTTPSamplerProxy of the plan, with the extractors and assertions that follow it."""

    name: str
    method: str
    path: str
    arguments: tuple[tuple[str, str], ...]
    extractors: tuple[Extractor, ...] = ()
    assertions: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True)
class Plan:
    variables: dict[str, str]
    steps: tuple[Step, ...]
    threads: int
    loops: int
    rampup_seconds: float
    credentials: tuple[tuple[str, str], ...]


def _props(element: ElementTree.Element) -> dict[str, str]:
    """An element's direct stringProp children by name."""
    return {p.get("name", ""): p.text or "" for p in element.findall("stringProp")}


def _children(tree: ElementTree.Element) -> Iterator[tuple[ElementTree.Element, ElementTree.Element | None]]:
    """A JMeter hashTree's (element, its own hashTree) pairs, in order."""
    items = list(tree)
    for index, element in enumerate(items):
        if element.tag == "hashTree":
            continue
        following = (
            items[index + 1] if index + 1 < len(items) and items[index + 1].tag == "hashTree" else None
        )
        yield element, following


def _walk(tree: ElementTree.Element) -> Iterator[tuple[ElementTree.Element, ElementTree.Element | None]]:
    """Every enabled (element, hashTree) pair under `tree`, depth first, in document order."""
    for element, subtree in _children(tree):
        if element.get("enabled") == "false":
            continue
        yield element, subtree
        if subtree is not None:
            yield from _walk(subtree)


def _arguments(sampler: ElementTree.Element) -> tuple[tuple[str, str], ...]:
    found = []
    for argument in sampler.iterfind("elementProp/collectionProp/elementProp"):
        props = _props(argument)
        found.append((props.get("Argument.name", ""), props.get("Argument.value", "")))
    return tuple(found)


def _step(sampler: ElementTree.Element, subtree: ElementTree.Element | None) -> Step:
    props = _props(sampler)
    extractors, assertions = [], []
    for child, _ in _children(subtree) if subtree is not None else ():
        if child.tag == "RegexExtractor" and child.get("enabled") != "false":
            p = _props(child)
            assert p.get("RegexExtractor.template") == "$1$", p
            extractors.append(
                Extractor(
                    p["RegexExtractor.refname"],
                    re.compile(p["RegexExtractor.regex"]),
                    p.get("RegexExtractor.default", ""),
                )
            )
        elif child.tag == "ResponseAssertion" and child.get("enabled") != "false":
            # Test type 2 is "contains": the pattern found anywhere in the response body.
            assert child.findtext("intProp[@name='Assertion.test_type']") == "2"
            assertions += [re.compile(s.text or "") for s in child.iterfind("collectionProp/stringProp")]
    return Step(sampler.get("testname", ""), props.get("HTTPSampler.method", "GET"),
                props.get("HTTPSampler.path", ""), _arguments(sampler), tuple(extractors), tuple(assertions))  # fmt: skip


def parse_plan(jmx: str, users_csv: str) -> Plan:
    """The plan's main thread group and its users, from what Moodle's generator wrote."""
    root = ElementTree.fromstring(jmx)
    top = root.find("hashTree")
    assert top is not None, "not a JMeter plan"
    variables: dict[str, str] = {}
    group: tuple[ElementTree.Element, ElementTree.Element] | None = None
    for element, subtree in _walk(top):
        if element.tag == "TestPlan":
            for argument in element.iterfind("elementProp/collectionProp/elementProp"):
                props = _props(argument)
                variables[props["Argument.name"]] = props.get("Argument.value", "")
        if element.tag == "ThreadGroup" and element.get("testname") == THREAD_GROUP and subtree is not None:
            group = (element, subtree)
    assert group is not None, f"no thread group {THREAD_GROUP!r} in the plan"
    thread_group, tree = group

    def number(text: str) -> str:
        match = PROPERTY_DEFAULT.fullmatch(text.strip())
        return match.group(1) if match else text

    settings = _props(thread_group)
    loops = thread_group.find("elementProp/stringProp[@name='LoopController.loops']")
    steps = tuple(_step(e, s) for e, s in _walk(tree) if e.tag == "HTTPSamplerProxy")
    rows = [row for row in csv.reader(io.StringIO(users_csv)) if row]
    threads = int(number(settings["ThreadGroup.num_threads"]))
    loop_count = int(number(loops.text if loops is not None else "1"))
    if threads < 1 or loop_count < 1 or not rows:
        raise ValueError(
            f"the plan runs {threads} threads x {loop_count} loops with {len(rows)} users: nothing to replay"
        )
    return Plan(variables, steps, threads, loop_count,
                float(number(settings.get("ThreadGroup.ramp_time", "0") or "0")),
                tuple((row[0], row[1]) for row in rows))  # fmt: skip


def substitute(text: str, values: dict[str, str]) -> str:
    """JMeter's ${name} references replaced (an unknown name is left as it is, as JMeter leaves it)."""
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


@dataclass
class StepResult:
    milliseconds: list[float] = field(default_factory=list)
    errors: int = 0
    http_requests: int = 0
    first_error: str = ""

    def failed(self, description: str) -> None:
        """One more error; the first one's description is kept."""
        self.errors += 1
        self.first_error = self.first_error or description

    def add(self, other: StepResult) -> None:
        """Another thread's (or round's) results of the same step, merged into these."""
        self.milliseconds += other.milliseconds
        self.errors += other.errors
        self.http_requests += other.http_requests
        self.first_error = self.first_error or other.first_error

    def percentile(self, fraction: float) -> float:
        if not self.milliseconds:
            return float("nan")
        ordered = sorted(self.milliseconds)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class PlanUser:
    """One JMeter thread: its variables, cookies and a keep-alive connection to each node."""

    def __init__(self, nodes: Sequence[Address], host: str, offset: int) -> None:
        self.nodes = nodes
        self.host = host
        self.turn = offset
        self.cookies: dict[str, str] = {}
        self.connections: dict[Address, http.client.HTTPConnection] = {}
        self.last_path = ""  # the path of the last answer (after redirects)

    def _send(self, node: Address, method: str, path: str, body: str | None) -> tuple[int, str | None, str]:
        headers = {"Host": self.host, "X-Forwarded-Proto": "https", "Connection": "keep-alive"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: open it again, once
            connection = self.connections.get(node)
            if connection is None:
                connection = self.connections[node] = http.client.HTTPConnection(*node, timeout=120)
            try:
                connection.request(method, path or "/", body=body, headers=headers)
                response = connection.getresponse()
                text = response.read().decode("utf-8", "replace")
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                del self.connections[node]
                if attempt == 2:
                    raise
        for header in response.msg.get_all("Set-Cookie") or []:
            cookie = SimpleCookie()
            cookie.load(header)
            for key, morsel in cookie.items():
                if (
                    "1970" in morsel["expires"]
                    or morsel["max-age"] in ("0", "-1")
                    or morsel.value == "deleted"
                ):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value
        return response.status, response.getheader("Location"), text

    def request(self, method: str, path: str, form: dict[str, str] | None) -> tuple[int, str, int]:
        """(final status, final body, HTTP requests made): redirects followed, each request to the next node."""
        body = urlencode(form) if form is not None and method == "POST" else None
        if form and method != "POST":
            path = f"{path}?{urlencode(form)}"
        for count in range(1, 11):
            node = self.nodes[self.turn % len(self.nodes)]
            self.turn += 1
            status, location, text = self._send(node, method, path, body)
            self.last_path = path
            if status not in (301, 302, 303, 307) or not location:
                return status, text, count
            target = urlsplit(location)
            if target.netloc and target.netloc != self.host:
                return status, text, count
            path = target.path + (f"?{target.query}" if target.query else "")
            if status != 307:  # 307 keeps the method and the body; 301-303 turn into a GET
                method, body = "GET", None
        raise RuntimeError(f"too many redirects from {path}")

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


def timed_request(user: PlanUser, method: str, path: str, form: dict[str, str] | None,
                  result: StepResult) -> tuple[int, str] | None:  # fmt: skip
    """(status, body) of one sample, its time (redirects included, as JMeter's follow_redirects counts it)
    and requests recorded in `result`; None, counted as an error, when the connection failed."""
    started = time.perf_counter()
    try:
        status, body, requests = user.request(method, path, form)
    except (OSError, http.client.HTTPException) as error:
        result.failed(f"{type(error).__name__}: {error}")
        return None
    result.milliseconds.append((time.perf_counter() - started) * 1000)
    result.http_requests += requests
    return status, body


def run_step(user: PlanUser, step: Step, values: dict[str, str], result: StepResult) -> None:
    """One sample: the request, the extractors into `values`, the assertions; any failure counts as the
    step's error."""
    path = substitute(step.path, values)
    form = {substitute(name, values): substitute(value, values) for name, value in step.arguments}
    answer = timed_request(user, step.method, path, form, result)
    if answer is None:
        return
    status, body = answer
    for extractor in step.extractors:
        match = extractor.pattern.search(body)
        values[extractor.variable] = match.group(1) if match else extractor.default
    if status >= 400 or any(not pattern.search(body) for pattern in step.assertions):
        result.failed(f"status {status} at {user.last_path}: {page_text(body)}")


def page_text(body: str) -> str:
    """The start of a page's text, tags and runs of white space removed (for an error's description)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))[:300]


@dataclass
class PlanRun:
    steps: dict[str, StepResult]
    seconds: float

    @property
    def samples(self) -> int:
        return sum(len(r.milliseconds) + r.errors for r in self.steps.values())

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.steps.values())

    @property
    def http_requests(self) -> int:
        return sum(r.http_requests for r in self.steps.values())


def replay(plan: Plan, nodes: Sequence[Address], host: str, threads: int | None = None,
           loops: int | None = None, rampup: float | None = None) -> PlanRun:  # fmt: skip
    """The plan's thread group run against the nodes; `threads`, `loops`, `rampup` override the plan's."""
    threads = threads or plan.threads
    loops = loops or plan.loops
    rampup = plan.rampup_seconds if rampup is None else rampup
    results = {step.name: StepResult() for step in plan.steps}
    lock = threading.Lock()

    def thread(index: int) -> None:
        time.sleep(rampup * index / threads)
        user = PlanUser(nodes, host, index)
        mine = {step.name: StepResult() for step in plan.steps}
        try:
            for loop in range(loops):
                # The users file is shared by all threads and recycled: each iteration takes the next line.
                username, password = plan.credentials[(loop * threads + index) % len(plan.credentials)]
                user.cookies.clear()  # the plan's cookie manager clears each iteration
                values = {**plan.variables, "username": username, "password": password}
                for step in plan.steps:
                    run_step(user, step, values, mine[step.name])
        finally:
            user.close()
            with lock:
                for name, result in mine.items():
                    results[name].add(result)

    return PlanRun(results, run_threads(thread, threads))


def run_threads(target: Callable[[int], None], count: int) -> float:
    """`target(0)` ... `target(count - 1)`, each in its own thread, all at once; the seconds until all ended."""
    started = time.monotonic()
    workers = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.monotonic() - started


# CPU accounting -------------------------------------------------------------------------------------------

PROGRAMS = (
    ("PHP-FPM", re.compile(r"php-fpm")),
    ("PostgreSQL", re.compile(r"postgres")),
    ("Apache", re.compile(r"apache2|httpd")),
    ("cache", re.compile(r"memcached|redis-server|valkey-server")),
)
TICKS = os.sysconf("SC_CLK_TCK")


def _program(pid: int) -> str | None:
    """The program a process belongs to, by its command name (or the EFS model by its command line)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm.startswith("python") and b"efs_latency.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return "EFS model"
    except OSError:
        return None
    return next((name for name, pattern in PROGRAMS if pattern.match(comm)), None)


def cpu_by_program() -> dict[str, float]:
    """CPU seconds per program, summed over its live processes, each with its reaped children's time (a
    PostgreSQL backend or a PHP-FPM worker that exited is counted in its parent's)."""
    totals: dict[str, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        program = _program(int(entry.name))
        if program is None:
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 14-17 of proc(5) (utime, stime, cutime, cstime), counted from after the command name.
        ticks = sum(int(value) for value in fields[11:15])
        totals[program] = totals.get(program, 0.0) + ticks / TICKS
    return totals


def machine_cpu_seconds() -> float:
    """The machine's busy CPU seconds so far (all CPUs; /proc/stat, idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after.get(name, 0.0) - before.get(name, 0.0) for name in {*before, *after}}


@dataclass
class Measured:
    """A configuration's plan run, with the CPU it cost and the shared-disk operations it made."""

    run: PlanRun
    cpu: dict[str, float]
    busy: float
    efs: dict[str, int]
    efs_places: dict[str, int]


def measure_plan(plan: Plan, nodes: Sequence[Address], host: str, efs_counts: Callable[[], dict],
                 forum_posts_reset: Callable[[], Callable[[], None]]) -> Measured:  # fmt: skip
    """A warm-up loop (a quarter of the threads, once, unmeasured), then the whole plan, measured; the
    forum replies both made are deleted afterwards so that every configuration reads the same discussion."""
    undo = forum_posts_reset()
    try:
        replay(plan, nodes, host, threads=max(1, plan.threads // 4), loops=1, rampup=0)
        efs_before, cpu_before, busy_before = efs_counts(), cpu_by_program(), machine_cpu_seconds()
        run = replay(plan, nodes, host)
        busy = machine_cpu_seconds() - busy_before
        cpu = spent(cpu_before, cpu_by_program())
        efs_after = efs_counts()
    finally:
        undo()
    return Measured(run, cpu, busy, delta(efs_before, efs_after),
                    delta(efs_before.get("places", {}), efs_after.get("places", {})))  # fmt: skip


SHOWN = ("PHP-FPM", "PostgreSQL", "Apache", "cache", "EFS model")


def per_sample(total: float, samples: int) -> float:
    return total / samples if samples else float("nan")


def report_lines(name: str, measured: Measured) -> list[str]:
    """One run's table: per step n, p50, p95 and errors, then throughput, CPU and shared-disk operations."""
    run = measured.run
    lines = [f"{name}: {run.samples} samples ({run.http_requests} HTTP requests) in {run.seconds:.1f} s, "
             f"{per_sample(run.samples, 1) / run.seconds:.1f} samples/s, {run.errors} errors"]  # fmt: skip
    lines.append(f"  {'step':<42}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}")
    for step, result in run.steps.items():
        lines.append(f"  {step:<42}{len(result.milliseconds):>6}{result.percentile(0.5):>9.0f}"
                     f"{result.percentile(0.95):>9.0f}{result.errors:>8}"
                     + (f"   first: {result.first_error}" if result.first_error else ""))  # fmt: skip
    cpu = ", ".join(f"{p} {per_sample(measured.cpu.get(p, 0.0) * 1000, run.samples):.1f}" for p in SHOWN)
    lines.append(
        f"  CPU ms per sample: {cpu}; whole machine {per_sample(measured.busy * 1000, run.samples):.1f}"
    )
    places = ", ".join(
        f"{place} {per_sample(n, run.samples):.2f}" for place, n in list(measured.efs_places.items())[:6]
    )
    lines.append(
        f"  shared-disk operations per sample: {efs_per_sample(measured)}; by place: {places or 'none'}"
    )
    return lines


def efs_per_sample(measured: Measured) -> str:
    reads = sum(n for op, n in measured.efs.items() if op in READ_OPS)
    writes = sum(n for op, n in measured.efs.items() if op not in READ_OPS and op != "places")
    samples = measured.run.samples
    return f"{per_sample(reads, samples):.1f}+{per_sample(writes, samples):.1f}"


def combined(runs: list[Measured]) -> Measured:
    """Rounds of one configuration as one measurement: counts and seconds summed, latencies pooled."""
    steps: dict[str, StepResult] = {}
    cpu: dict[str, float] = {}
    efs: dict[str, int] = {}
    places: dict[str, int] = {}
    for measured in runs:
        for name, result in measured.run.steps.items():
            steps.setdefault(name, StepResult()).add(result)
        for into, source in ((cpu, measured.cpu), (efs, measured.efs), (places, measured.efs_places)):
            for key, value in source.items():
                into[key] = into.get(key, 0) + value
    return Measured(PlanRun(steps, sum(m.run.seconds for m in runs)), cpu, sum(m.busy for m in runs), efs,
                    dict(sorted(places.items(), key=lambda item: -item[1])))  # fmt: skip


def summary(measured: dict[str, list[Measured]]) -> str:
    """Every configuration in one table (rounds combined), throughput and PHP-FPM CPU against the reference."""
    totals = {name: combined(runs) for name, runs in measured.items()}
    head = (f"{'configuration':<40}{'samples/s':>10}{'x ref':>7}{'errors':>7}{'p50 ms':>8}{'p95 ms':>8}"
            + "".join(f"{p + ' ms':>15}" for p in SHOWN) + f"{'machine ms':>12}{'PHP x ref':>10}{'EFS r+w':>13}")  # fmt: skip
    lines = [head, "-" * len(head)]
    reference = totals.get("reference")
    for name, total in totals.items():
        run = total.run
        every = StepResult([ms for r in run.steps.values() for ms in r.milliseconds])
        rate = per_sample(run.samples, 1) / run.seconds
        php = per_sample(total.cpu.get("PHP-FPM", 0.0) * 1000, run.samples)
        ref_rate = reference.run.samples / reference.run.seconds if reference else float("nan")
        ref_php = (
            per_sample(reference.cpu.get("PHP-FPM", 0.0) * 1000, reference.run.samples)
            if reference
            else float("nan")
        )
        lines.append(f"{name:<40}{rate:>10.1f}{rate / ref_rate:>7.2f}{run.errors:>7}{every.percentile(0.5):>8.0f}"
                     f"{every.percentile(0.95):>8.0f}"
                     + "".join(f"{per_sample(total.cpu.get(p, 0.0) * 1000, run.samples):>15.1f}" for p in SHOWN)
                     + f"{per_sample(total.busy * 1000, run.samples):>12.1f}{php / ref_php:>10.2f}{efs_per_sample(total):>13}")  # fmt: skip
    lines.append("CPU columns: milliseconds of CPU per plan sample (a sample is one step: redirects it follows "
                 "included), by program; EFS r+w: shared-disk read-type + write-type operations per sample.")  # fmt: skip
    for name in ("reference", "shipped"):
        if name in totals:
            lines += ["", *report_lines(f"{name} (all rounds)", totals[name])]
    return "\n".join(lines)


def results_json(measured: dict[str, list[Measured]]) -> dict:
    """What .rig/bench.json keeps of each configuration (rounds combined)."""
    out = {}
    for name, runs in measured.items():
        total = combined(runs)
        out[name] = {
            "samples": total.run.samples, "seconds": round(total.run.seconds, 2), "errors": total.run.errors,
            "http_requests": total.run.http_requests,
            "steps": {step: {"n": len(r.milliseconds), "p50_ms": round(r.percentile(0.5), 1),
                             "p95_ms": round(r.percentile(0.95), 1), "errors": r.errors}
                      for step, r in total.run.steps.items()},
            "cpu_ms_per_sample": {p: round(per_sample(s * 1000, total.run.samples), 2) for p, s in total.cpu.items()},
            "machine_cpu_ms_per_sample": round(per_sample(total.busy * 1000, total.run.samples), 2),
            "efs_ops": total.efs, "efs_ops_by_place": dict(list(total.efs_places.items())[:12]),
        }  # fmt: skip
    return out
