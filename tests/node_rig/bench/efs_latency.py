"""The rig's stand-in for Amazon EFS under load: a FUSE passthrough that delays every operation that
would be a round trip to the EFS service and counts operations by type.

Run by `make bench-node` with the rig's own Python (.rig/fuse, mfusepy 3.1.1 on Debian's libfuse3):
    python efs_latency.py BACKING_DIR MOUNT_POINT --stats STATS.json [--read-ms 0.5] [--write-ms 2]

Latency model (why 0.5 ms and 2 ms): the Amazon EFS performance specifications
(https://docs.aws.amazon.com/efs/latest/ug/performance.html, "Performance summary", General Purpose mode,
Regional file system, Elastic throughput) give ~1 ms per read operation and ~2.7 ms per write operation.
0.5 ms per read-type and 2 ms per write-type operation is below both, a kind model of EFS, never a harsh
one: a node configuration that beats another here by avoiding the disk beats it by at least as much on
EFS.

Which operations pay: the kernel's FUSE client keeps directory entries, attributes and "no such file"
answers for 1 s (entry/attribute/negative timeouts; --lookup-cache-seconds, 0 for none), less than the NFS
client keeps them between revalidations (acregmin 3 s, acdirmin 30 s, negative lookups cached: the nfs(5)
defaults). Every open reaches this process and revalidates the file, which is NFS's close-to-open
consistency: the file's cached pages are kept when its modification time and size are unchanged, and
dropped otherwise (libfuse's auto_cache with ac_attr_timeout=0: a getattr at every open). nfs(5), "Close-
to-open cache consistency": "When an application opens a file stored on an NFS version 3 server, the NFS
client checks that the file exists on the server and is permitted to the opener by sending a GETATTR or
ACCESS request. The NFS client sends these requests regardless of the freshness of the file's cached
attributes"; a file whose attributes are unchanged keeps its cached pages. On EFS (NFS 4.1) the open is one
OPEN compound whose reply carries the attributes, so the open pays once and its revalidating getattr
nothing; reading an unchanged file's cached pages pays nothing, a changed file's pages are read again.
Read-type: lookups and attribute reads (getattr), access, open/opendir, read, readdir, readlink, statfs.
Write-type: create, write, truncate, unlink, rename, mkdir, rmdir, chmod, chown, utimens, link, symlink,
fsync. flush/release only close a handle here and pay nothing. File locks (flock) stay in the kernel,
which is right for two nodes on one machine.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import mfusepy as fuse

READ_OPS = ("getattr", "access", "open", "opendir", "read", "readdir", "readlink", "statfs")
WRITE_OPS = ("create", "write", "truncate", "unlink", "rename", "mkdir", "rmdir", "chmod", "chown",
             "utimens", "link", "symlink", "fsync")  # fmt: skip


class Passthrough(fuse.Operations):
    """Every operation on `root`, after the model's delay; `counts` by operation name."""

    use_ns = True

    def __init__(self, root: str, read_s: float, write_s: float) -> None:
        self.root = os.path.realpath(root)
        self.read_s, self.write_s = read_s, write_s
        self.counts: Counter[str] = Counter()
        # Operations by kind (r or w) and the first three components of the path, to see who pays.
        self.places: Counter[str] = Counter()
        self.mutex = threading.Lock()
        # Handles just opened, whose revalidating getattr (auto_cache) is part of the open's round trip.
        self.revalidating: set[int] = set()

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _own(self, path: str) -> None:
        """A new file or directory belongs to the caller, as on EFS (this process runs as root)."""
        uid, gid, _ = fuse.fuse_get_context()
        os.lchown(self._real(path), uid, gid)

    def _pay(self, op: str, path: str = "") -> None:
        where = "/".join((path or "").strip("/").split("/")[:3])
        with self.mutex:
            self.counts[op] += 1
            self.places[f"{'r' if op in READ_OPS else 'w'} {where}"] += 1
        time.sleep(self.read_s if op in READ_OPS else self.write_s)

    # Read-type operations.
    def getattr(self, path, fh=None):
        with self.mutex:
            in_open = fh in self.revalidating
            self.revalidating.discard(fh)
        if not in_open:
            self._pay("getattr", path)
        st = os.lstat(self._real(path)) if fh is None else os.fstat(fh)
        keys = ("st_atime_ns", "st_ctime_ns", "st_gid", "st_mode", "st_mtime_ns", "st_nlink", "st_size",
                "st_uid", "st_ino", "st_blocks")  # fmt: skip
        attrs = {key: getattr(st, key) for key in keys}
        for name in ("atime", "ctime", "mtime"):
            attrs[f"st_{name}"] = attrs.pop(f"st_{name}_ns")
        return attrs

    def access(self, path, amode):
        self._pay("access", path)
        if not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def open(self, path, flags):
        self._pay("open", path)
        fh = os.open(self._real(path), flags)
        with self.mutex:
            self.revalidating.add(fh)
        return fh

    def opendir(self, path):
        self._pay("opendir", path)
        return 0

    def read(self, path, size, offset, fh):
        self._pay("read", path)
        return os.pread(fh, size, offset)

    def readdir(self, path, fh):
        self._pay("readdir", path)
        return [".", "..", *os.listdir(self._real(path))]

    def readlink(self, path):
        self._pay("readlink", path)
        return os.readlink(self._real(path))

    def statfs(self, path):
        self._pay("statfs", path)
        st = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
                "f_frsize", "f_namemax")  # fmt: skip
        return {key: getattr(st, key) for key in keys}

    # Write-type operations.
    def create(self, path, mode, fi=None):
        self._pay("create", path)
        fh = os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        self._own(path)
        return fh

    def write(self, path, data, offset, fh):
        self._pay("write", path)
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._pay("truncate", path)
        if fh is None:
            os.truncate(self._real(path), length)
        else:
            os.ftruncate(fh, length)
        return 0

    def unlink(self, path):
        self._pay("unlink", path)
        os.unlink(self._real(path))
        return 0

    def rename(self, old, new):
        self._pay("rename", old)
        os.rename(self._real(old), self._real(new))
        return 0

    def mkdir(self, path, mode):
        self._pay("mkdir", path)
        os.mkdir(self._real(path), mode)
        self._own(path)
        return 0

    def rmdir(self, path):
        self._pay("rmdir", path)
        os.rmdir(self._real(path))
        return 0

    def chmod(self, path, mode):
        self._pay("chmod", path)
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path, uid, gid):
        self._pay("chown", path)
        os.lchown(self._real(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        self._pay("utimens", path)
        os.utime(self._real(path), ns=times, follow_symlinks=False)
        return 0

    def link(self, target, source):
        self._pay("link", target)
        os.link(self._real(source), self._real(target))
        return 0

    def symlink(self, target, source):
        self._pay("symlink", target)
        os.symlink(source, self._real(target))
        self._own(target)
        return 0

    def fsync(self, path, datasync, fh):
        self._pay("fsync", path)
        os.fsync(fh)
        return 0

    # Free: closing a handle.
    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        with self.mutex:
            self.revalidating.discard(fh)
        os.close(fh)
        return 0

    def releasedir(self, path, fh):
        return 0


def write_stats(ops: Passthrough, target: Path) -> None:
    """Every 0.1 s, the counts so far as JSON (written aside and renamed: a reader never sees half)."""
    while True:
        with ops.mutex:
            counts = {**ops.counts, "places": dict(ops.places)}
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(counts))
        partial.replace(target)
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--stats", required=True, type=Path)
    parser.add_argument("--read-ms", type=float, default=0.5)
    parser.add_argument("--write-ms", type=float, default=2.0)
    # 0: no lookup caching at all, every path resolution pays (the harsher of the two models make bench-node runs).
    parser.add_argument("--lookup-cache-seconds", type=float, default=1.0)
    args = parser.parse_args()
    ops = Passthrough(args.backing, args.read_ms / 1000, args.write_ms / 1000)
    threading.Thread(target=write_stats, args=(ops, args.stats), daemon=True).start()
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=False, allow_other=True, default_permissions=True,
              fsname="rig-efs", entry_timeout=args.lookup_cache_seconds, attr_timeout=args.lookup_cache_seconds,
              negative_timeout=args.lookup_cache_seconds, auto_cache=True, ac_attr_timeout=0)  # fmt: skip


if __name__ == "__main__":
    main()
