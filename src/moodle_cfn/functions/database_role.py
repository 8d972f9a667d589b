"""Moodle's PostgreSQL roles, kept by one function in the VPC: a custom resource and a rotation function.

Roles (AWS's "alternating users" rotation strategy, Secrets Manager User Guide,
https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotation-strategy.html): a NOLOGIN owner role owns
the database and every Moodle object; two login roles (USER and USER_clone) are members of it and start
every session as it (ALTER ROLE ... SET role), so whatever either creates is the owner's. Each rotation gives
the login role *not* in use a new password and makes it current: nodes holding the previous credentials keep
working until the next rotation.

No Data API and no driver: a small PostgreSQL client (protocol 3.0, https://www.postgresql.org/docs/current/
protocol.html) over TLS with SCRAM-SHA-256 (RFC 5802/7677), bound to the TLS channel when the server offers
SCRAM-SHA-256-PLUS. Names and password verifiers reach SQL only through PostgreSQL's own format(%I, %L) from
bound parameters (extended protocol); the plaintext password never leaves this function: the role gets a
SCRAM verifier computed here, as psql's \\password does.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import string
import stringprep
import struct
import time
import unicodedata
from secrets import choice

ITERATIONS = 4096
PASSWORD_LENGTH = 40
PASSWORD_ALPHABET = string.ascii_letters + string.digits
CONNECT_SECONDS = 15
# Below the function's timeout (300 s), so a statement stuck behind a live site's locks fails and is reported
# to CloudFormation, instead of the function dying silently and CloudFormation waiting an hour.
STATEMENT_SECONDS = 150
# An ALTER waiting for a table's lock queues every later query of that table behind it: on a live site each
# waits briefly, gives way, and tries again (SQLSTATE 55P03, lock_not_available).
LOCK_TIMEOUT = "2s"
LOCK_ATTEMPTS = 20
LOCK_PAUSE_SECONDS = 1


class PgError(Exception):
    """An ErrorResponse: its fields by code letter (S severity, C SQLSTATE, M message)."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', 'ERROR')} {fields.get('C', '')}: {fields.get('M', '')}")


def saslprep(password):
    """RFC 4013 as PostgreSQL applies it; a password it rejects is used as is, as the server does."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
                  stringprep.in_table_a1)  # fmt: skip
    bad = any(test(c) for c in text for test in prohibited)
    bidi = any(stringprep.in_table_d1(c) for c in text)
    if bad or (bidi and (any(stringprep.in_table_d2(c) for c in text) or not (
            stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])))):  # fmt: skip
        return password.encode()
    return text.encode()


def scram_keys(password, salt, iterations):
    """(ClientKey, ServerKey) of RFC 5802."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    return (hmac.digest(salted, b"Client Key", "sha256"), hmac.digest(salted, b"Server Key", "sha256"))


def verifier(password, salt=None):
    """The SCRAM-SHA-256 secret PostgreSQL stores for a password (as libpq's PQencryptPasswordConn makes it)."""
    salt = salt or os.urandom(16)
    client, server = scram_keys(password, salt, ITERATIONS)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(hashlib.sha256(client).digest())}:{b64(server)}"


