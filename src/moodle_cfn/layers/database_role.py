"""Moodle's database role, made once by CloudFormation with the master secret, so web nodes never read it.

A custom resource backed by a small inline function (functions/database_role.py) runs the statements
through the RDS Data API: no network path into the data subnets, no PostgreSQL driver to package. It runs
at create and whenever its inputs change; the nodes then only ever use Moodle's own secret.
"""

from __future__ import annotations

from awacs import kms, logs, rds_data, secretsmanager
from awacs.aws import Allow, PolicyDocument, Statement
from troposphere import GetAtt, If, Ref, Template
from troposphere.cloudformation import CustomResource
from troposphere.iam import Policy
from troposphere.logs import LogGroup
from troposphere.rds import DBCluster
from troposphere.secretsmanager import Secret

from moodle_cfn.common import SITE_NAME
from moodle_cfn.custom_resource_function import add_custom_resource_function
from moodle_cfn.encryption import DATA_KMS_KEY_ARN, HAS_DATA_KMS_KEY
from moodle_cfn.policies import POLICY_VERSION

# Its LogGroup, FunctionRole and Function are named from this (custom_resource_function).
FUNCTION_NAME = "DatabaseRole"
FUNCTION_TITLE = f"{FUNCTION_NAME}Function"
ROLE_RESOURCE_TITLE = "DatabaseAppUser"


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
    function = add_custom_resource_function(
        template,
        FUNCTION_NAME,
        source="database_role.py",
        description=f"Creates Moodle's database role of ${{{SITE_NAME.name}}} with the master secret",
        policies=lambda log_group: role_policies(cluster, master_secret_arn, app_secret, log_group),
        timeout=120,
        tag="db-role-function",
        network_reason="Reaches the database through the RDS Data API, a public AWS endpoint; no VPC needed.",
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
