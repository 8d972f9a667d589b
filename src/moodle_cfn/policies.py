"""IAM policy documents, built only from awacs action constants and scoped to this stack's resources."""

from __future__ import annotations

from dataclasses import dataclass

from awacs import (
    autoscaling,
    cloudformation,
    cloudwatch,
    ec2,
    elasticfilesystem,
    logs,
    rds,
    secretsmanager,
    ssm,
    ssmmessages,
)
from awacs.aws import (
    Allow,
    ArnEquals,
    ArnLike,
    Condition,
    PolicyDocument,
    Principal,
    Statement,
    StringEquals,
)
from awacs.aws import Condition as AwsCondition
from awacs.sts import AssumeRole
from troposphere import AWSHelperFn, Ref, Sub

from moodle_cfn.common import MOODLE_METRICS_NAMESPACE

POLICY_VERSION = "2012-10-17"


def service_trust_policy(service: str, source_arn: AWSHelperFn | str | None) -> PolicyDocument:
    """Trust policy letting one AWS service assume a role, only on behalf of this account and `source_arn`.

    The aws:SourceAccount / aws:SourceArn conditions stop the confused-deputy problem: another account's
    resource cannot make the service act with this role. `source_arn` None is for services that do not
    send those keys when they assume a role (AWS Backup): a condition would then lock them out.
    """
    statement = Statement(Effect=Allow, Principal=Principal("Service", service), Action=[AssumeRole])
    if source_arn is not None:
        statement.Condition = Condition(
            [
                StringEquals({"aws:SourceAccount": Ref("AWS::AccountId")}),
                ArnLike({"aws:SourceArn": source_arn}),
            ]
        )
    return PolicyDocument(Version=POLICY_VERSION, Statement=[statement])


