"""A rehearsal web node: its own mount namespace on this machine, its own loopback address.

Each node sees its own /var/www, /etc/moodle-cfn, /usr/share/moodle-cfn, /var/cache/moodle,
/var/lib/moodle-cfn, /etc/apache2, /etc/php, /etc/systemd/system, /run and /var/log (private copies), so its
Apache and PHP-FPM are its own. It shares with the other nodes only what the site shares on AWS: the "EFS"
directories (moodledata and the code archives, mounted by the node setup itself), the database and the
caches.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from tests.node_rig.aws import Imds
from tests.node_rig.cfn_init import InitFile, write

HERE = Path(__file__).resolve().parent
# Names each node resolves to the rig (its own /etc/hosts): Amazon SES's SMTP endpoint of the rig's Region is
# the rig's SMTP sink (rehearse_node.py's mail test), never the real one.
RIG_HOSTS = {"email-smtp.us-east-1.amazonaws.com": "127.0.0.1"}
PLATFORM_FILE = HERE / "platform-debian.sh"
# What user-data.sh hands over to at first boot, and the systemd unit runs at every later boot.
READY = "/usr/share/moodle-cfn/moodle-node-ready.sh"
# Private to each node: (directory as the node sees it, seeded from the machine's copy?).
PRIVATE_DIRS = (
    ("/var/www", False),
    ("/etc/moodle-cfn", False),
    ("/usr/share/moodle-cfn", False),
    ("/var/cache/moodle", False),
    ("/var/lib/moodle-cfn", False),
    ("/etc/systemd/system", False),
    ("/etc/apache2", True),
    # a2enmod's markers: two nodes enabling modules at the same moment must not share them.
    ("/var/lib/apache2", True),
    ("/etc/php", True),
    ("/run", False),
    ("/var/log", False),
)


@dataclass
class Node:
    """One web node; `environment` is what its boot would have (AWS endpoints, the platform file)."""

    name: str
    address: str
    root: Path
    environment: dict[str, str]
    imds: Imds
    holder: subprocess.Popen | None = None
    logs: list[str] = field(default_factory=list)

    def boot_namespace(self) -> None:
        """Create the node's private directories and a process holding its mount namespace."""
        mounts = []
        for path, seeded in PRIVATE_DIRS:
            own = self.root / path.lstrip("/")
            if seeded and not own.exists():
                shutil.copytree(path, own, symlinks=True)
            own.mkdir(parents=True, exist_ok=True)
            Path(path).mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {own} {path}")
        for empty in ("run/lock", "var/log/apache2"):  # what the packages made in the directories now hidden
            (self.root / empty).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/apache2/ports.conf").write_text(f"Listen {self.address}:80\n")
        (self.root / "var/moodledata").mkdir(parents=True, exist_ok=True)
        hosts = self.root / "etc-hosts"
        hosts.write_text(Path("/etc/hosts").read_text() + "".join(f"{a} {n}\n" for n, a in RIG_HOSTS.items()))
        mounts.append(f"mount --bind {hosts} /etc/hosts")
        script = " && ".join([*mounts, "exec sleep infinity"])
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
        deadline = time.monotonic() + 10
        while not self.sees(self.root / "etc/apache2/ports.conf", "/etc/apache2/ports.conf"):
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise RuntimeError(f"{self.name}: mount namespace did not come up")
            time.sleep(0.05)

    def sees(self, own: Path, path: str) -> bool:
        """Whether the namespace shows `own` at `path` (its mounts are in place)."""
        result = self.run(["cat", path], check=False)
        return result.returncode == 0 and result.stdout == own.read_text()

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run inside the node."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", "env", *self.env_pairs(), *argv]

    def env_pairs(self) -> list[str]:
        base = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": "/root"}
        return [f"{k}={v}" for k, v in {**base, **self.environment}.items()]

    def run(self, argv: list[str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, check=check, timeout=timeout
        )

    def install_init_files(self, files: list[InitFile]) -> None:
        """What cfn-init does at boot: write the launch template's files."""
        write(files, self.root)

    def start_setup(self, first_boot: bool = True) -> subprocess.Popen:
        """A boot of the node: moodle-node-ready.sh as user-data.sh (first boot) or the systemd unit (later
        boots) runs it, as root; it runs moodle-node-setup.sh and completes the launch lifecycle hook."""
        argv = ["bash", READY, *(["--first-boot"] if first_boot else [])]
        return subprocess.Popen(
            self.command(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def setup(self, first_boot: bool = True) -> tuple[int, str]:
        """Boot the node to the end; the exit status and output."""
        process = self.start_setup(first_boot)
        output, _ = process.communicate(timeout=1200)
        self.logs.append(output)
        return process.returncode, output

    def kill_all(self) -> None:
        """What a node's sudden death does: SIGKILL to every process in its mount namespace (its setup,
        Moodle's CLI, Apache, PHP-FPM) but the namespace's holder; its locks on the shared disk go with them."""
        assert self.holder is not None
        namespace = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        for _ in range(5):
            victims = []
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in (self.holder.pid, os.getpid()):
                    continue
                try:
                    if os.readlink(entry / "ns/mnt") == namespace:
                        victims.append(int(entry.name))
                except OSError:
                    continue
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.2)

    def file(self, path: str) -> str:
        """A file as the node sees it."""
        return self.run(["cat", path]).stdout

    def stop(self) -> None:
        """Stop the node's Apache and PHP-FPM, then its namespace."""
        if self.holder is None:
            return
        self.run(["sh", "-c", "apache2ctl stop; for pid in /run/php/php*-fpm.pid; do pkill -QUIT -F $pid; done"],
                 check=False)  # fmt: skip
        # The packet filter the node setup put on the machine's shared network stack for this node's metadata
        # stand-in (moodle-metadata.nft): gone with the node.
        if shutil.which("nft"):
            table = f"moodle_cfn_metadata_{urlsplit(self.imds.url).port}"
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
        self.holder.kill()
        self.holder.wait()
        self.holder = None


class Browser:
    """A user's browser that talks to one node at a time, as the load balancer would send it: the site's
    host name, https as the forwarded protocol, cookies kept across nodes."""

    def __init__(self, site_host: str, headers: dict[str, str] | None = None) -> None:
        self.site_host = site_host
        self.headers = headers or {}
        self.cookies: dict[str, str] = {}

    def request(self, node: Node, method: str, path: str, form: dict[str, str] | None = None,
                follow: bool = True) -> tuple[int, str, str]:  # fmt: skip
        """(status, final path, body), following redirects within the site on the same node."""
        for _ in range(10):
            connection = http.client.HTTPConnection(node.address, 80, timeout=120)
            headers = {"Host": self.site_host, "X-Forwarded-Proto": "https", **self.headers}
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if form is not None:
                body = urlencode(form)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            for header in response.msg.get_all("Set-Cookie") or []:
                cookie = SimpleCookie()
                cookie.load(header)
                for key, morsel in cookie.items():
                    self.cookies[key] = morsel.value
            location = response.getheader("Location")
            if not follow or response.status not in (301, 302, 303, 307) or not location:
                return response.status, path, text
            target = urlsplit(location)
            if target.netloc and target.netloc != self.site_host:
                return response.status, location, text
            path = target.path + (f"?{target.query}" if target.query else "")
            method, form = "GET", None
        raise RuntimeError(f"too many redirects from {path}")

    def log_in(self, node: Node, username: str, password: str) -> str:
        """Log in through `node`'s login form; the final page's path."""
        _, _, page = self.request(node, "GET", "/login/index.php")
        token = re.search(r'name="logintoken" value="([^"]+)"', page)
        assert token, "the login page has no login token"
        form = {"username": username, "password": password, "logintoken": token.group(1), "anchor": ""}
        _, final, _ = self.request(node, "POST", "/login/index.php", form)
        return final
