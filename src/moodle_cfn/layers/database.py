"""Aurora PostgreSQL for Moodle: a cluster with a writer and a reader in different AZs, TLS required.

Database credentials: RDS owns the master user's password (ManageMasterUserPassword) in a secret it rotates.
Moodle never uses that user. It connects with its own login role, whose name and password live in a separate
secret; a function in the VPC (layers/database_role.py) uses the master secret to keep that role, its
alternate and the NOLOGIN role owning Moodle's objects, and rotates the app secret by alternating the two
login roles. Web nodes never read the master secret, and its rotation never changes config.php.
"""

from __future__ import annotations

from troposphere import Equals, GetAtt, If, Not, NoValue, Parameter, Ref, Select, Split, Sub, Template
from troposphere.iam import Role
from troposphere.logs import LogGroup
from troposphere.rds import (
    DBCluster,
    DBClusterParameterGroup,
    DBInstance,
    DBSubnetGroup,
    ServerlessV2ScalingConfiguration,
)
from troposphere.secretsmanager import GenerateSecretString, Secret

from moodle_cfn.checks import CrossCheck, number
from moodle_cfn.common import (
    GROUP_DATABASE,
    RETAIN_EXCEPT_ON_CREATE,
    SITE_NAME,
    SNAPSHOT,
    OperatorParameter,
    checkov_skips,
    log_retention_parameter,
    number_parameter,
    tags,
)
from moodle_cfn.encryption import (
    CUSTOMER_KEY_SKIP_REASON,
    DATA_KMS_KEY_ARN,
    HAS_DATA_KMS_KEY,
    customer_key,
    generated_secret,
)
from moodle_cfn.layers.address_plan import DATA
from moodle_cfn.layers.network import AVAILABILITY_ZONE_NAMES, as_parameter
from moodle_cfn.layers.security_groups import DATABASE_SG, POSTGRES_PORT
from moodle_cfn.policies import service_trust_policy

IS_SERVERLESS = "DatabaseIsServerless"
FROM_SNAPSHOT = "DatabaseFromSnapshot"

# Writer first: the first instance created in an Aurora cluster becomes the writer.
DATABASE_INSTANCE_SLOTS = (1, 2)
APP_USER_NAME = "moodle"
PERFORMANCE_INSIGHTS_FREE_RETENTION_DAYS = 7
ENHANCED_MONITORING_SECONDS = 60
# Slow statements (ms) logged to CloudWatch: long enough to keep the log quiet, short enough to show a
# missing index before users complain.
SLOW_STATEMENT_MS = "2000"