def log_delivery_policy(log_group_arn: AWSHelperFn) -> PolicyDocument:
    """Permissions to write log streams into one log group (used by VPC flow logs).

    `log_group_arn` is `GetAtt(group, "Arn")`, which already ends in `:*` and so covers the group's streams.
    DescribeLogGroups has no resource-level permissions ("*" only, Service Authorization Reference, Amazon
    CloudWatch Logs): a statement naming log-group ARNs never matches it. It is read-only.
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
                Resource=["*"],
            ),
        ],
    )


def deletion_protection_policy(cluster_arn: AWSHelperFn, log_group_arn: AWSHelperFn) -> PolicyDocument:
    """What the deletion-protection function may do: modify this one cluster (its only RDS permission; a
    DeletionProtection change names no other resource) and write its own log."""
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Sid="SwitchThisClustersDeletionProtection",
                Effect=Allow,
                Action=[rds.ModifyDBCluster],
                Resource=[cluster_arn],
            ),
            Statement(
                Sid="WriteItsOwnLog",
                Effect=Allow,
                Action=[logs.CreateLogStream, logs.PutLogEvents],
                Resource=[log_group_arn],
            ),
        ],
    )


@dataclass(frozen=True)
class WebNodeResources:
    """The ARNs a web node may use; every one belongs to this stack."""

    secret_arns: list[AWSHelperFn]
    file_system_arn: AWSHelperFn
    access_point_arn: AWSHelperFn
    # The access point of the code archives, which the web server's user cannot reach.
    code_access_point_arn: AWSHelperFn
    log_group_arns: list[AWSHelperFn]
    # The group's tag (key, value) that scopes which group's lifecycle actions a node may complete.
    group_tag: tuple[str, AWSHelperFn]
    # The SSM parameter where the node that installs or upgrades Moodle publishes the release.
    release_parameter_arn: AWSHelperFn
    # Statements that exist only for some parameter values, each `If(condition, Statement, NoValue)`: in
    # the role's own policy, so they are attached before any node boots (a standalone AWS::IAM::Policy is
    # attached whenever CloudFormation gets to it, possibly after the first node asked for it).
    conditional_statements: tuple[AWSHelperFn, ...] = ()


def web_node_policy(resources: WebNodeResources) -> PolicyDocument:
    """What a Moodle web node may do beyond Session Manager: read its secrets, mount its file system through
    its access point, write its logs and metrics, and report to CloudFormation."""
    document = PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Sid="ReadThisSitesSecrets",
                Effect=Allow,
                Action=[secretsmanager.GetSecretValue, secretsmanager.DescribeSecret],
                Resource=resources.secret_arns,
            ),
            # Only through the site's two access points (moodledata, and the code archives), each of which
            # acts as its own user: never as root, so no ClientRootAccess.
            Statement(
                Sid="MountThroughTheSitesAccessPoints",
                Effect=Allow,
                Action=[elasticfilesystem.ClientMount, elasticfilesystem.ClientWrite],
                Resource=[resources.file_system_arn],
                Condition=AwsCondition(
                    ArnEquals(
                        {
                            "elasticfilesystem:AccessPointArn": [
                                resources.access_point_arn,
                                resources.code_access_point_arn,
                            ]
                        }
                    )
                ),
            ),
            Statement(
                Sid="PublishTheSitesMoodleRelease",
                Effect=Allow,
                Action=[ssm.PutParameter],
                Resource=[resources.release_parameter_arn],
            ),
            Statement(
                Sid="WriteNodeLogs",
                Effect=Allow,
                Action=[logs.CreateLogStream, logs.PutLogEvents, logs.DescribeLogStreams],
                Resource=resources.log_group_arns,
            ),
            # The group's ARN holds a generated id the launch template cannot know (the group is made after
            # it), so the site's own tag on the group scopes the hooks' heartbeats and completions (launch and drain).
            Statement(
                Sid="KeepAndCompleteThisGroupsLifecycleHooks",
                Effect=Allow,
                Action=[autoscaling.RecordLifecycleActionHeartbeat, autoscaling.CompleteLifecycleAction],
                Resource=[
                    Sub(
                        "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:autoScalingGroup:*"
                    )
                ],
                Condition=AwsCondition(
                    StringEquals(
                        {f"autoscaling:ResourceTag/{resources.group_tag[0]}": resources.group_tag[1]}
                    )
                ),
            ),
            # DescribeAutoScalingGroups has no resource-level permissions ("*" only); it is read-only.
            Statement(
                Sid="ReadTheGroupsLaunchTemplateVersion",
                Effect=Allow,
                Action=[autoscaling.DescribeAutoScalingGroups],
                Resource=["*"],
            ),
            Statement(
                Sid="SignalAndReadThisStack",
                Effect=Allow,
                Action=[cloudformation.SignalResource, cloudformation.DescribeStackResource],
                Resource=[Ref("AWS::StackId")],
            ),
            # PutMetricData and DescribeTags have no resource-level permissions: "*" is the only resource
            # they accept. Metrics are limited to the CloudWatch agent's namespace.
            Statement(
                Sid="AgentMetrics",
                Effect=Allow,
                Action=[cloudwatch.PutMetricData],
                Resource=["*"],
                Condition=AwsCondition(StringEquals({"cloudwatch:namespace": "CWAgent"})),
            ),
            Statement(Sid="AgentInstanceTags", Effect=Allow, Action=[ec2.DescribeTags], Resource=["*"]),
            # Moodle's own health (moodle-metrics.sh), in its namespace only: "cloudwatch:namespace" is the
            # condition key PutMetricData supports (Service Authorization Reference, Amazon CloudWatch; CloudWatch
            # User Guide, "Using condition keys to limit access to CloudWatch namespaces").
            Statement(
                Sid="PublishMoodleHealthMetrics",
                Effect=Allow,
                Action=[cloudwatch.PutMetricData],
                Resource=["*"],
                Condition=AwsCondition(StringEquals({"cloudwatch:namespace": MOODLE_METRICS_NAMESPACE})),
            ),
            # Session Manager and nothing else of Systems Manager: the five actions of AWS's own policy for
            # it (AWSCloud9SSMInstanceProfile, https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCloud9SSMInstanceProfile.html).
            # AmazonSSMManagedInstanceCore would add ssm:GetParameter(s) on "*": every parameter of the
            # account and Region, SecureStrings included. The ssmmessages actions accept only "*"; the
            # agent registers the instance with UpdateInstanceInformation. All five are writes.
            Statement(
                Sid="OpenSessionManagerSessions",
                Effect=Allow,
                Action=[
                    ssmmessages.CreateControlChannel,
                    ssmmessages.CreateDataChannel,
                    ssmmessages.OpenControlChannel,
                    ssmmessages.OpenDataChannel,
                    ssm.UpdateInstanceInformation,
                ],
                Resource=["*"],
            ),
        ],
    )
    # awacs types Statement as a list of Statement objects; CloudFormation takes an Fn::If there too (the
    # element goes when it gives AWS::NoValue), so the conditional ones are appended past its type check.
    document.properties["Statement"].extend(resources.conditional_statements)
    return document


def ec2_trust_policy() -> PolicyDocument:
    """Trust policy for an EC2 instance role."""
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(Effect=Allow, Principal=Principal("Service", "ec2.amazonaws.com"), Action=[AssumeRole])
        ],
    )
