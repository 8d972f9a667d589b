"""Cache layer: two separate ElastiCache clusters, one for Moodle sessions and one for the application cache.

Separate on purpose: purging Moodle's application cache (MUC) on a shared server would log every user out.
Each cluster picks its engine on its own:

- memcached (default, as in the reference architecture): an AWS::ElastiCache::CacheCluster in cross-AZ
  mode. CloudFormation exposes only its configuration endpoint, while Moodle's session handler wants the
  node list. Web nodes discover it from the configuration endpoint with memcached's auto-discovery command
  (`config get cluster`), or with `aws elasticache describe-cache-clusters --show-cache-node-info
  --cache-cluster-id <SessionCacheId>`, at boot and again after a resize (see the README).
  No TLS and no at-rest encryption: ElastiCache offers no at-rest encryption for memcached, and PHP's
  memcached client on Amazon Linux 2023 has no TLS.
- valkey: an AWS::ElastiCache::ReplicationGroup with a primary and replicas in different AZs, automatic
  failover, encryption at rest and TLS required in transit, and an AUTH token generated into Secrets
  Manager (never a parameter; the cluster reads it through a dynamic reference).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from troposphere import Equals, GetAtt, If, Output, Parameter, Ref, Sub, Template
from troposphere.elasticache import CacheCluster, ReplicationGroup, SubnetGroup
from troposphere.secretsmanager import GenerateSecretString, Secret

from moodle_cfn.azs import AVAILABILITY_ZONE_COUNT
from moodle_cfn.checks import CrossCheck, number
from moodle_cfn.common import (
    GROUP_CACHE,
    SITE_NAME,
    OperatorParameter,
    declare_parameters,
    number_parameter,
    tags,
)
from moodle_cfn.encryption import DATA_KMS_KEY_ARN, add_key_condition, customer_key, generated_secret
from moodle_cfn.layers.address_plan import DATA
from moodle_cfn.layers.network import as_parameter
from moodle_cfn.layers.security_groups import CACHE_SG, MEMCACHED_PORT, VALKEY_PORT

MEMCACHED_VERSION = "1.6.22"
VALKEY_VERSION = "8.1"
ENGINES = ["memcached", "valkey"]
NODE_TYPES = [
    "cache.t4g.micro",
    "cache.t4g.small",
    "cache.t4g.medium",
    *(
        f"cache.{family}.{size}"
        for family in ("m7g", "r7g", "m6g", "r6g")
        for size in ("large", "xlarge", "2xlarge")
    ),
]
# A valkey replication group without shards holds a primary and at most five replicas.
MAX_VALKEY_NODES = 6
NOT_USED = "none"  # an output's value when its engine is not the one chosen (outputs cannot be empty)

CACHE_MAINTENANCE_WINDOW = OperatorParameter(
    Parameter(
        "CacheMaintenanceWindow",
        Type="String",
        Default="sun:04:00-sun:05:00",
        AllowedPattern=r"^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-"
        r"(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$",
        ConstraintDescription="ddd:hh24:mi-ddd:hh24:mi in UTC, such as sun:04:00-sun:05:00.",
        Description="Weekly maintenance window of both cache clusters, UTC. A memcached node replaced in "
        "maintenance loses its sessions; pick an hour nobody is logged in.",
    ),
    label="Maintenance window (UTC)",
    group=GROUP_CACHE,
)
CACHE_SNAPSHOT_RETENTION_DAYS = number_parameter(
    "CacheSnapshotRetentionDays",
    1,
    0,
    35,
    "Days of daily snapshots of a valkey cluster (0 turns them off). Caches rebuild themselves; "
    "a snapshot only spares users a login after a disaster.",
    label="Valkey snapshot retention (days)",
    group=GROUP_CACHE,
)


@dataclass(frozen=True)
class CacheRole:
    """One of the two clusters: what it holds, and the names of its parameters, resources and outputs."""

    key: str
    purpose: str
    default_node_type: str
    default_nodes: int

    @property
    def is_valkey(self) -> str:
        """Name of the condition "this cluster runs valkey"."""
        return f"{self.key}CacheIsValkey"

    @property
    def is_memcached(self) -> str:
        """Name of the condition "this cluster runs memcached"."""
        return f"{self.key}CacheIsMemcached"

    @property
    def engine(self) -> OperatorParameter:
        """Engine choice."""
        return _role_parameters(self)[0]

    @property
    def node_type(self) -> OperatorParameter:
        """Node type."""
        return _role_parameters(self)[1]

    @property
    def nodes(self) -> OperatorParameter:
        """Node count: memcached nodes, or valkey primary plus replicas."""
        return _role_parameters(self)[2]

    def output(self, what: str) -> str:
        """Name of one of this cluster's outputs, e.g. output("Endpoint") -> SessionCacheEndpoint."""
        return f"{self.key}Cache{what}"


