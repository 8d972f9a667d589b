"""Moodle's database roles, kept by one function in the VPC with the master secret, so web nodes never read it.

The function (functions/database_role.py) speaks PostgreSQL itself, over TLS, from the app subnets (NAT to
Secrets Manager, the S3 gateway endpoint to CloudFormation's response URL) through its own security group,
which alone among non-web groups may reach the database (security_groups.PEER_RULES). It serves two callers:

- the custom resource, at every create and update: a NOLOGIN owner role owning the database and every
  Moodle object, and the login roles of the app secret's current and previous versions at their passwords;
- Secrets Manager, rotating the app secret with the alternating-users strategy
  (https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotation-strategy.html): each rotation sets a
  new password on the login role not in use and makes it current, so nodes still holding the previous
  credentials keep working until they re-read the secret.

No RDS Data API: nothing stays open that runs SQL as the master from outside the network.
"""

from __future__ import annotations

from awacs import kms, logs, secretsmanager
from awacs.aws import Allow, PolicyDocument, Statement
from awacs.awslambda import InvokeFunction
from troposphere import GetAtt, If, Parameter, Ref, Template
from troposphere.awslambda import Function, Permission
from troposphere.cloudformation import CustomResource
from troposphere.iam import Policy
from troposphere.logs import LogGroup
from troposphere.rds import DBCluster
from troposphere.secretsmanager import RotationRules, RotationSchedule, Secret

from moodle_cfn.common import SITE_NAME
from moodle_cfn.custom_resource_function import InVpc, add_custom_resource_function
from moodle_cfn.encryption import DATA_KMS_KEY_ARN, HAS_DATA_KMS_KEY
from moodle_cfn.layers.address_plan import APP
from moodle_cfn.layers.network import as_parameter
from moodle_cfn.layers.security_groups import DATABASE_ROLE_FUNCTION_SG
from moodle_cfn.policies import POLICY_VERSION

# Its LogGroup, FunctionRole and Function are named from this (custom_resource_function).
FUNCTION_NAME = "DatabaseRole"
FUNCTION_TITLE = f"{FUNCTION_NAME}Function"
ROLE_RESOURCE_TITLE = "DatabaseAppUser"
ROTATION_TITLE = "DatabaseAppUserRotation"
# The NOLOGIN role that owns Moodle's objects; the login roles are the secret's user and `<user>_clone`.
OWNER_ROLE = "moodle_owner"
# Each rotation leaves the previous login working until the next: nodes must re-read the secret within this.
ROTATION_DAYS = 30

# Values taken from the network layer: the app subnets route to the NAT gateways and the S3 endpoint.
APP_SUBNET_IDS = as_parameter(APP.ids_output)
FUNCTION_SECURITY_GROUP = as_parameter(DATABASE_ROLE_FUNCTION_SG.id_output)
NETWORK_INPUTS: tuple[Parameter, ...] = (APP_SUBNET_IDS, FUNCTION_SECURITY_GROUP)


def role_policies(master_secret_arn: object, app_secret: Secret, log_group: LogGroup) -> If:
    """Read the master secret, read and rotate the app secret, write its own log; with the site's key, use
    it for both secrets. No rds-data, no RDS API: the function logs in like any database client."""
    statements = [
        Statement(Effect=Allow, Action=[secretsmanager.GetSecretValue], Resource=[master_secret_arn]),
        # The four rotation steps (Secrets Manager User Guide, "Permissions for rotation").
        Statement(
            Effect=Allow,
            Action=[
                secretsmanager.DescribeSecret,
                secretsmanager.GetSecretValue,
                secretsmanager.PutSecretValue,
                secretsmanager.UpdateSecretVersionStage,
            ],
            Resource=[Ref(app_secret)],
        ),
        Statement(
            Effect=Allow,
            Action=[logs.CreateLogStream, logs.PutLogEvents],
            Resource=[GetAtt(log_group, "Arn")],
        ),
    ]
    main = Policy(
        PolicyName="keep-moodles-database-roles",
        PolicyDocument=PolicyDocument(Version=POLICY_VERSION, Statement=statements),
    )
    with_key = Policy(
        PolicyName="use-the-site-key",
        PolicyDocument=PolicyDocument(
            Version=POLICY_VERSION,
            Statement=[
                Statement(
                    Effect=Allow,
                    Action=[kms.Decrypt, kms.GenerateDataKey],
                    Resource=[Ref(DATA_KMS_KEY_ARN.parameter)],
                )
            ],
        ),
    )
    # A whole list per branch (not AWS::NoValue inside one): moto's IAM cannot read the latter.
    return If(HAS_DATA_KMS_KEY, [main, with_key], [main])


def database_settings(cluster: DBCluster, database_name: object) -> dict[str, object]:
    """Where and as whom the function works: the same keys in the custom resource's properties and in the
    function's environment (which is all a rotation event leaves it)."""
    return {
        "MasterSecretArn": GetAtt(cluster, "MasterUserSecret.SecretArn"),
        "Host": GetAtt(cluster, "Endpoint.Address"),
        "Port": GetAtt(cluster, "Endpoint.Port"),
        "Database": database_name,
        "OwnerRole": OWNER_ROLE,
    }


def add_rotation(template: Template, function: Function, app_secret: Secret, after: CustomResource) -> None:
    """Secrets Manager may invoke the function for this secret only; the schedule, started once the roles exist."""
    permission = template.add_resource(
        Permission(
            "DatabaseRoleRotationPermission",
            FunctionName=GetAtt(function, "Arn"),
            Action=InvokeFunction.JSONrepr(),
            Principal="secretsmanager.amazonaws.com",
            SourceArn=Ref(app_secret),
        )
    )
    template.add_resource(
        RotationSchedule(
            ROTATION_TITLE,
            DependsOn=[permission.title, after.title],
            SecretId=Ref(app_secret),
            RotationLambdaARN=GetAtt(function, "Arn"),
            RotationRules=RotationRules(AutomaticallyAfterDays=ROTATION_DAYS),
            # Not at create or update: an existing site's nodes keep the credentials they booted with.
            RotateImmediatelyOnUpdate=False,
        )
    )


def add_database_role(
    template: Template, cluster: DBCluster, writer: str, app_secret: Secret, database_name: object
) -> None:
    """The function, its role and log group, the custom resource that runs it, and the rotation schedule."""
    settings = database_settings(cluster, database_name)
    function = add_custom_resource_function(
        template,
        FUNCTION_NAME,
        source="database_role.py",
        description=f"Keeps and rotates Moodle's database roles of ${{{SITE_NAME.name}}} with the master secret",
        policies=lambda log_group: role_policies(settings["MasterSecretArn"], app_secret, log_group),
        timeout=300,  # above the function's own statement timeout (STATEMENT_SECONDS)
        tag="db-role-function",
        vpc=InVpc(
            subnet_ids=Ref(APP_SUBNET_IDS),
            security_group_id=Ref(FUNCTION_SECURITY_GROUP),
            invocation="Invoked synchronously by CloudFormation and by Secrets Manager's rotation, which "
            "each receive and report every failure.",
            environment={key: settings[key] for key in sorted(settings)},
            environment_reason="The environment holds the database endpoint, names and the master secret's "
            "ARN, never a secret value; Lambda encrypts it at rest with its service key.",
        ),
    )
    role = template.add_resource(
        CustomResource(
            ROLE_RESOURCE_TITLE,
            # Logging in needs a running writer.
            DependsOn=[writer],
            ServiceToken=GetAtt(function, "Arn"),
            AppSecretArn=Ref(app_secret),
            **settings,
        )
    )
    add_rotation(template, function, app_secret, role)
