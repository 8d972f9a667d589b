"""The inline Lambda function behind one of the stack's custom resources, built the same way for each: its
own encrypted log group (kept as the stack's other logs are), a role that trusts Lambda with the policies
the caller gives, and the function with its source from moodle_cfn.functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from troposphere import GetAtt, Ref, Sub, Template
from troposphere.awslambda import Code, Environment, Function, LoggingConfig, VPCConfig
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup

from moodle_cfn import functions
from moodle_cfn.common import RETAIN_EXCEPT_ON_CREATE, checkov_skips, tags
from moodle_cfn.encryption import CUSTOMER_KEY_SKIP_REASON, customer_key
from moodle_cfn.policies import service_trust_policy

LOG_RETENTION_DAYS = 90


INVOKED_BY_CLOUDFORMATION = (
    "Invoked synchronously by CloudFormation, which receives and reports every failure."
)
NO_ENVIRONMENT = "The function has no environment variables."


def function_skips(network_reason: str | None, invocation: str, environment: str) -> dict[str, object]:
    """checkov's Lambda checks that do not apply to a custom resource's function: `network_reason` says why
    it needs no VPC (None: it runs in one), `invocation` who reports its failures, `environment` why its
    environment needs no key of its own."""
    reasons = {
        "CKV_AWS_115": "Runs only when CloudFormation creates or updates the stack; no concurrency to reserve.",
        "CKV_AWS_116": invocation,
        "CKV_AWS_173": environment,
        "CKV_AWS_272": "Inline code generated and reviewed with the template; there is no package to sign.",
    }
    if network_reason is not None:
        reasons["CKV_AWS_117"] = network_reason
    return checkov_skips(**dict(sorted(reasons.items())))


@dataclass(frozen=True)
class InVpc:
    """Where a function runs in the VPC: its subnets and security group, and the checkov reasons that
    change with it (who invokes it, what its environment holds)."""

    subnet_ids: object
    security_group_id: object
    invocation: str
    environment: dict[str, object]
    environment_reason: str


def add_custom_resource_function(
    template: Template,
    name: str,
    *,
    source: str,
    description: str,
    policies: Callable[[LogGroup], list[Policy] | object],
    timeout: int,
    tag: str,
    network_reason: str | None = None,
    vpc: InVpc | None = None,
) -> Function:
    """`{name}LogGroup`, `{name}FunctionRole` (its policies made from the log group) and `{name}Function`
    running functions/`source`, outside the VPC (`network_reason` says why) or in it (`vpc`); the function."""
    if (network_reason is None) == (vpc is None):
        raise ValueError(f"{name}: give either network_reason (outside the VPC) or vpc")
    log_group = template.add_resource(
        LogGroup(
            f"{name}LogGroup",
            RetentionInDays=LOG_RETENTION_DAYS,
            KmsKeyId=customer_key(),
            Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    role = Role(
        f"{name}FunctionRole",
        AssumeRolePolicyDocument=service_trust_policy("lambda.amazonaws.com", None),
        Policies=policies(log_group),
        Tags=tags(tag),
    )
    function = Function(
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
        Metadata=function_skips(network_reason, INVOKED_BY_CLOUDFORMATION, NO_ENVIRONMENT),
    )
    if vpc is not None:
        # Lambda's managed policy for network interfaces in a VPC (Lambda Developer Guide, "Giving Lambda
        # functions access to resources in an Amazon VPC"): ENI actions take no resource narrower than "*".
        role.ManagedPolicyArns = [
            Sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole")
        ]
        function.VpcConfig = VPCConfig(SubnetIds=vpc.subnet_ids, SecurityGroupIds=[vpc.security_group_id])
        function.Environment = Environment(Variables=vpc.environment)
        function.Metadata = function_skips(None, vpc.invocation, vpc.environment_reason)
    template.add_resource(role)
    return template.add_resource(function)