@functools.cache
def _role_parameters(role: CacheRole) -> tuple[OperatorParameter, OperatorParameter, OperatorParameter]:
    engine = OperatorParameter(
        Parameter(
            f"{role.key}CacheEngine",
            Type="String",
            Default="memcached",
            AllowedValues=ENGINES,
            Description=f"Engine of the {role.purpose} cluster: memcached {MEMCACHED_VERSION} (nodes in every AZ) "
            f"or valkey {VALKEY_VERSION} (primary and replicas with failover, encrypted, TLS).",
        ),
        label=f"{role.key} cache engine",
        group=GROUP_CACHE,
    )
    node_type = OperatorParameter(
        Parameter(
            f"{role.key}CacheNodeType",
            Type="String",
            Default=role.default_node_type,
            AllowedValues=NODE_TYPES,
            Description=f"Node type of the {role.purpose} cluster (Graviton; t4g for development).",
        ),
        label=f"{role.key} cache node type",
        group=GROUP_CACHE,
    )
    nodes = number_parameter(
        f"{role.key}CacheNodes",
        role.default_nodes,
        2,
        MAX_VALKEY_NODES,
        f"Nodes in the {role.purpose} cluster: memcached nodes (at least one per AZ), or valkey "
        f"primary plus replicas (2 to {MAX_VALKEY_NODES}).",
        label=f"{role.key} cache nodes",
        group=GROUP_CACHE,
    )
    return engine, node_type, nodes


SESSION = CacheRole("Session", "Moodle session", "cache.t4g.small", 2)
APPLICATION = CacheRole("Application", "Moodle application cache (MUC)", "cache.t4g.medium", 2)
ROLES = (SESSION, APPLICATION)

PARAMETERS: tuple[OperatorParameter, ...] = (
    *(p for role in ROLES for p in (role.engine, role.node_type, role.nodes)),
    CACHE_MAINTENANCE_WINDOW,
    CACHE_SNAPSHOT_RETENTION_DAYS,
)


def _role_checks(role: CacheRole) -> tuple[CrossCheck, ...]:
    nodes, engine = role.nodes.name, role.engine.name
    return (
        CrossCheck(nodes, "must be a whole number", lambda v: number(v, nodes).is_integer()),
        CrossCheck(
            nodes,
            "memcached needs at least one node in every Availability Zone in use (AvailabilityZoneCount)",
            lambda v: v[engine] != "memcached" or number(v, nodes) >= number(v, AVAILABILITY_ZONE_COUNT.name),
        ),
        CrossCheck(
            nodes,
            f"a valkey cluster holds a primary and at most {MAX_VALKEY_NODES - 1} replicas ({MAX_VALKEY_NODES} nodes)",
            lambda v: v[engine] != "valkey" or number(v, nodes) <= MAX_VALKEY_NODES,
        ),
    )


CHECKS = tuple(check for role in ROLES for check in _role_checks(role))

DATA_SUBNET_IDS = as_parameter(DATA.ids_output)
CACHE_SECURITY_GROUP = as_parameter(CACHE_SG.id_output)


def add_conditions(template: Template) -> None:
    """Engine switches for each cluster, plus the customer-key condition."""
    add_key_condition(template)
    for role in ROLES:
        template.add_condition(role.is_valkey, Equals(Ref(role.engine.parameter), "valkey"))
        template.add_condition(role.is_memcached, Equals(Ref(role.engine.parameter), "memcached"))


def add_memcached(template: Template, role: CacheRole, subnet_group: SubnetGroup) -> CacheCluster:
    """A memcached cluster spread over the AZs of the subnet group (ElastiCache places nodes round the AZs)."""
    return template.add_resource(
        CacheCluster(
            f"{role.key}MemcachedCluster",
            Condition=role.is_memcached,
            # Cache contents rebuild themselves; nothing to snapshot (memcached cannot anyway).
            DeletionPolicy="Delete",
            UpdateReplacePolicy="Delete",
            Engine="memcached",
            EngineVersion=MEMCACHED_VERSION,
            CacheNodeType=Ref(role.node_type.parameter),
            NumCacheNodes=Ref(role.nodes.parameter),
            AZMode="cross-az",
            CacheSubnetGroupName=Ref(subnet_group),
            VpcSecurityGroupIds=[Ref(CACHE_SECURITY_GROUP)],
            Port=MEMCACHED_PORT,
            PreferredMaintenanceWindow=Ref(CACHE_MAINTENANCE_WINDOW.parameter),
            Tags=tags(f"{role.key.lower()}-cache"),
        )
    )


