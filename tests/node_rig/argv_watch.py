"""Watching every process's argument list, as any local user can (/proc/PID/cmdline, what `ps` shows), for a
secret that must never be in one, while a step of the rig runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Between two samples: short enough to catch a process that lives a few seconds (an install runs for a
# minute or more), long enough to leave the rig's two cores to the nodes.
INTERVAL_SECONDS = 0.05


@dataclass
class ArgvWatch:
    """What the samples saw: how many were taken, in how many a process with `marker` in its arguments
    was running (proof the watch overlapped it), and every argument list that held the secret."""

    secret: bytes
    marker: bytes
    samples: int = 0
    marked: int = 0
    leaks: list[str] = field(default_factory=list)

    def sample(self) -> None:
        seen_marker = False
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                arguments = cmdline.read_bytes()
            except OSError:  # the process ended between the listing and the read
                continue
            seen_marker = seen_marker or self.marker in arguments
            if self.secret in arguments:
                self.leaks.append(arguments.replace(b"\0", b" ").decode(errors="replace"))
        self.samples += 1
        self.marked += seen_marker


@contextmanager
def watching_argument_lists(secret: str, marker: str) -> Iterator[ArgvWatch]:
    """Sample every process's argument list until the block ends."""
    watch = ArgvWatch(secret.encode(), marker.encode())
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(INTERVAL_SECONDS):
            watch.sample()

    thread = threading.Thread(target=run, name="argv-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()
