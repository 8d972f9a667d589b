"""Custom resource: Moodle's PostgreSQL role, made with the master secret so no web node ever reads it.

Runs the statements through the RDS Data API (no network path to the cluster needed). PostgreSQL quotes
every name and the password itself (format() with %I and %L), from bound parameters. PostgreSQL 16+ gives
the creator of a role ADMIN on it but not SET, and changing an owner needs SET: the master user (RDS's is
not a superuser) is made a member of the role first. Safe to run again: the role's password follows its
secret.
"""

import json

import boto3

PLAN = (
    "SELECT format(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :user)"
    " THEN 'ALTER ROLE %I LOGIN PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END, :user, :password),"
    " format('GRANT %I TO CURRENT_USER', :user)"
)
# A database restored from another site's snapshot belongs to that site's users. The master is made a
# member of each current owner (changing an owner needs SET on both sides); built-in pg_ roles are skipped.
TABLES = "FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
OWNERS = (
    "SELECT format('GRANT %I TO CURRENT_USER', o) FROM (SELECT pg_get_userbyid(datdba) o FROM pg_database"
    " WHERE datname = current_database() UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace"
    f" WHERE nspname = 'public' UNION SELECT pg_get_userbyid(relowner) {TABLES}) s"
    " WHERE o NOT IN (:user, CURRENT_USER) AND o NOT LIKE 'pg\\_%'"
)
# Then Moodle's role gets the database, its schema and every table (with the sequences they own), in one
# block; nothing is left to do (NULL) for a new, empty database.
GIVE = (
    "SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :user),"
    " format('ALTER SCHEMA public OWNER TO %I', :user),"
    " 'DO $d$BEGIN ' || string_agg(format('ALTER TABLE public.%I OWNER TO %I;', relname, :user), ' ')"
    f" || ' END$d$' {TABLES} AND pg_get_userbyid(relowner) <> :user"
)


def ensure_role(data, secrets, props):
    """Create or update the role named in the app secret and give it the database."""
    app = json.loads(secrets.get_secret_value(SecretId=props["AppSecretArn"])["SecretString"])

    def run(sql, **values):
        return data.execute_statement(
            resourceArn=props["ClusterArn"],
            secretArn=props["MasterSecretArn"],
            database=props["Database"],
            sql=sql,
            parameters=[{"name": k, "value": {"stringValue": v}} for k, v in values.items()],
        )

    try:
        for plan, values in ((PLAN, {"password": app["password"]}), (OWNERS, {}), (GIVE, {})):
            for row in run(plan, user=app["username"], **values)["records"]:
                for field in row:
                    if "stringValue" in field:
                        run(field["stringValue"])
    except Exception as error:
        # An error may quote the statement: never let the password reach CloudFormation's events.
        raise RuntimeError(str(error).replace(app["password"], "[password]")) from None


def handler(event, context):
    import cfnresponse  # provided by CloudFormation for inline (ZipFile) code

    status, reason = cfnresponse.SUCCESS, None
    try:
        if event["RequestType"] in ("Create", "Update"):
            ensure_role(boto3.client("rds-data"), boto3.client("secretsmanager"), event["ResourceProperties"])
    except Exception as error:
        status, reason = cfnresponse.FAILED, f"{type(error).__name__}: {error}"[:1000]
    cfnresponse.send(event, context, status, {}, "moodle-database-role", reason=reason)
