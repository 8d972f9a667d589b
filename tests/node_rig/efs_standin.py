"""The rig's stand-in for Amazon EFS: bench/efs_latency.py (a FUSE passthrough, with the rig's own Python in
.rig/fuse) mounted over the site's shared directory, with a latency per operation (make bench-node's model)
or none (the fault rehearsal's), and a stall: the passthrough stopped (SIGSTOP), so that every operation on
the shared disk waits, unanswered, until it is continued, as on a hard NFS mount whose server stopped
answering (nfs(5): "If the server ... does not respond, the NFS client retries the request indefinitely";
EFS recommends hard mounts, its "Recommended NFS mount settings")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUSE_PYTHON = HERE.parents[1] / ".rig" / "fuse" / "bin" / "python"


@dataclass
class EfsModel:
    """The passthrough's latency model, its process and where it reports its counts."""

    stats: Path
    read_ms: float = 0.5
    write_ms: float = 2.0
    lookup_cache_seconds: float = 1.0
    process: subprocess.Popen | None = None

    def counts(self) -> dict[str, int]:
        time.sleep(0.25)  # the layer writes its counts every 0.1 s
        return json.loads(self.stats.read_text()) if self.stats.exists() else {}

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """Every operation on the shared disk unanswered while inside (the passthrough stopped)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


def efs_layer(model: EfsModel) -> Callable[[Path, Path], object]:
    """A running_site shared layer: the passthrough mounted over the shared directory for the site's life."""

    @contextmanager
    def layer(workdir: Path, shared: Path) -> Iterator[EfsModel]:
        backing = workdir / "efs-backing"
        backing.mkdir()
        model.stats = workdir / "efs-stats.json"
        log = (workdir / "efs-latency.log").open("w")
        model.process = subprocess.Popen(
            [str(FUSE_PYTHON), str(HERE / "bench" / "efs_latency.py"), str(backing), str(shared),
             "--stats", str(model.stats), "--read-ms", str(model.read_ms), "--write-ms", str(model.write_ms),
             "--lookup-cache-seconds", str(model.lookup_cache_seconds)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while subprocess.run(["mountpoint", "-q", str(shared)]).returncode != 0:
            if time.monotonic() > deadline or model.process.poll() is not None:
                raise RuntimeError(f"the EFS stand-in did not mount; see {workdir / 'efs-latency.log'}")
            time.sleep(0.1)
        try:
            yield model
        finally:
            os.kill(model.process.pid, signal.SIGCONT)
            subprocess.run(["fusermount3", "-u", "-z", str(shared)], check=False)
            model.process.terminate()
            model.process.wait(10)

    return layer
