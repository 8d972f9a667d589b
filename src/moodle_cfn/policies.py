"""IAM policy documents, built only from awacs action constants and scoped to this stack's resources."""

from __future__ import annotations

from awacs import logs
from awacs.aws import (
    Allow,
    ArnLike,
    Condition,
    PolicyDocument,
    Principal,
    Statement,
    StringEquals,
)
from awacs.sts import AssumeRole
from troposphere import AWSHelperFn, Ref, Sub

POLICY_VERSION = "2012-10-17"


def service_trust_policy(service: str, source_arn: AWSHelperFn | str) -> PolicyDocument:
    """Trust policy letting one AWS service assume a role, only on behalf of this account and `source_arn`.

    The aws:SourceAccount / aws:SourceArn conditions stop the confused-deputy problem: another account's
    resource cannot make the service act with this role.
    """
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Effect=Allow,
                Principal=Principal("Service", service),
                Action=[AssumeRole],
                Condition=Condition(
                    [
                        StringEquals({"aws:SourceAccount": Ref("AWS::AccountId")}),
                        ArnLike({"aws:SourceArn": source_arn}),
                    ]
                ),
            )
        ],
    )


def log_delivery_policy(log_group_arn: AWSHelperFn) -> PolicyDocument:
    """Permissions to write log streams into one log group (used by VPC flow logs).

    `log_group_arn` is `GetAtt(group, "Arn")`, which already ends in `:*` and so covers the group's streams.
    DescribeLogGroups cannot be scoped to one group (it lists by prefix), so it is limited to this account and
    region's log groups, the narrowest resource the API accepts.
    """
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Sid="WriteFlowLogStreams",
                Effect=Allow,
                Action=[logs.CreateLogStream, logs.PutLogEvents, logs.DescribeLogStreams],
                Resource=[log_group_arn],
            ),
            Statement(
                Sid="FindTheLogGroup",
                Effect=Allow,
                Action=[logs.DescribeLogGroups],
                Resource=[Sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*")],
            ),
        ],
    )
