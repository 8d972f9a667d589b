"""How the fault rehearsal injects a fault into the rig's running site and watches what it does: packets to a
service dropped (a black hole, not a refusal), load from logged-in users, the load balancer's health checks,
and each request timed.

A black hole is an nftables table on the machine's network stack (the rig's nodes and services share it, on
loopback addresses): every packet to the service's address and port, and every packet from it, is dropped
at the input hook, so neither side gets an answer or a reset, which is what a crashed Aurora writer, a
cut-off Availability Zone or a lost cache node does to its clients (AWS's fast-failover guide asks for
exactly this test: "use a packet dropping tool to test application response for client-side failures").
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.node_rig.node import Browser, Node

# The target group's health check (layers/load_balancer.py): a check slower than its timeout has failed.
HEALTH_TIMEOUT_SECONDS = 5
HEALTH_PATH = "/lb-health"


def record(results: Path, scenario: str, **measured: object) -> None:
    """Keep one scenario's measurements in `results` (the closing note and the README quote them)."""
    found = json.loads(results.read_text()) if results.exists() else {}
    found[scenario] = measured
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(found, indent=2) + "\n")
    print(f"{scenario}: {measured}")


@contextmanager
def black_holed(address: str, port: int) -> Iterator[None]:
    """Every TCP packet to and from address:port dropped while inside."""
    table = f"moodle_cfn_rig_blackhole_{address.replace('.', '_')}_{port}"
    rules = (
        f"table inet {table} {{\n  chain input {{\n    type filter hook input priority -150; policy accept;\n"
        f"    ip daddr {address} tcp dport {port} drop\n    ip saddr {address} tcp sport {port} drop\n  }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)


@dataclass(frozen=True)
class Sample:
    """One request: which node, when it started (monotonic), how long it took, its status (0: no answer
    within the client's limit) and its Retry-After."""

    node: str
    started: float
    seconds: float
    status: int
    retry_after: str | None = None

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def timed_get(node: Node, path: str, headers: dict[str, str], timeout: float) -> Sample:
    started = time.monotonic()
    try:
        connection = http.client.HTTPConnection(node.address, 80, timeout=timeout)
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return Sample(node.name, started, time.monotonic() - started, response.status,
                      response.getheader("Retry-After"))  # fmt: skip
    except (OSError, http.client.HTTPException):
        return Sample(node.name, started, time.monotonic() - started, 0)


def health_check(node: Node) -> Sample:
    """The load balancer's check: to the node's address, its own Host, the target group's timeout."""
    return timed_get(node, HEALTH_PATH, {"Host": node.address}, HEALTH_TIMEOUT_SECONDS)


def browser_headers(browser: Browser) -> dict[str, str]:
    """What the load balancer relays for `browser`: the site's name, https, its cookies."""
    cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    return {"Host": browser.site_host, "X-Forwarded-Proto": "https", "Cookie": cookies}


class Watch:
    """Threads calling `probe(node, n)` in a loop (n: the thread's number on that node), `per_node` threads
    per node, `pause` seconds apart; every Sample kept."""

    def __init__(self, nodes: list[Node], probe: Callable[[Node, int], Sample], per_node: int,
                 pause: float) -> None:  # fmt: skip
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.loop, args=(node, n, probe, pause), daemon=True)
            for node in nodes
            for n in range(per_node)
        ]

    def loop(self, node: Node, n: int, probe: Callable[[Node, int], Sample], pause: float) -> None:
        while not self.stop.is_set():
            self.samples.append(probe(node, n))
            self.stop.wait(pause)

    def __enter__(self) -> Watch:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def failed_health_checks(checks: list[Sample]) -> list[Sample]:
    """Checks the load balancer would count as failed: not 200, or slower than its timeout."""
    return [s for s in checks if s.status != 200 or s.seconds > HEALTH_TIMEOUT_SECONDS]


def pages_overlapping(pages: list[Sample], start: float, end: float) -> list[Sample]:
    """Requests in flight at some moment between start and end."""
    return [s for s in pages if s.started < end and s.ended > start]


def recovery(pages: list[Sample], nodes: list[Node], back: float) -> dict[str, object]:
    """After the dependency's return at `back`: per node, the seconds to the first 200 and the start of the
    last request that was not 200 (relative to `back`; None if none failed after it)."""
    measured: dict[str, object] = {}
    for node in nodes:
        mine = sorted(
            (s for s in pages if s.node == node.name and s.started >= back), key=lambda s: s.started
        )
        first_ok = next((s for s in mine if s.status == 200), None)
        failed = [s for s in mine if s.status != 200]
        measured[node.name] = {
            "seconds_to_first_200": None if first_ok is None else round(first_ok.ended - back, 2),
            "last_failure_started_at": round(failed[-1].started - back, 2) if failed else None,
        }
    return measured