def add_valkey(
    template: Template, role: CacheRole, subnet_group: SubnetGroup
) -> tuple[ReplicationGroup, Secret]:
    """A valkey replication group with failover across AZs, encrypted, TLS only, AUTH token in Secrets Manager."""
    secret = template.add_resource(
        generated_secret(
            f"{role.key}ValkeyAuthSecret",
            Sub(f"AUTH token of the ${{{SITE_NAME.name}}} {role.purpose} valkey cluster"),
            GenerateSecretString(
                SecretStringTemplate="{}",
                GenerateStringKey="token",
                PasswordLength=64,
                # AUTH tokens allow printable ASCII except @, " and /: letters and digits are always safe.
                ExcludePunctuation=True,
            ),
            f"{role.key.lower()}-cache-auth",
            condition=role.is_valkey,
        )
    )
    group = template.add_resource(
        ReplicationGroup(
            f"{role.key}ValkeyReplicationGroup",
            Condition=role.is_valkey,
            DeletionPolicy="Delete",
            UpdateReplacePolicy="Delete",
            ReplicationGroupDescription=f"Moodle {role.purpose}",
            Engine="valkey",
            EngineVersion=VALKEY_VERSION,
            CacheNodeType=Ref(role.node_type.parameter),
            NumCacheClusters=Ref(role.nodes.parameter),
            AutomaticFailoverEnabled=True,
            MultiAZEnabled=True,
            CacheSubnetGroupName=Ref(subnet_group),
            SecurityGroupIds=[Ref(CACHE_SECURITY_GROUP)],
            Port=VALKEY_PORT,
            AtRestEncryptionEnabled=True,
            KmsKeyId=customer_key(),
            TransitEncryptionEnabled=True,
            TransitEncryptionMode="required",
            AuthToken=Sub("{{resolve:secretsmanager:${Secret}:SecretString:token}}", Secret=Ref(secret)),
            SnapshotRetentionLimit=Ref(CACHE_SNAPSHOT_RETENTION_DAYS.parameter),
            AutoMinorVersionUpgrade=True,
            PreferredMaintenanceWindow=Ref(CACHE_MAINTENANCE_WINDOW.parameter),
            Tags=tags(f"{role.key.lower()}-cache"),
        )
    )
    return group, secret


def add_outputs(
    template: Template, role: CacheRole, memcached: CacheCluster, valkey: ReplicationGroup, secret: Secret
) -> None:
    """What the web nodes need for this cluster, whichever engine it runs."""

    def per_engine(when_valkey: object, when_memcached: object) -> If:
        return If(role.is_valkey, when_valkey, when_memcached)

    for what, description, value in (
        ("Engine", "memcached or valkey", Ref(role.engine.parameter)),
        (
            "Endpoint",
            "memcached: the configuration endpoint (auto-discovery of the node list); valkey: the primary endpoint",
            per_engine(
                GetAtt(valkey, "PrimaryEndPoint.Address"), GetAtt(memcached, "ConfigurationEndpoint.Address")
            ),
        ),
        (
            "Port",
            "Port of that endpoint",
            per_engine(
                GetAtt(valkey, "PrimaryEndPoint.Port"), GetAtt(memcached, "ConfigurationEndpoint.Port")
            ),
        ),
        (
            "Id",
            "Cluster id (memcached: for describe-cache-clusters --show-cache-node-info) or replication group id",
            per_engine(Ref(valkey), Ref(memcached)),
        ),
        (
            "AuthSecretArn",
            f"valkey: secret holding the AUTH token; memcached: {NOT_USED}",
            per_engine(Ref(secret), NOT_USED),
        ),
    ):
        template.add_output(
            Output(role.output(what), Description=f"{role.key} cache: {description}", Value=value)
        )


def build() -> Template:
    """The cache nested template."""
    template = Template(
        Description="moodle-cfn cache: the Moodle session cache and the application cache (MUC)"
    )
    declare_parameters(template, (SITE_NAME, *PARAMETERS, DATA_KMS_KEY_ARN))
    template.add_parameter(DATA_SUBNET_IDS)
    template.add_parameter(CACHE_SECURITY_GROUP)
    add_conditions(template)
    subnet_group = template.add_resource(
        SubnetGroup(
            "CacheSubnetGroup",
            Description="Moodle caches: the private data subnets",
            SubnetIds=Ref(DATA_SUBNET_IDS),
            Tags=tags("cache-subnets"),
        )
    )
    for role in ROLES:
        memcached = add_memcached(template, role, subnet_group)
        valkey, secret = add_valkey(template, role, subnet_group)
        add_outputs(template, role, memcached, valkey, secret)
    return template
