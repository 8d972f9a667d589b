"""The database-role function's own code (functions/database_role.py) against real PostgreSQL 17 and 16.

A throwaway server per major (services.start_postgres: TLS, SCRAM, an RDS-like master that is not a
superuser) and moto's Secrets Manager in process. Every login the function makes goes through its own
wire-protocol client; every login a web node would make goes through libpq (psql), so the verifiers the
function writes are proved to match what PHP's pgsql driver sends. Needs root (the server runs as its own
system user) and psql: `make rehearse-database-role`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from moodle_cfn.functions import database_role as fn
from tests.node_rig import services

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".rig" / "postgres"
PORTS = {17: 55527, 16: 55526}  # away from the node rig's servers, which may be running
MASTER = {"username": "moodle_master", "password": "m'a$ter\\pw\"1"}
OWNER = "moodle_owner"
TOKENS = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
)  # UUIDs, as Secrets Manager sends
HOSTILE_PASSWORDS = (
    "it's a 'quoted' one",
    "back\\slash\\\\ and \\' escape",
    "$d$ dollar $$ END$d$; DROP ROLE moodle_owner; --",
    "%I %L %s format() bait",
    "é ü ß 中文 🙂 unicode",
    "ﬁ ligature and non\u00a0breaking space",  # SASLprep maps both: the verifier must match libpq's
)


@pytest.fixture(scope="module", params=[17, 16], ids=lambda major: f"postgres{major}")
def server(request: pytest.FixtureRequest) -> Iterator[services.Postgres]:
    """A fresh PostgreSQL of one major with TLS, an RDS-like master and a `moodle` database it owns."""
    major = request.param
    # Not under pytest's tmp_path: another pytest run on the machine prunes those directories by age.
    work = Path(tempfile.mkdtemp(prefix=f"moodle-cfn-dbrole-pg{major}-"))
    tls = services.make_ca(work / "tls", [])
    binaries = services.postgres_binaries(major, CACHE)
    pg = services.start_postgres(
        binaries, work, PORTS[major], tls, MASTER["username"], MASTER["password"], "moodle"
    )
    # Every statement in the server log: the plaintext password must never be in one.
    pg.sql("ALTER SYSTEM SET log_statement = 'all'")
    pg.sql("SELECT pg_reload_conf()")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def database(server: services.Postgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own for each test, owned by the master (as RDS makes DatabaseName), and no roles
    left from another test."""
    name = request.node.name.split("[")[0].removeprefix("test_")[:40]
    server.sql(f'CREATE DATABASE "{name}" OWNER "{MASTER["username"]}"')
    yield name
    server.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    for role in ("moodle", "moodle_clone", OWNER, "oldsite", "oldsite_reader"):
        server.sql(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def aws() -> Iterator[object]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def settings(
    server: services.Postgres, secrets: object, database: str, app_password: str = "first-1"
) -> dict:
    """The function's settings as the template gives them, with fresh secrets."""
    master = secrets.create_secret(Name=f"master-{database}", SecretString=json.dumps(MASTER))["ARN"]
    app = json.dumps({"username": "moodle", "password": app_password})
    return {
        "MasterSecretArn": master,
        "AppSecretArn": secrets.create_secret(Name=f"app-{database}", SecretString=app)["ARN"],
        "Host": server.host,
        "Port": str(server.port),
        "Database": database,
        "OwnerRole": OWNER,
    }


def current(secrets: object, arn: str) -> dict:
    """The AWSCURRENT value, asked for by name: moto 5 answers a stage-less read with the version that was
    current before a stage move, where Secrets Manager answers AWSCURRENT."""
    return json.loads(secrets.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])


def rotate(secrets: object, config: dict, token: str) -> None:
    """The four steps, in order, as Secrets Manager calls them."""
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        fn.rotate(secrets, config, config["AppSecretArn"], token, step)


def owners(server: services.Postgres, database: str) -> set[str]:
    """Owners of the database, its public schema and every relation in it."""
    return set(server.sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database() UNION "
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public' UNION "
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
        database,
    ).split())  # fmt: skip