# Outputs later layers read (the names are also their parameter names there).
DATABASE_ENDPOINT = "DatabaseEndpoint"
DATABASE_READER_ENDPOINT = "DatabaseReaderEndpoint"
DATABASE_PORT = "DatabasePort"
DATABASE_NAME_OUTPUT = "DatabaseName"  # the same value as the master parameter of that name
DATABASE_CLUSTER_ID = "DatabaseClusterId"
DATABASE_MASTER_SECRET_ARN = "DatabaseMasterSecretArn"
INSTANCE_TITLE_PREFIX = "DatabaseInstance"
# The first instance has promotion tier 0: the writer.
WRITER_TITLE = f"{INSTANCE_TITLE_PREFIX}1"
DATABASE_APP_SECRET_ARN = "DatabaseAppUserSecretArn"
INSTANCE_CLASSES = [
    "db.t4g.medium",
    "db.t4g.large",
    *(
        f"db.{family}.{size}"
        for family in ("r7g", "r6g", "r6i")
        for size in ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge")
    ),
]
SERVERLESS_ACU_MIN, SERVERLESS_ACU_MAX = 0.5, 256
DATABASE_ENGINE_VERSION = OperatorParameter(
    Parameter(
        "DatabaseEngineVersion",
        Type="String",
        Default="17.7",
        AllowedPattern=r"^1[67]\.[0-9]{1,2}$",
        ConstraintDescription="An Aurora PostgreSQL 16.x or 17.x version, such as 17.7.",
        Description="Aurora PostgreSQL version (16.x or 17.x; Moodle 5.2 needs 16 or newer, 5.3 needs 17). Aurora applies minor "
        "upgrades in the maintenance window: before changing this, set it to the version the cluster runs.",
    ),
    label="Engine version",
    group=GROUP_DATABASE,
)
DATABASE_CAPACITY_MODE = OperatorParameter(
    Parameter(
        "DatabaseCapacityMode",
        Type="String",
        Default="provisioned",
        AllowedValues=["provisioned", "serverless-v2"],
        Description="provisioned: two instances of DatabaseInstanceClass. serverless-v2: two Aurora Serverless v2 "
        "instances scaling between DatabaseMinCapacity and DatabaseMaxCapacity. Both put a writer and a reader in "
        "different AZs.",
    ),
    label="Capacity mode",
    group=GROUP_DATABASE,
)
DATABASE_INSTANCE_CLASS = OperatorParameter(
    Parameter(
        "DatabaseInstanceClass",
        Type="String",
        Default="db.r7g.large",
        AllowedValues=INSTANCE_CLASSES,
        Description="Instance class of both instances in provisioned mode (Graviton r7g/r6g, Intel r6i; t4g only "
        "for development).",
    ),
    label="Instance class (provisioned)",
    group=GROUP_DATABASE,
)
DATABASE_MIN_CAPACITY = number_parameter(
    "DatabaseMinCapacity",
    0.5,
    SERVERLESS_ACU_MIN,
    SERVERLESS_ACU_MAX,
    "Serverless v2 minimum capacity in ACUs (1 ACU is about 2 GiB of memory).",
    label="Minimum ACUs (serverless v2)",
    group=GROUP_DATABASE,
)
DATABASE_MAX_CAPACITY = number_parameter(
    "DatabaseMaxCapacity",
    16,
    1,
    SERVERLESS_ACU_MAX,
    "Serverless v2 maximum capacity in ACUs; caps cost during exam peaks.",
    label="Maximum ACUs (serverless v2)",
    group=GROUP_DATABASE,
)
DATABASE_NAME = OperatorParameter(
    Parameter(
        "DatabaseName",
        Type="String",
        Default="moodle",
        AllowedPattern=r"^[a-z][a-z0-9_]{0,62}$",
        ConstraintDescription="Lower-case letters, digits and underscores, starting with a letter.",
        Description="Name of the Moodle database.",
    ),
    label="Database name",
    group=GROUP_DATABASE,
)
DATABASE_MASTER_USERNAME = OperatorParameter(
    Parameter(
        "DatabaseMasterUsername",
        Type="String",
        Default="moodle_master",
        AllowedPattern=r"^(?!rds)[a-z][a-z0-9_]{0,15}$",
        ConstraintDescription="1-16 lower-case letters, digits and underscores, starting with a letter, not rds*.",
        Description="Master user name. Its password is generated and rotated by RDS in Secrets Manager; Moodle "
        f"itself connects as the separate '{APP_USER_NAME}' user.",
    ),
    label="Master user name",
    group=GROUP_DATABASE,
)
DATABASE_SNAPSHOT = OperatorParameter(
    Parameter(
        "DatabaseSnapshotIdentifier",
        Type="String",
        Default="",
        # A DB cluster snapshot by name or ARN; an RDS for PostgreSQL DB snapshot by ARN only
        # (AWS::RDS::DBCluster, SnapshotIdentifier).
        AllowedPattern=r"^(arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:(cluster-)?snapshot:[A-Za-z0-9:-]+|[a-z][a-z0-9-]*)?$",
        ConstraintDescription="Empty, an Aurora cluster snapshot name or ARN, or an RDS DB snapshot ARN.",
        Description="Start from an existing site's database snapshot (README: Migrate). Never change or clear "
        "it afterwards: that replaces the cluster.",
    ),
    label="Start from snapshot",
    group=GROUP_DATABASE,
)
DATABASE_BACKUP_RETENTION_DAYS = number_parameter(
    "DatabaseBackupRetentionDays",
    7,
    1,
    35,
    "Days of automated backups (point-in-time recovery window). Production: 14 or more.",
    label="Backup retention (days)",
    group=GROUP_DATABASE,
)
DATABASE_BACKUP_WINDOW = OperatorParameter(
    Parameter(
        "DatabaseBackupWindow",
        Type="String",
        Default="01:00-02:00",
        AllowedPattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$",
        ConstraintDescription="hh24:mi-hh24:mi in UTC, at least 30 minutes, such as 01:00-02:00.",
        Description="Daily backup window, UTC. Must not overlap the maintenance window.",
    ),
    label="Backup window (UTC)",
    group=GROUP_DATABASE,
)
DATABASE_MAINTENANCE_WINDOW = OperatorParameter(
    Parameter(
        "DatabaseMaintenanceWindow",
        Type="String",
        Default="sun:02:30-sun:03:30",
        AllowedPattern=r"^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-"
        r"(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$",
        ConstraintDescription="ddd:hh24:mi-ddd:hh24:mi in UTC, such as sun:02:30-sun:03:30.",
        Description="Weekly maintenance window, UTC (minor version upgrades, patches). Pick a quiet hour, not "
        "an exam period.",
    ),
    label="Maintenance window (UTC)",
    group=GROUP_DATABASE,
)
DATABASE_LOG_RETENTION_DAYS = log_retention_parameter(
    "DatabaseLogRetentionDays",
    30,
    "Days CloudWatch Logs keeps the PostgreSQL log (errors and statements slower than "
    f"{SLOW_STATEMENT_MS} ms).",
    label="PostgreSQL log retention (days)",
    group=GROUP_DATABASE,
)
PARAMETERS: tuple[OperatorParameter, ...] = (
    DATABASE_ENGINE_VERSION,
    DATABASE_CAPACITY_MODE,
    DATABASE_INSTANCE_CLASS,
    DATABASE_MIN_CAPACITY,
    DATABASE_MAX_CAPACITY,
    DATABASE_NAME,
    DATABASE_MASTER_USERNAME,
    DATABASE_SNAPSHOT,
    DATABASE_BACKUP_RETENTION_DAYS,
    DATABASE_BACKUP_WINDOW,
    DATABASE_MAINTENANCE_WINDOW,
    DATABASE_LOG_RETENTION_DAYS,
)