def scram_client_final(password, first_bare, server_first, binding):
    """The client-final message answering `server_first`, and the server-final that must come back
    (RFC 5802 section 3, with SHA-256 as RFC 7677)."""
    fields = dict(item.split(b"=", 1) for item in server_first.split(b","))
    if not fields[b"r"].startswith(first_bare.split(b",r=", 1)[1]):
        raise RuntimeError("the server's SCRAM nonce does not extend ours")
    client_key, server_key = scram_keys(password, base64.b64decode(fields[b"s"]), int(fields[b"i"]))
    without_proof = b"c=" + base64.b64encode(binding) + b",r=" + fields[b"r"]
    message = first_bare + b"," + server_first + b"," + without_proof
    signature = hmac.digest(hashlib.sha256(client_key).digest(), message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_signature = hmac.digest(server_key, message, "sha256")
    return without_proof + b",p=" + base64.b64encode(proof), b"v=" + base64.b64encode(server_signature)


class Connection:
    """One TLS session as one role; query() runs a statement with bound text parameters."""

    def __init__(self, host, port, user, password, database):
        raw = socket.create_connection((host, int(port)), CONNECT_SECONDS)
        try:
            raw.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
            if raw.recv(1) != b"S":
                raise RuntimeError(f"{host}:{port} refused TLS")
            # No CA to verify RDS's certificate with here: SCRAM's channel binding and the server's own
            # signature below are what prove the peer holds the role's verifier.
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            self.sock = context.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        self.stream = self.sock.makefile("rb")
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in (
            ("user", user), ("database", database), ("client_encoding", "UTF8"),
            ("application_name", "moodle-cfn-database-role")))  # fmt: skip
        self.sock.sendall(struct.pack("!ii", 9 + len(params), 196608) + params + b"\0")
        try:
            self._authenticate(password)
            self._until_ready()
            self.sock.settimeout(STATEMENT_SECONDS + CONNECT_SECONDS)
        except BaseException:
            self.close()
            raise

    def close(self):
        self.sock.close()

    def _send(self, kind, body):
        self.sock.sendall(kind + struct.pack("!i", 4 + len(body)) + body)

    def _receive(self):
        head = self.stream.read(5)
        if len(head) < 5:
            raise RuntimeError("the server closed the connection")
        kind, size = head[:1], struct.unpack("!i", head[1:])[0]
        body = self.stream.read(size - 4)
        if kind == b"E":
            raise PgError({f[:1]: f[1:] for f in body.decode(errors="replace").split("\0") if f})
        return kind, body

    def _auth_message(self, code):
        kind, body = self._receive()
        got = struct.unpack("!i", body[:4])[0] if kind == b"R" else None
        if got != code:
            raise RuntimeError(f"unexpected authentication message {kind!r} {got}")
        return body[4:]

    def _authenticate(self, password):
        kind, body = self._receive()
        code = struct.unpack("!i", body[:4])[0] if kind == b"R" else None
        # SCRAM only: a server asking for no password, a cleartext or an MD5 one (which a relay could
        # replay) is refused; Aurora PostgreSQL 14+ stores SCRAM verifiers (password_encryption default).
        if code != 10:
            raise RuntimeError(f"refusing authentication request {kind!r} {code}: only SCRAM-SHA-256 is used")
        mechanisms = body[4:].split(b"\0")
        nonce = base64.b64encode(os.urandom(18))
        if b"SCRAM-SHA-256-PLUS" in mechanisms:
            mechanism, header = b"SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,"
            binding = header + self._channel_binding()
        else:
            mechanism, header = b"SCRAM-SHA-256", b"y,,"
            binding = header
        self.mechanism = mechanism.decode()
        first_bare = b"n=,r=" + nonce
        first = header + first_bare
        self._send(b"p", mechanism + b"\0" + struct.pack("!i", len(first)) + first)
        final, expected = scram_client_final(password, first_bare, self._auth_message(11), binding)
        self._send(b"p", final)
        if not hmac.compare_digest(self._auth_message(12).split(b",")[0], expected):
            raise RuntimeError("the server did not prove it knows the role's password")
        self._auth_message(0)

    def _channel_binding(self):
        """tls-server-end-point (RFC 5929): SHA-256 of the server's certificate, which RDS signs with SHA-256
        (rds-ca-rsa2048-g1). A relay between us and the server presents another certificate: the server
        then refuses the proof."""
        return hashlib.sha256(self.sock.getpeercert(True)).digest()

    def _until_ready(self, rows=None):
        error = None
        while True:
            try:
                kind, body = self._receive()
            except PgError as e:
                error = error or e
                continue
            if kind == b"D" and rows is not None:
                rows.append(self._row(body))
            elif kind == b"Z":
                if error:
                    raise error
                return rows

    @staticmethod
    def _row(body):
        values, at = [], 2
        for _ in range(struct.unpack("!h", body[:2])[0]):
            size = struct.unpack("!i", body[at : at + 4])[0]
            at += 4
            values.append(None if size < 0 else body[at : at + size].decode())
            at += max(size, 0)
        return values

    def query(self, sql, *params):
        """Rows of one statement, its $1.. bound as text (Parse/Bind/Execute: never spliced into the SQL)."""
        types = struct.pack("!h", len(params)) + struct.pack(f"!{len(params)}i", *[25] * len(params))
        self._send(b"P", b"\0" + sql.encode() + b"\0" + types)
        values = b"".join(struct.pack("!i", len(v.encode())) + v.encode() for v in params)
        self._send(b"B", b"\0\0" + struct.pack("!hh", 0, len(params)) + values + struct.pack("!h", 0))
        self._send(b"E", b"\0" + struct.pack("!i", 0))
        self._send(b"S", b"")
        return self._until_ready([])

    def execute(self, sql):
        """Run SQL text with no parameters (simple query protocol); it may hold several statements."""
        self._send(b"Q", sql.encode() + b"\0")
        self._until_ready()

    def run_plan(self, sql, *params):
        """Run every statement the plan query returns (NULLs skipped), each in its own transaction, so a
        table's lock is held only while its own statement runs: PostgreSQL wrote and quoted them."""
        for row in self.query(sql, *params):
            for statement in filter(None, row):
                for attempt in range(1, LOCK_ATTEMPTS + 1):
                    try:
                        self.execute(statement)
                        break
                    except PgError as error:
                        if error.fields.get("C") != "55P03" or attempt == LOCK_ATTEMPTS:
                            raise
                        time.sleep(LOCK_PAUSE_SECONDS)


