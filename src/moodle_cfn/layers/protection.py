"""Protection layer, created last: the Aurora cluster's deletion protection, switched on once the site exists.

A protected cluster cannot be deleted, not even by the rollback of the create that made it: with protection
set on the cluster itself, a first deploy that failed anywhere after the data layer (most often a web node
that never became healthy) ended in ROLLBACK_FAILED. So the cluster is created unprotected (layers/database.py)
and this layer's custom resource sets the protection to DatabaseDeletionProtection. The master makes this
layer's stack wait for every other layer's (Layer.after_every_earlier_layer), so the protection comes on only
when everything that can fail has been created; it is itself the last thing that can fail, and a failure of
its own still leaves the cluster unprotected for the rollback.

On an update the resource follows the parameter (false before a planned stack delete, true again after);
on Delete it does nothing, so a stack delete still stops at a protected cluster. Console, quick-create,
StackSets and `moodle-cfn deploy` users all get this from the template alone.
"""

from __future__ import annotations

from troposphere import GetAtt, Parameter, Ref, Sub, Template
from troposphere.awslambda import Code, Function, LoggingConfig
from troposphere.cloudformation import CustomResource
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup

from moodle_cfn import functions
from moodle_cfn.common import (
    GROUP_DATABASE,
    RETAIN_EXCEPT_ON_CREATE,
    SITE_NAME,
    OperatorParameter,
    checkov_skips,
    declare_parameters,
    output_as_parameter,
    tags,
)
from moodle_cfn.encryption import (
    CUSTOMER_KEY_SKIP_REASON,
    DATA_KMS_KEY_ARN,
    add_key_condition,
    customer_key,
)
from moodle_cfn.layers import database
from moodle_cfn.policies import deletion_protection_policy, service_trust_policy

FUNCTION_SOURCE = "deletion_protection.py"
FUNCTION_TITLE = "DeletionProtectionFunction"
SWITCH_TITLE = "ClusterDeletionProtection"
LOG_RETENTION_DAYS = 90
# The function waits up to 20 x 15 s for a busy cluster (functions/deletion_protection.py).
FUNCTION_TIMEOUT_SECONDS = 360

DATABASE_DELETION_PROTECTION = OperatorParameter(
    Parameter(
        "DatabaseDeletionProtection",
        Type="String",
        Default="true",
        AllowedValues=["true", "false"],
        Description="Refuse to delete the cluster (a stack delete fails until this is switched off); applied "
        "once the rest of the stack exists. Keep true in production.",
    ),
    label="Deletion protection",
    group=GROUP_DATABASE,
)
PARAMETERS: tuple[OperatorParameter, ...] = (DATABASE_DELETION_PROTECTION,)

# The cluster, from the data layer (the name is its output's).
DATABASE_CLUSTER_ID = output_as_parameter(database.DATABASE_CLUSTER_ID)

FUNCTION_SKIPS = checkov_skips(
    CKV_AWS_115="Runs only when CloudFormation creates or updates the stack; no concurrency to reserve.",
    CKV_AWS_116="Invoked synchronously by CloudFormation, which receives and reports every failure.",
    CKV_AWS_117="Calls the RDS API, a public AWS endpoint, and nothing inside the VPC; no VPC needed.",
    CKV_AWS_173="The function has no environment variables.",
    CKV_AWS_272="Inline code generated and reviewed with the template; there is no package to sign.",
)


def cluster_arn() -> Sub:
    """The ARN of the site's cluster, the only resource the function may modify."""
    return Sub(
        "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:cluster:${Cluster}",
        Cluster=Ref(DATABASE_CLUSTER_ID),
    )


def add_deletion_protection(template: Template) -> CustomResource:
    """The function, its role and log group, and the custom resource that sets the cluster's protection."""
    log_group = template.add_resource(
        LogGroup(
            "DeletionProtectionLogGroup",
            RetentionInDays=LOG_RETENTION_DAYS,
            KmsKeyId=customer_key(),
            Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    role = template.add_resource(
        Role(
            "DeletionProtectionFunctionRole",
            AssumeRolePolicyDocument=service_trust_policy("lambda.amazonaws.com", None),
            Policies=[
                Policy(
                    PolicyName="switch-the-clusters-deletion-protection",
                    PolicyDocument=deletion_protection_policy(cluster_arn(), GetAtt(log_group, "Arn")),
                )
            ],
            Tags=tags("db-protection-function"),
        )
    )
    function = template.add_resource(
        Function(
            FUNCTION_TITLE,
            Description=Sub(
                f"Sets the deletion protection of the database of ${{{SITE_NAME.name}}} once the site exists"
            ),
            Runtime="python3.12",
            Handler="index.handler",
            Code=Code(ZipFile=functions.read(FUNCTION_SOURCE)),
            Role=GetAtt(role, "Arn"),
            Timeout=FUNCTION_TIMEOUT_SECONDS,
            MemorySize=128,
            LoggingConfig=LoggingConfig(LogGroup=Ref(log_group)),
            Tags=tags("db-protection-function"),
            Metadata=FUNCTION_SKIPS,
        )
    )
    return template.add_resource(
        CustomResource(
            SWITCH_TITLE,
            ServiceToken=GetAtt(function, "Arn"),
            ClusterId=Ref(DATABASE_CLUSTER_ID),
            DeletionProtection=Ref(DATABASE_DELETION_PROTECTION.parameter),
        )
    )


def build() -> Template:
    """The protection nested template."""
    template = Template(
        Description="moodle-cfn protection: turns on the database's deletion protection once the site exists"
    )
    declare_parameters(template, (SITE_NAME, *PARAMETERS, DATA_KMS_KEY_ARN))
    template.add_parameter(DATABASE_CLUSTER_ID)
    add_key_condition(template)
    add_deletion_protection(template)
    return template
