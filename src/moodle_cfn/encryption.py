"""Encryption at rest: one optional customer-managed KMS key for every stateful resource, else AWS-managed keys."""

from __future__ import annotations

from troposphere import Equals, If, Not, NoValue, Parameter, Ref, Sub, Template
from troposphere.secretsmanager import GenerateSecretString, Secret

from moodle_cfn.common import (
    GROUP_ENCRYPTION,
    RETAIN_EXCEPT_ON_CREATE,
    OperatorParameter,
    checkov_skips,
    tags,
)

HAS_DATA_KMS_KEY = "HasDataKmsKey"
DISPOSABLE = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}

DATA_KMS_KEY_ARN = OperatorParameter(
    Parameter(
        "DataKmsKeyArn",
        Type="String",
        Default="",
        AllowedPattern=r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+)?$",
        ConstraintDescription="Empty, or the ARN of a KMS key (not an alias).",
        Description="Customer-managed KMS key for the database, its secrets and logs, and the file system. Empty: "
        "AWS-managed keys. The key policy must allow RDS, Secrets Manager, EFS and CloudWatch Logs in this "
        "account. Cannot be changed after the first deploy.",
    ),
    label="Customer KMS key ARN (optional)",
    group=GROUP_ENCRYPTION,
)
CUSTOMER_KEY_SKIP_REASON = (
    "Encrypted with the AWS-managed key by default, as the operator chooses; setting DataKmsKeyArn switches "
    "this resource to a customer-managed key."
)


def add_key_condition(template: Template) -> None:
    """Declare the `HasDataKmsKey` condition."""
    template.add_condition(HAS_DATA_KMS_KEY, Not(Equals(Ref(DATA_KMS_KEY_ARN.parameter), "")))


def customer_key() -> If:
    """The customer key when one is given, else the AWS-managed key (property omitted)."""
    return If(HAS_DATA_KMS_KEY, Ref(DATA_KMS_KEY_ARN.parameter), NoValue)


def generated_secret(
    title: str,
    description: Sub,
    generate: GenerateSecretString,
    name_tag: str,
    *,
    keep: bool = True,
    condition: str | None = None,
) -> Secret:
    """A secret whose value AWS generates (so it is never a parameter), under the site key when one is given.

    `keep`: retained when the stack is deleted or the secret replaced (not when the create that made it
    rolls back); False only for values that are generated anew with the resource using them.
    """
    secret = Secret(
        title,
        Description=description,
        GenerateSecretString=generate,
        KmsKeyId=customer_key(),
        Tags=tags(name_tag),
        Metadata=checkov_skips(CKV_AWS_149=CUSTOMER_KEY_SKIP_REASON),
        **(RETAIN_EXCEPT_ON_CREATE if keep else DISPOSABLE),
    )
    if condition is not None:
        secret.Condition = condition
    return secret