CHECKS = (
    CrossCheck(
        DATABASE_MIN_CAPACITY.name,
        "must not exceed DatabaseMaxCapacity",
        lambda v: number(v, DATABASE_MIN_CAPACITY.name) <= number(v, DATABASE_MAX_CAPACITY.name),
    ),
    CrossCheck(
        DATABASE_MIN_CAPACITY.name,
        "Aurora Serverless v2 capacity moves in steps of 0.5 ACU",
        lambda v: number(v, DATABASE_MIN_CAPACITY.name) * 2 % 1 == 0,
    ),
    CrossCheck(
        DATABASE_MAX_CAPACITY.name,
        "Aurora Serverless v2 capacity moves in steps of 0.5 ACU",
        lambda v: number(v, DATABASE_MAX_CAPACITY.name) * 2 % 1 == 0,
    ),
)

# Values taken from the network layer.
DATA_SUBNET_IDS = as_parameter(DATA.ids_output)
ZONE_NAMES = as_parameter(AVAILABILITY_ZONE_NAMES)
DATABASE_SECURITY_GROUP = as_parameter(DATABASE_SG.id_output)
NETWORK_INPUTS = (DATA_SUBNET_IDS, ZONE_NAMES, DATABASE_SECURITY_GROUP)


def add_conditions(template: Template) -> None:
    """Declare the capacity-mode switch."""
    template.add_condition(IS_SERVERLESS, Equals(Ref(DATABASE_CAPACITY_MODE.parameter), "serverless-v2"))


def cluster_identifier() -> Sub:
    """A fixed cluster name: it names the log group in advance, and it makes CloudFormation refuse an update
    that would replace the cluster instead of silently building an empty one."""
    return Sub(f"${{{SITE_NAME.name}}}-db")