OWNER = (
    "SELECT format(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) THEN 'ALTER ROLE %I NOLOGIN'"
    " ELSE 'CREATE ROLE %I NOLOGIN' END, $1), format('GRANT %I TO CURRENT_USER', $1)"
)
# A login role: its password (a verifier), membership of the owner, sessions that start as the owner. The
# master is made a member of it too: taking its objects needs that (PostgreSQL 16+ gives a role's creator
# ADMIN on it, not SET).
LOGIN = (
    "SELECT format(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
    " THEN 'ALTER ROLE %I LOGIN PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END, $1, $2),"
    " format('GRANT %I TO %I', $3, $1), format('ALTER ROLE %I SET role = %I', $1, $3),"
    " format('GRANT %I TO CURRENT_USER', $1)"
)
# A database restored from another site's snapshot belongs to that site's roles, and an existing site's to
# its login role: the master joins each current owner (changing an owner needs privileges on both sides);
# built-in pg_ roles are skipped.
RELATIONS = (
    "FROM pg_class c WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S')"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
    " AND d.deptype IN ('a', 'i'))"  # a sequence of a serial or identity column follows its table
)
OWNERS = (
    "SELECT format('GRANT %I TO CURRENT_USER', o) FROM (SELECT pg_get_userbyid(datdba) o FROM pg_database"
    " WHERE datname = current_database() UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace"
    f" WHERE nspname = 'public' UNION SELECT pg_get_userbyid(relowner) {RELATIONS}) s"
    " WHERE o NOT IN ($1, CURRENT_USER) AND o NOT LIKE 'pg\\_%'"
)
# Then the owner role gets the database, its public schema and every relation: one statement each.
GIVE = (
    "SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), $1)"
    " UNION ALL SELECT format('ALTER SCHEMA public OWNER TO %I', $1)"
    f" UNION ALL SELECT format('ALTER TABLE public.%I OWNER TO %I', relname, $1) {RELATIONS}"
    " AND pg_get_userbyid(relowner) <> $1"
)


def secret(secrets, arn, stage="AWSCURRENT", token=None):
    """A secret's JSON value at a stage (or version), or None when no version has that stage."""
    version = {"VersionId": token} if token else {"VersionStage": stage}
    try:
        return json.loads(secrets.get_secret_value(SecretId=arn, **version)["SecretString"])
    except secrets.exceptions.ResourceNotFoundException:
        return None


def as_master(secrets, settings):
    """A connection to the site's database as the master user."""
    master = secret(secrets, settings["MasterSecretArn"])
    return Connection(settings["Host"], settings["Port"], master["username"], master["password"],
                      settings["Database"])  # fmt: skip


def hiding(*passwords):
    """Re-raise any error with the given passwords blanked out, so none reaches CloudFormation's events."""

    class Hide:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, trace):
            if error is None:
                return False
            text = f"{kind.__name__}: {error}"
            for p in filter(None, passwords):
                text = text.replace(p, "[password]")
            raise RuntimeError(text) from None

    return Hide()


