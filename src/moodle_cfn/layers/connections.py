"""The database connections the largest web fleet could open, against what the chosen Aurora size allows.

Each PHP-FPM worker of a web node keeps a persistent connection (config.php: dbpersist) to the writer and
one to the reader endpoint, which is the writer while the cluster has no replica. A node runs
`pm.max_children` workers (sized at boot from its memory and vCPUs; node_sizing.py applies the same rule to
WebInstanceType), plus its cron run (moodle-cron.service runs one cron.php at a time), its metrics agent
and a setup or upgrade CLI run, each on the writer alone. At WebMaxSize nodes that must fit in the
writer's max_connections, less what AWS keeps for itself.

Aurora PostgreSQL's default max_connections is LEAST({DBInstanceClassMemory/9531392}, 5000) (Aurora User
Guide, "Maximum connections to an Aurora PostgreSQL DB instance", AuroraPostgreSQL.Managing.html; its
example: db.r4.large, 15.25 GiB, counted as 15.25 * 10^9 bytes, gives 1600), and "at least 3 more
connections" must be left "to support AWS automation" (same page). Serverless v2 derives it from the
maximum ACUs (about 2 GiB each), and with a minimum of 0 or 0.5 ACU caps it at 2,000 (AWS re:Post,
"Working of max_connections for Amazon Aurora PostgreSQL Serverless"; its 0.5-1 ACU example shows 189,
below the formula's 209 for 2 GiB: DBInstanceClassMemory is less than the nominal memory, so nominal
memory is counted at 90% here).
"""

from __future__ import annotations

from collections.abc import Mapping

from moodle_cfn.checks import FindingCheck, number
from moodle_cfn.layers.auto_scaling import WEB_MAX_SIZE
from moodle_cfn.layers.database import (
    DATABASE_CAPACITY_MODE,
    DATABASE_INSTANCE_CLASS,
    DATABASE_MAX_CAPACITY,
    DATABASE_MIN_CAPACITY,
)
from moodle_cfn.layers.web_node import WEB_INSTANCE_TYPE
from moodle_cfn.node_sizing import instance_fpm_workers

BYTES_PER_CONNECTION = 9531392
CONNECTIONS_CEILING = 5000
SERVERLESS_LOW_MINIMUM_CEILING = 2000
AWS_RESERVED = 3
# DBInstanceClassMemory is the nominal memory less what the instance keeps for itself (see above).
USABLE_MEMORY = 0.9
GIB_PER_ACU = 2
# Nominal memory (GiB) of the instance classes DatabaseInstanceClass admits (Aurora User Guide, "Hardware
# specifications for DB instance classes for Aurora").
CLASS_MEMORY_GIB = {
    "db.t4g.medium": 4,
    "db.t4g.large": 8,
    **{f"db.{family}.{size}": gib for family in ("r7g", "r6g", "r6i")
       for size, gib in (("large", 16), ("xlarge", 32), ("2xlarge", 64), ("4xlarge", 128), ("8xlarge", 256))},
}  # fmt: skip
# Besides its PHP-FPM workers, each node: one cron.php, one setup or upgrade CLI run, one metrics agent
# run (moodle-metrics.timer, every minute).
PER_NODE_CLI = 3
# A worker connects to the writer and to the reader endpoint (config.php: dboptions readonly; command-line
# runs use the writer alone). While the cluster has no replica (a failover, a replaced reader) the reader
# endpoint is the writer, so the writer may hold both.
CONNECTIONS_PER_WORKER = 2


def fpm_max_children(values: Mapping[str, str]) -> int:
    """pm.max_children of a node of the chosen WebInstanceType."""
    return instance_fpm_workers(values[WEB_INSTANCE_TYPE.name])


def max_connections(values: Mapping[str, str]) -> tuple[int, str]:
    """The writer's default max_connections for these params, and where it comes from."""
    if values[DATABASE_CAPACITY_MODE.name] == "serverless-v2":
        acus = number(values, DATABASE_MAX_CAPACITY.name)
        memory = acus * GIB_PER_ACU
        ceiling = (
            SERVERLESS_LOW_MINIMUM_CEILING
            if number(values, DATABASE_MIN_CAPACITY.name) <= 0.5
            else CONNECTIONS_CEILING
        )
        where = f"{DATABASE_MAX_CAPACITY.name} {acus:g} ACU"
    else:
        instance_class = values[DATABASE_INSTANCE_CLASS.name]
        memory = CLASS_MEMORY_GIB[instance_class]
        ceiling = CONNECTIONS_CEILING
        where = instance_class
    return min(int(memory * 1e9 * USABLE_MEMORY / BYTES_PER_CONNECTION), ceiling), where


def fleet_connections(values: Mapping[str, str]) -> int:
    """Connections WebMaxSize nodes could hold at once."""
    return int(number(values, WEB_MAX_SIZE.name)) * per_node(values)


def per_node(values: Mapping[str, str]) -> int:
    """Connections one node may hold on the writer."""
    return fpm_max_children(values) * CONNECTIONS_PER_WORKER + PER_NODE_CLI


def connections_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """WebMaxSize too large for the database's max_connections."""
    allowed, where = max_connections(values)
    budget = allowed - AWS_RESERVED
    needed = fleet_connections(values)
    if needed <= budget:
        return None
    nodes = int(number(values, WEB_MAX_SIZE.name))
    fits = budget // per_node(values)
    return WEB_MAX_SIZE.name, (
        f"{nodes} {values[WEB_INSTANCE_TYPE.name]} web nodes x ({fpm_max_children(values)} PHP-FPM workers x "
        f"{CONNECTIONS_PER_WORKER} persistent connections (writer and reader endpoint) + {PER_NODE_CLI} CLI) = "
        f"{needed} connections, more than the {budget} that {where} allows (max_connections {allowed} less "
        f"{AWS_RESERVED} for AWS); use at most {fits} nodes or a larger database"
    )


CHECKS = (FindingCheck(connections_problem),)