def test_creates_the_roles_and_a_rerun_changes_nothing(
    server: services.Postgres, aws: object, database: str
) -> None:
    config = settings(server, aws, database)
    fn.ensure_site(aws, config)
    assert server.sql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{OWNER}'") == "f"
    # A node's login (libpq, as PHP's pgsql) starts as the owner, so what Moodle creates is the owner's.
    assert (
        server.sql_as("moodle", "first-1", "SELECT session_user, current_user", database) == f"moodle|{OWNER}"
    )
    server.sql_as("moodle", "first-1", "CREATE TABLE mdl_config (id bigserial PRIMARY KEY, v text)", database)
    assert owners(server, database) == {OWNER}
    before = server.sql("SELECT rolname, rolpassword FROM pg_authid ORDER BY 1")
    fn.ensure_site(aws, config)
    # A rerun writes a fresh verifier (new salt) for the same password: it still logs in, nothing else moves.
    assert server.sql("SELECT rolname FROM pg_authid ORDER BY 1") == "\n".join(
        r.split("|")[0] for r in before.split("\n")
    )
    assert server.sql_as("moodle", "first-1", "SELECT count(*) FROM mdl_config", database) == "0"
    assert owners(server, database) == {OWNER}


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_a_hostile_password_is_set_exactly_and_never_reaches_the_log(
    server: services.Postgres, aws: object, database: str, password: str
) -> None:
    config = settings(server, aws, database, password)
    fn.ensure_site(aws, config)
    log = server.log.read_text(errors="replace")
    assert password not in log and "SCRAM-SHA-256$4096:" in log  # the verifier was logged instead
    assert server.sql_as("moodle", password, "SELECT current_user", database) == OWNER  # libpq
    own = fn.Connection(server.host, server.port, "moodle", password, database)  # the function's client
    assert own.mechanism == "SCRAM-SHA-256-PLUS"  # bound to the TLS channel
    # A bound parameter comes back byte for byte (this one the server does log: a test's own statement).
    assert own.query("SELECT current_user, $1::text", password) == [[OWNER, password]]
    own.close()
    with pytest.raises(services.SqlError, match="password authentication failed"):
        server.sql_as("moodle", password + "x", "SELECT 1", database)


def test_a_database_restored_from_another_site_is_taken_over(
    server: services.Postgres, aws: object, database: str
) -> None:
    """Its objects belong to the old site's roles: all of them become the owner role's."""
    server.sql_as(MASTER["username"], MASTER["password"],
                  "CREATE ROLE oldsite LOGIN PASSWORD 'old-1'; CREATE ROLE oldsite_reader LOGIN PASSWORD 'old-2';"
                  " GRANT oldsite TO CURRENT_USER; GRANT oldsite_reader TO CURRENT_USER", database)  # fmt: skip
    server.sql(
        f'ALTER DATABASE "{database}" OWNER TO oldsite; ALTER SCHEMA public OWNER TO oldsite', database
    )
    server.sql_as("oldsite", "old-1",
                  "CREATE TABLE mdl_user (id bigserial PRIMARY KEY, username text);"
                  " CREATE TABLE mdl_log (id bigint GENERATED ALWAYS AS IDENTITY, what text);"
                  " CREATE SEQUENCE mdl_standalone_seq; CREATE VIEW mdl_user_names AS SELECT username FROM mdl_user;"
                  " INSERT INTO mdl_user (username) VALUES ('admin')", database)  # fmt: skip
    server.sql_as("oldsite", "old-1", "GRANT CREATE ON SCHEMA public TO oldsite_reader", database)
    server.sql_as("oldsite_reader", "old-2", "CREATE TABLE mdl_other (id int)", database)
    assert owners(server, database) == {"oldsite", "oldsite_reader"}
    config = settings(server, aws, database)
    fn.ensure_site(aws, config)
    assert owners(server, database) == {OWNER}
    sequences = "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relkind = 'S'"
    assert server.sql(sequences, database) == OWNER
    assert server.sql_as("moodle", "first-1", "SELECT username FROM mdl_user_names", database) == "admin"
    server.sql_as("moodle", "first-1", "INSERT INTO mdl_log (what) VALUES ('taken over')", database)


def test_an_existing_site_migrates_while_its_sessions_stay_up(
    server: services.Postgres, aws: object, database: str
) -> None:
    """Before: `moodle` logs in and owns everything (the previous design). A node's session open across
    the update keeps reading, writing and altering tables; new sessions start as the owner role."""
    server.sql_as(MASTER["username"], MASTER["password"],
                  "CREATE ROLE moodle LOGIN PASSWORD 'first-1'; GRANT moodle TO CURRENT_USER", database)  # fmt: skip
    server.sql(f'ALTER DATABASE "{database}" OWNER TO moodle; ALTER SCHEMA public OWNER TO moodle', database)
    server.sql_as(
        "moodle", "first-1", "CREATE TABLE mdl_course (id bigserial PRIMARY KEY, name text)", database
    )
    node = fn.Connection(server.host, server.port, "moodle", "first-1", database)
    assert node.query("SELECT current_user") == [["moodle"]]
    fn.ensure_site(aws, settings(server, aws, database))
    assert owners(server, database) == {OWNER}
    node.execute("INSERT INTO mdl_course (name) VALUES ('during the update')")
    node.execute("ALTER TABLE mdl_course ADD COLUMN shortname text")  # an upgrade step in an old session
    assert node.query("SELECT count(*) FROM mdl_course") == [["1"]]
    node.close()
    assert server.sql_as("moodle", "first-1", "SELECT current_user", database) == OWNER


