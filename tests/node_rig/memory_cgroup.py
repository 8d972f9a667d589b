"""A memory cgroup for a rehearsal node's processes: what an instance type's memory is to a node on AWS
(`MemoryMax=` in systemd's words), with its peak use and its OOM kills read back. cgroup v2 where the
machine has it, v1's memory controller otherwise."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


@dataclass
class MemoryCgroup:
    path: Path
    v2: bool

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryCgroup:
        """A new cgroup limited to `limit_bytes`; RuntimeError when this machine offers none."""
        controllers = V2_ROOT / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            path, v2 = V2_ROOT / name, True
        elif (V1_ROOT / "memory.limit_in_bytes").exists():
            path, v2 = V1_ROOT / name, False
        else:
            raise RuntimeError("this machine has no memory cgroup controller")
        path.mkdir(exist_ok=True)
        if v2:
            (path / "memory.max").write_text(str(limit_bytes))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")  # an instance has no swap
        else:
            # Charges made before a process moved in stay where they were (kernels refuse
            # move_charge_at_immigrate now): the peak counts what the processes use from then on.
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        return cls(path, v2)

    def adopt(self, pids: list[int]) -> None:
        """Move processes in (their children, forked later, are born in it)."""
        for pid in pids:
            (self.path / "cgroup.procs").write_text(str(pid))

    def current(self) -> int:
        return int((self.path / ("memory.current" if self.v2 else "memory.usage_in_bytes")).read_text())

    def peak(self) -> int | None:
        """The most the cgroup used (None where the kernel does not keep it: v2 before 5.19)."""
        peak = self.path / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(peak.read_text()) if peak.exists() else None

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        found = re.search(r"^oom_kill (\d+)$", text, re.M)
        return int(found.group(1)) if found else 0

    def remove(self) -> None:
        """Hand the processes back to the root cgroup and remove this one."""
        parent = self.path.parent / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile
                parent.write_text(pid)
        os.rmdir(self.path)


def namespace_processes(holder_pid: int, name_prefix: str) -> list[int]:
    """The processes of a node (its mount namespace, held by `holder_pid`) whose name starts so."""
    namespace = os.readlink(f"/proc/{holder_pid}/ns/mnt")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/mnt") == namespace and (entry / "comm").read_text().startswith(
                name_prefix
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
