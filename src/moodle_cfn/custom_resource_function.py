"""The inline Lambda function behind one of the stack's custom resources, built the same way for each: its
own encrypted log group (kept as the stack's other logs are), a role that trusts Lambda with the policies
the caller gives, and the function with its source from moodle_cfn.functions."""

from __future__ import annotations

from collections.abc import Callable

from troposphere import GetAtt, Ref, Sub, Template
from troposphere.awslambda import Code, Function, LoggingConfig
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup

from moodle_cfn import functions
from moodle_cfn.common import RETAIN_EXCEPT_ON_CREATE, checkov_skips, tags
from moodle_cfn.encryption import CUSTOMER_KEY_SKIP_REASON, customer_key
from moodle_cfn.policies import service_trust_policy

LOG_RETENTION_DAYS = 90


def function_skips(network_reason: str) -> dict[str, object]:
    """checkov's Lambda checks that do not apply to a custom resource's function; `network_reason` says
    why it needs no VPC (what it calls)."""
    return checkov_skips(
        CKV_AWS_115="Runs only when CloudFormation creates or updates the stack; no concurrency to reserve.",
        CKV_AWS_116="Invoked synchronously by CloudFormation, which receives and reports every failure.",
        CKV_AWS_117=network_reason,
        CKV_AWS_173="The function has no environment variables.",
        CKV_AWS_272="Inline code generated and reviewed with the template; there is no package to sign.",
    )


def add_custom_resource_function(
    template: Template,
    name: str,
    *,
    source: str,
    description: str,
    policies: Callable[[LogGroup], list[Policy] | object],
    timeout: int,
    tag: str,
    network_reason: str,
) -> Function:
    """`{name}LogGroup`, `{name}FunctionRole` (its policies made from the log group) and `{name}Function`
    running functions/`source`; the function."""
    log_group = template.add_resource(
        LogGroup(
            f"{name}LogGroup",
            RetentionInDays=LOG_RETENTION_DAYS,
            KmsKeyId=customer_key(),
            Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    role = template.add_resource(
        Role(
            f"{name}FunctionRole",
            AssumeRolePolicyDocument=service_trust_policy("lambda.amazonaws.com", None),
            Policies=policies(log_group),
            Tags=tags(tag),
        )
    )
    return template.add_resource(
        Function(
            f"{name}Function",
            Description=Sub(description),
            Runtime="python3.12",
            Handler="index.handler",
            Code=Code(ZipFile=functions.read(source)),
            Role=GetAtt(role, "Arn"),
            Timeout=timeout,
            MemorySize=128,
            LoggingConfig=LoggingConfig(LogGroup=Ref(log_group)),
            Tags=tags(tag),
            Metadata=function_skips(network_reason),
        )
    )
