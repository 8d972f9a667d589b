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
from troposphere.cloudformation import CustomResource
from troposphere.iam import Policy

from moodle_cfn.common import (
    GROUP_DATABASE,
    SITE_NAME,
    OperatorParameter,
    declare_parameters,
    output_as_parameter,
)
from moodle_cfn.custom_resource_function import add_custom_resource_function
from moodle_cfn.encryption import (
    DATA_KMS_KEY_ARN,
    add_key_condition,
)
from moodle_cfn.layers import database
from moodle_cfn.policies import deletion_protection_policy

FUNCTION_SOURCE = "deletion_protection.py"
# Its LogGroup, FunctionRole and Function are named from this (custom_resource_function).
FUNCTION_NAME = "DeletionProtection"
FUNCTION_TITLE = f"{FUNCTION_NAME}Function"
SWITCH_TITLE = "ClusterDeletionProtection"
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


def cluster_arn() -> Sub:
    """The ARN of the site's cluster, the only resource the function may modify."""
    return Sub(
        "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:cluster:${Cluster}",
        Cluster=Ref(DATABASE_CLUSTER_ID),
    )


def add_deletion_protection(template: Template) -> CustomResource:
    """The function, its role and log group, and the custom resource that sets the cluster's protection."""
    function = add_custom_resource_function(
        template,
        FUNCTION_NAME,
        source=FUNCTION_SOURCE,
        description=f"Sets the deletion protection of the database of ${{{SITE_NAME.name}}} once the site exists",
        policies=lambda log_group: [
            Policy(
                PolicyName="switch-the-clusters-deletion-protection",
                PolicyDocument=deletion_protection_policy(cluster_arn(), GetAtt(log_group, "Arn")),
            )
        ],
        timeout=FUNCTION_TIMEOUT_SECONDS,
        tag="db-protection-function",
        network_reason="Calls the RDS API, a public AWS endpoint, and nothing inside the VPC; no VPC needed.",
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