def set_logins(connection, owner, credentials):
    """The owner role, then each login role at its password."""
    connection.run_plan(OWNER, owner)
    for c in credentials:
        connection.run_plan(LOGIN, c["username"], verifier(c["password"]), owner)


def ensure_site(secrets, settings):
    """The custom resource: the owner role, the login roles of the app secret's current and previous
    versions at their passwords, and the database with every relation in it handed to the owner."""
    owner = settings["OwnerRole"]
    current = secret(secrets, settings["AppSecretArn"])
    previous = secret(secrets, settings["AppSecretArn"], "AWSPREVIOUS")
    logins = {c["username"]: c for c in (previous, current) if c}  # the current one wins a shared name
    with hiding(*(c["password"] for c in logins.values())):
        connection = as_master(secrets, settings)
        try:
            # A live site's queries hold its tables: each lock is waited for briefly, then again (run_plan).
            connection.execute(
                f"SET lock_timeout = '{LOCK_TIMEOUT}'; SET statement_timeout = '{STATEMENT_SECONDS}s'"
            )
            set_logins(connection, owner, logins.values())
            connection.run_plan(OWNERS, owner)
            connection.run_plan(GIVE, owner)
        finally:
            connection.close()


def other_login(username):
    """The alternate of a login role: USER <-> USER_clone."""
    return username[: -len("_clone")] if username.endswith("_clone") else username + "_clone"


def rotate(secrets, settings, arn, token, step):
    """One step of Secrets Manager's rotation of the app secret (alternating users)."""
    if step == "createSecret":
        if secret(secrets, arn, token=token) is None:
            current = secret(secrets, arn)
            # Letters and digits, as the stack's first password: safe unquoted in config.php and libpq.
            password = "".join(choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
            pending = {**current, "username": other_login(current["username"]), "password": password}
            secrets.put_secret_value(SecretId=arn, ClientRequestToken=token,
                                     SecretString=json.dumps(pending), VersionStages=["AWSPENDING"])  # fmt: skip
    elif step in ("setSecret", "testSecret"):
        # RotateSecret with RotateImmediately false runs testSecret alone, on a version Secrets Manager makes
        # (RotateSecret API reference): with no such version, the current one is what can be tested.
        pending = secret(secrets, arn, token=token) or (None if step == "setSecret" else secret(secrets, arn))
        if pending is None:
            raise RuntimeError(f"no version {token} of {arn} to set")
        with hiding(pending["password"]):
            if step == "setSecret":
                connection = as_master(secrets, settings)
                try:
                    set_logins(connection, settings["OwnerRole"], [pending])
                finally:
                    connection.close()
            else:
                connection = Connection(settings["Host"], settings["Port"], pending["username"],
                                        pending["password"], settings["Database"])  # fmt: skip
                try:
                    who = connection.query("SELECT current_user")[0][0]
                finally:
                    connection.close()
                if who != settings["OwnerRole"]:
                    raise RuntimeError(f"{pending['username']} starts as {who}, not {settings['OwnerRole']}")
    elif step == "finishSecret":
        versions = secrets.describe_secret(SecretId=arn)["VersionIdsToStages"]
        old = next((v for v, stages in versions.items() if "AWSCURRENT" in stages), None)
        if old != token:
            secrets.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT",
                                                MoveToVersionId=token, RemoveFromVersionId=old)  # fmt: skip
    else:
        raise ValueError(f"unknown rotation step {step!r}")


def handler(event, context):
    import boto3

    secrets = boto3.client("secretsmanager")
    if "Step" in event:  # Secrets Manager's rotation; its settings are the function's environment
        rotate(secrets, os.environ, event["SecretId"], event["ClientRequestToken"], event["Step"])
        return
    import cfnresponse  # provided by CloudFormation for inline (ZipFile) code

    status, reason = cfnresponse.SUCCESS, None
    try:
        if event["RequestType"] in ("Create", "Update"):
            ensure_site(secrets, event["ResourceProperties"])
    except Exception as error:
        status, reason = cfnresponse.FAILED, f"{type(error).__name__}: {error}"[:1000]
    cfnresponse.send(event, context, status, {}, "moodle-database-role", reason=reason)
