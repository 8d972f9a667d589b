"""Moodle's database role, made once by CloudFormation with the master secret, so web nodes never read it.

A custom resource backed by a small inline function (functions/database_role.py) runs the statements
through the RDS Data API: no network path into the data subnets, no PostgreSQL driver to package. It runs
at create and whenever its inputs change; the nodes then only ever use Moodle's own secret.
"""

from __future__ import annotations

from awacs import kms, logs, rds_data, secretsmanager
from awacs.aws import Allow, PolicyDocument, Statement
from troposphere import GetAtt, If, Ref, Sub, Template
from troposphere.awslambda import Code, Function, LoggingConfig
from troposphere.cloudformation import CustomResource
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup
from troposphere.rds import DBCluster
from troposphere.secretsmanager import Secret

from moodle_cfn import functions
from moodle_cfn.common import RETAIN_EXCEPT_ON_CREATE, SITE_NAME, checkov_skips, tags
from moodle_cfn.encryption import CUSTOMER_KEY_SKIP_REASON, DATA_KMS_KEY_ARN, HAS_DATA_KMS_KEY, customer_key
from moodle_cfn.policies import POLICY_VERSION, service_trust_policy

FUNCTION_TITLE = "DatabaseRoleFunction"
ROLE_RESOURCE_TITLE = "DatabaseAppUser"
LOG_RETENTION_DAYS = 90
FUNCTION_SKIPS = checkov_skips(
    CKV_AWS_115="Runs only when CloudFormation creates or updates the stack; no concurrency to reserve.",
    CKV_AWS_116="Invoked synchronously by CloudFormation, which receives and reports every failure.",
    CKV_AWS_117="Reaches the database through the RDS Data API, a public AWS endpoint; no VPC needed.",
    CKV_AWS_173="The function has no environment variables.",
    CKV_AWS_272="Inline code generated and reviewed with the template; there is no package to sign.",
)


def role_policies(
    cluster: DBCluster, master_secret_arn: object, app_secret: Secret, log_group: LogGroup
) -> If:
    """Run statements on this cluster as the master user, read the two secrets, write its own log; decrypt
    with the site's key when there is one."""
    statements = [
        Statement(
            Effect=Allow, Action=[rds_data.ExecuteStatement], Resource=[GetAtt(cluster, "DBClusterArn")]
        ),
        # The Data API reads the master secret with the caller's permissions.
        Statement(
            Effect=Allow,
            Action=[secretsmanager.GetSecretValue],
            Resource=[master_secret_arn, Ref(app_secret)],
        ),
        Statement(
            Effect=Allow,
            Action=[logs.CreateLogStream, logs.PutLogEvents],
            Resource=[GetAtt(log_group, "Arn")],
        ),
    ]
    decrypt = Statement(Effect=Allow, Action=[kms.Decrypt], Resource=[Ref(DATA_KMS_KEY_ARN.parameter)])
    main = Policy(
        PolicyName="create-moodles-database-role",
        PolicyDocument=PolicyDocument(Version=POLICY_VERSION, Statement=statements),
    )
    with_key = Policy(
        PolicyName="decrypt-with-the-site-key",
        PolicyDocument=PolicyDocument(Version=POLICY_VERSION, Statement=[decrypt]),
    )
    # A whole list per branch (not AWS::NoValue inside one): moto's IAM cannot read the latter.
    return If(HAS_DATA_KMS_KEY, [main, with_key], [main])


def add_database_role(
    template: Template, cluster: DBCluster, writer: str, app_secret: Secret, database_name: object
) -> None:
    """The function, its role and log group, and the custom resource that runs it."""
    master_secret_arn = GetAtt(cluster, "MasterUserSecret.SecretArn")
    log_group = template.add_resource(
        LogGroup(
            "DatabaseRoleLogGroup",
            RetentionInDays=LOG_RETENTION_DAYS,
            KmsKeyId=customer_key(),
            Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    role = template.add_resource(
        Role(
            "DatabaseRoleFunctionRole",
            AssumeRolePolicyDocument=service_trust_policy("lambda.amazonaws.com", None),
            Policies=role_policies(cluster, master_secret_arn, app_secret, log_group),
            Tags=tags("db-role-function"),
        )
    )
    function = template.add_resource(
        Function(
            FUNCTION_TITLE,
            Description=Sub(
                f"Creates Moodle's database role of ${{{SITE_NAME.name}}} with the master secret"
            ),
            Runtime="python3.12",
            Handler="index.handler",
            Code=Code(ZipFile=functions.read("database_role.py")),
            Role=GetAtt(role, "Arn"),
            Timeout=120,
            MemorySize=128,
            LoggingConfig=LoggingConfig(LogGroup=Ref(log_group)),
            Tags=tags("db-role-function"),
            Metadata=FUNCTION_SKIPS,
        )
    )
    template.add_resource(
        CustomResource(
            ROLE_RESOURCE_TITLE,
            # The Data API needs a running writer.
            DependsOn=[writer],
            ServiceToken=GetAtt(function, "Arn"),
            ClusterArn=GetAtt(cluster, "DBClusterArn"),
            MasterSecretArn=master_secret_arn,
            AppSecretArn=Ref(app_secret),
            Database=database_name,
        )
    )