def test_a_busy_table_is_waited_for_and_the_handover_completes(
    server: services.Postgres, aws: object, database: str
) -> None:
    """A node's transaction holds a table for longer than one lock wait (LOCK_TIMEOUT): the function gives
    way and tries again rather than queue the site's queries behind it or fail the stack update."""
    server.sql_as(MASTER["username"], MASTER["password"],
                  "CREATE ROLE moodle LOGIN PASSWORD 'first-1'; GRANT moodle TO CURRENT_USER", database)  # fmt: skip
    server.sql(f'ALTER DATABASE "{database}" OWNER TO moodle; ALTER SCHEMA public OWNER TO moodle', database)
    server.sql_as("moodle", "first-1", "CREATE TABLE mdl_logstore (id bigserial PRIMARY KEY)", database)
    busy = fn.Connection(server.host, server.port, "moodle", "first-1", database)
    busy.execute("BEGIN; SELECT count(*) FROM mdl_logstore")  # holds ACCESS SHARE until COMMIT
    release = threading.Timer(5, busy.execute, ["COMMIT"])
    release.start()
    started = time.monotonic()
    try:
        fn.ensure_site(aws, settings(server, aws, database))
    finally:
        release.join()
        busy.close()
    assert time.monotonic() - started >= 4  # it did wait for the lock, through several attempts
    assert owners(server, database) == {OWNER}


def test_a_rotation_keeps_the_previous_credentials_working(
    server: services.Postgres, aws: object, database: str
) -> None:
    config = settings(server, aws, database)
    fn.ensure_site(aws, config)
    first = current(aws, config["AppSecretArn"])
    server.sql_as(
        "moodle", "first-1", "CREATE TABLE mdl_sessions (id bigserial PRIMARY KEY, sid text)", database
    )
    rotate(aws, config, TOKENS[0])
    second = current(aws, config["AppSecretArn"])
    assert second["username"] == "moodle_clone" and second["password"] != first["password"]
    assert len(second["password"]) == 40 and second["password"].isalnum() and second["password"].isascii()
    for login in (first, second):  # the nodes not yet refreshed, and the refreshed ones
        write = f"INSERT INTO mdl_sessions (sid) VALUES ('{login['username']}')"
        assert server.sql_as(login["username"], login["password"], "SELECT current_user", database) == OWNER
        server.sql_as(login["username"], login["password"], write, database)
        server.sql_as(
            login["username"], login["password"], f"CREATE TABLE t_{login['username']} (id int)", database
        )
    assert (
        server.sql_as(second["username"], second["password"], "SELECT count(*) FROM mdl_sessions", database)
        == "2"
    )
    assert owners(server, database) == {OWNER}
    fn.ensure_site(aws, config)  # a stack update between rotations keeps both logins
    assert server.sql_as(first["username"], first["password"], "SELECT 1", database) == "1"
    rotate(aws, config, TOKENS[1])
    third = current(aws, config["AppSecretArn"])
    assert third["username"] == "moodle" and third["password"] not in (first["password"], second["password"])
    with pytest.raises(services.SqlError, match="password authentication failed"):
        server.sql_as("moodle", first["password"], "SELECT 1", database)  # two rotations old: gone
    for login in (second, third):
        assert (
            server.sql_as(login["username"], login["password"], "SELECT count(*) FROM mdl_sessions", database)
            == "2"
        )
    rotate(aws, config, TOKENS[1])  # a retried rotation changes nothing
    assert current(aws, config["AppSecretArn"]) == third


class RelayedConnection(fn.Connection):
    """What the server sees from a relay that terminates TLS with a certificate of its own."""

    def _channel_binding(self) -> bytes:
        return bytes(32)


def test_a_login_through_a_relay_is_refused_by_channel_binding(
    server: services.Postgres, aws: object, database: str
) -> None:
    with pytest.raises(fn.PgError, match="channel binding"):
        RelayedConnection(server.host, server.port, MASTER["username"], MASTER["password"], database)
    assert fn.Connection(server.host, server.port, MASTER["username"], MASTER["password"], database).query(
        "SELECT 1"
    ) == [["1"]]


def test_the_rotation_setup_test_checks_the_current_login(
    server: services.Postgres, aws: object, database: str
) -> None:
    """RotateSecret without an immediate rotation runs testSecret alone, with a token of its own."""
    config = settings(server, aws, database)
    fn.ensure_site(aws, config)
    fn.rotate(aws, config, config["AppSecretArn"], "33333333-3333-4333-8333-333333333333", "testSecret")
    server.sql("ALTER ROLE moodle RESET role", database)
    with pytest.raises(RuntimeError, match="starts as moodle, not moodle_owner"):
        fn.rotate(aws, config, config["AppSecretArn"], "33333333-3333-4333-8333-333333333333", "testSecret")


def test_a_wrong_master_password_fails_with_one_clear_line(
    server: services.Postgres, aws: object, database: str
) -> None:
    config = settings(server, aws, database, "app-secret-value")
    wrong = "not-the-master's-password"
    aws.put_secret_value(SecretId=config["MasterSecretArn"],
                         SecretString=json.dumps({**MASTER, "password": wrong}))  # fmt: skip
    with pytest.raises(RuntimeError) as failure:
        fn.ensure_site(aws, config)
    message = str(failure.value)
    assert "28P01" in message and "password authentication failed" in message, message
    assert "\n" not in message and wrong not in message and "app-secret-value" not in message