def add_database_plumbing(
    template: Template,
) -> tuple[DBSubnetGroup, DBClusterParameterGroup, LogGroup, Role]:
    """Subnet group, cluster parameter group, the PostgreSQL log group and the enhanced-monitoring role."""
    subnet_group = template.add_resource(
        DBSubnetGroup(
            "DatabaseSubnetGroup",
            DBSubnetGroupDescription="Moodle Aurora cluster: the private data subnets",
            SubnetIds=Ref(DATA_SUBNET_IDS),
            Tags=tags("db-subnets"),
        )
    )
    parameter_group = template.add_resource(
        DBClusterParameterGroup(
            "DatabaseClusterParameterGroup",
            Description="Moodle: TLS required, slow statements logged",
            # The family follows the major version, so a 16 -> 17 change brings a matching group.
            Family=Sub(
                "aurora-postgresql${Major}",
                Major=Select(0, Split(".", Ref(DATABASE_ENGINE_VERSION.parameter))),
            ),
            Parameters={
                # libpq (PHP pgsql) defaults to sslmode=prefer, so Moodle negotiates TLS with no option set;
                # the server refuses any client that does not.
                "rds.force_ssl": "1",
                "log_min_duration_statement": SLOW_STATEMENT_MS,
                # A slow statement is logged with its text only: its bind parameters are the values Moodle
                # sends (names, e-mail addresses, answers), and logs go to CloudWatch Logs. 0 "disables
                # logging of bind parameters for non-error statement logs"; the same on errors (PostgreSQL
                # 13+, https://www.postgresql.org/docs/16/runtime-config-logging.html).
                "log_parameter_max_length": "0",
                "log_parameter_max_length_on_error": "0",
            },
            Tags=tags("db-params"),
        )
    )
    log_group = template.add_resource(
        LogGroup(
            "DatabaseLogGroup",
            # The name RDS exports to; created first so it has a retention and is kept with the stack's data.
            LogGroupName=Sub(f"/aws/rds/cluster/${{{SITE_NAME.name}}}-db/postgresql"),
            RetentionInDays=Ref(DATABASE_LOG_RETENTION_DAYS.parameter),
            KmsKeyId=customer_key(),
            Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    monitoring_role = template.add_resource(
        Role(
            "DatabaseMonitoringRole",
            AssumeRolePolicyDocument=service_trust_policy(
                "monitoring.rds.amazonaws.com",
                Sub("arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:db:*"),
            ),
            ManagedPolicyArns=[
                Sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole")
            ],
            Tags=tags("db-monitoring"),
        )
    )
    return subnet_group, parameter_group, log_group, monitoring_role


def add_database(template: Template) -> tuple[DBCluster, Secret]:
    """The Aurora cluster, its two instances in different AZs, and Moodle's own database user secret."""
    subnet_group, parameter_group, log_group, monitoring_role = add_database_plumbing(template)
    template.add_condition(FROM_SNAPSHOT, Not(Equals(Ref(DATABASE_SNAPSHOT.parameter), "")))
    cluster = template.add_resource(
        DBCluster(
            "DatabaseCluster",
            DependsOn=[log_group.title],
            DBClusterIdentifier=cluster_identifier(),
            Engine="aurora-postgresql",
            EngineVersion=Ref(DATABASE_ENGINE_VERSION.parameter),
            # From a snapshot, the database, its master user name and encryption come with it (KmsKeyId
            # still encrypts an unencrypted snapshot's copy). RDS then puts the master password in its
            # own secret: CloudFormation's handler applies ManageMasterUserPassword right after the
            # restore (aws-cloudformation-resource-providers-rds, Translator.modifyDbClusterAfterCreateRequest).
            SnapshotIdentifier=If(FROM_SNAPSHOT, Ref(DATABASE_SNAPSHOT.parameter), NoValue),
            DatabaseName=If(FROM_SNAPSHOT, NoValue, Ref(DATABASE_NAME.parameter)),
            MasterUsername=If(FROM_SNAPSHOT, NoValue, Ref(DATABASE_MASTER_USERNAME.parameter)),
            ManageMasterUserPassword=True,
            # No EnableHttpEndpoint: the RDS Data API would let anyone allowed rds-data and the master secret
            # run SQL as the master from anywhere, and Aurora refuses it on T instance classes (Aurora User
            # Guide, Data API limitations). Left out, not false, and still switched off on an existing
            # cluster, in place: not a create-only property (the resource schema), and CloudFormation's RDS
            # handler calls DisableHttpEndpoint when the previous template had true and this one has no true
            # (aws-cloudformation-resource-providers-rds, aws-rds-dbcluster UpdateHandler with
            # BaseHandlerStd.shouldUpdateHttpEndpointV2, Aurora PostgreSQL provisioned and Serverless v2).
            MasterUserSecret=If(HAS_DATA_KMS_KEY, {"KmsKeyId": Ref(DATA_KMS_KEY_ARN.parameter)}, NoValue),
            Port=POSTGRES_PORT,
            StorageEncrypted=If(FROM_SNAPSHOT, NoValue, True),
            # An unencrypted snapshot is restored encrypted only when a key is named: RDS's own key then.
            KmsKeyId=If(
                HAS_DATA_KMS_KEY,
                Ref(DATA_KMS_KEY_ARN.parameter),
                If(FROM_SNAPSHOT, "alias/aws/rds", NoValue),
            ),
            BackupRetentionPeriod=Ref(DATABASE_BACKUP_RETENTION_DAYS.parameter),
            PreferredBackupWindow=Ref(DATABASE_BACKUP_WINDOW.parameter),
            PreferredMaintenanceWindow=Ref(DATABASE_MAINTENANCE_WINDOW.parameter),
            # No DeletionProtection: the cluster is created unprotected so that a failed first deploy rolls
            # back cleanly, and the protection layer sets it once the whole site exists. Left out rather than
            # false: CloudFormation's RDS handler sends the template's DeletionProtection with every change
            # to the cluster (aws-cloudformation-resource-providers-rds, aws-rds-dbcluster Translator
            # .modifyDbClusterRequest), so a false here would switch protection off at the next update; a
            # property left out is not sent, and the protection stays as the protection layer set it.
            CopyTagsToSnapshot=True,
            DBSubnetGroupName=Ref(subnet_group),
            DBClusterParameterGroupName=Ref(parameter_group),
            VpcSecurityGroupIds=[Ref(DATABASE_SECURITY_GROUP)],
            EnableCloudwatchLogsExports=["postgresql"],
            ServerlessV2ScalingConfiguration=If(
                IS_SERVERLESS,
                ServerlessV2ScalingConfiguration(
                    MinCapacity=Ref(DATABASE_MIN_CAPACITY.parameter),
                    MaxCapacity=Ref(DATABASE_MAX_CAPACITY.parameter),
                ),
                NoValue,
            ),
            Tags=tags("db"),
            Metadata=checkov_skips(
                CKV_AWS_139="Created unprotected on purpose, so a failed first deploy can roll back (delete) "
                "it; the protection layer (layers/protection.py) switches deletion protection to "
                "DatabaseDeletionProtection (default true) once every other resource of the site exists.",
                CKV_AWS_162="Moodle's pgsql driver authenticates with a password from config.php; IAM "
                "authentication tokens expire after 15 minutes and Moodle cannot refresh them.",
            ),
            **SNAPSHOT,
        )
    )
    for slot in DATABASE_INSTANCE_SLOTS:
        template.add_resource(
            DBInstance(
                f"{INSTANCE_TITLE_PREFIX}{slot}",
                # Aurora keeps the data in the cluster volume; an instance holds none, the cluster snapshots.
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
                Engine="aurora-postgresql",
                DBClusterIdentifier=Ref(cluster),
                DBInstanceClass=If(IS_SERVERLESS, "db.serverless", Ref(DATABASE_INSTANCE_CLASS.parameter)),
                AvailabilityZone=Select(slot - 1, Ref(ZONE_NAMES)),
                PromotionTier=slot - 1,
                PubliclyAccessible=False,
                AutoMinorVersionUpgrade=True,
                CACertificateIdentifier="rds-ca-rsa2048-g1",
                EnablePerformanceInsights=True,
                PerformanceInsightsRetentionPeriod=PERFORMANCE_INSIGHTS_FREE_RETENTION_DAYS,
                PerformanceInsightsKMSKeyId=customer_key(),
                MonitoringInterval=ENHANCED_MONITORING_SECONDS,
                MonitoringRoleArn=GetAtt(monitoring_role, "Arn"),
                Tags=tags(f"db-{slot}"),
            )
        )
    app_secret = template.add_resource(
        generated_secret(
            "DatabaseAppUserSecret",
            Sub(
                f"Moodle's own PostgreSQL login ({APP_USER_NAME} or {APP_USER_NAME}_clone, alternating) for "
                f"${{{SITE_NAME.name}}}; rotated by the site's database-role function, the previous login "
                "working until the next rotation."
            ),
            GenerateSecretString(
                SecretStringTemplate=f'{{"username": "{APP_USER_NAME}"}}',
                GenerateStringKey="password",
                PasswordLength=40,
                # Letters and digits only: safe unquoted in a libpq connection string and in config.php.
                ExcludePunctuation=True,
            ),
            "db-app-user",
        )
    )
    return cluster, app_secret


def outputs(cluster: DBCluster, app_secret: Secret) -> list[tuple[str, str, object]]:
    """(name, description, value) of every database output: endpoints, names and secret ARNs, never a password."""
    return [
        (DATABASE_ENDPOINT, "Writer endpoint", GetAtt(cluster, "Endpoint.Address")),
        (DATABASE_READER_ENDPOINT, "Reader endpoint (Moodle's read-only replica option)", GetAtt(cluster, "ReadEndpoint.Address")),
        (DATABASE_PORT, "PostgreSQL port", GetAtt(cluster, "Endpoint.Port")),
        (DATABASE_NAME_OUTPUT, "Moodle database name", Ref(DATABASE_NAME.parameter)),
        (DATABASE_CLUSTER_ID, "Aurora cluster identifier", Ref(cluster)),
        (DATABASE_MASTER_SECRET_ARN, "Secret of the master user, managed and rotated by RDS", GetAtt(cluster, "MasterUserSecret.SecretArn")),
        (DATABASE_APP_SECRET_ARN, f"Secret of Moodle's database user ({APP_USER_NAME})", Ref(app_secret)),
    ]  # fmt: skip
