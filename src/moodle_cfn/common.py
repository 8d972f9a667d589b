"""Pieces every layer shares: operator parameters with their console labels, tags, scanner suppressions."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from troposphere import AWSHelperFn, Equals, Or, Parameter, Sub, Tags, Template

APPLICATION_TAG = "moodle-cfn"

# The values CloudWatch Logs accepts for RetentionInDays.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)  # fmt: skip

# Console parameter groups, in the order the master template shows them.
GROUP_SITE = "Site"
GROUP_NETWORK = "Network"
GROUP_DATABASE = "Database (Aurora PostgreSQL)"
GROUP_FILE_SYSTEM = "Shared file system (EFS moodledata)"
GROUP_ENCRYPTION = "Encryption at rest"
GROUP_CACHE = "Caches (ElastiCache: sessions and application cache)"
GROUP_WEB = "Web tier (Auto Scaling group)"
# The exam-time windows have a group of their own, so a console user sees them together with how to use them.
GROUP_SCHEDULE = "Exam-time scaling: up to three windows (a window with an empty start is not used)"
GROUP_EDGE = "Load balancer and CloudFront"
GROUP_MONITORING = "Monitoring and alarms"
GROUP_MOODLE = "Moodle"
GROUP_TEMPLATES = "Template location (filled in by `moodle-cfn publish`)"


# DeletionPolicy/UpdateReplacePolicy pairs for stateful resources.
#
# RETAIN_EXCEPT_ON_CREATE is the policy for what a site keeps: retained when the stack is deleted or the
# resource replaced, but deleted when the stack operation that created it rolls back, so a failed first
# deploy leaves nothing behind (no log group or vault named after SiteName) to block the next one.
# "RetainExceptOnCreate behaves like Retain for stack operations, except for the stack operation that
# initially created the resource. If the stack operation that created the resource is rolled back,
# CloudFormation deletes the resource." (AWS CloudFormation Template Reference, "DeletionPolicy attribute",
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-attribute-deletionpolicy.html)
# UpdateReplacePolicy has no such value (Delete, Retain or Snapshot): a replaced resource is kept.
RETAIN_EXCEPT_ON_CREATE = {"DeletionPolicy": "RetainExceptOnCreate", "UpdateReplacePolicy": "Retain"}
# RETAIN keeps a resource even through the rollback of the create that made it. Only for what such a
# rollback could not delete and whose name is generated (so it cannot block a retry): the load balancer's
# access-log bucket, which holds objects from the moment logging is enabled (ELB writes a test file to
# validate the bucket, and S3 refuses to delete a bucket that is not empty, which would fail the rollback).
RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
SNAPSHOT = {"DeletionPolicy": "Snapshot", "UpdateReplacePolicy": "Snapshot"}


@dataclass(frozen=True)
class OperatorParameter:
    """A parameter the operator sets on the master stack, with its console label and group.

    The layer that consumes the value declares the same `parameter` object, so the name exists once and the
    master passes it through with a plain Ref.
    """

    parameter: Parameter
    label: str
    group: str

    @property
    def name(self) -> str:
        """The parameter's logical name."""
        return self.parameter.title


SITE_NAME = OperatorParameter(
    Parameter(
        "SiteName",
        Type="String",
        Default="moodle",
        AllowedPattern=r"^[a-z][a-z0-9-]{1,19}$",
        ConstraintDescription="2-20 characters: lower-case letters, digits and hyphens, starting with a letter.",
        Description="Short name of this Moodle site, used in resource Name tags and dashboards.",
    ),
    label="Site name",
    group=GROUP_SITE,
)


def number_parameter(
    name: str, default: float, low: float, high: float, description: str, *, label: str, group: str
) -> OperatorParameter:
    """A Number operator parameter between `low` and `high`."""
    return OperatorParameter(
        Parameter(name, Type="Number", Default=default, MinValue=low, MaxValue=high, Description=description),
        label=label,
        group=group,
    )


def log_retention_parameter(
    name: str, default: int, description: str, *, label: str, group: str
) -> OperatorParameter:
    """A number of days limited to the values CloudWatch Logs accepts as a retention."""
    return OperatorParameter(
        Parameter(
            name,
            Type="Number",
            Default=default,
            AllowedValues=list(LOG_RETENTION_DAYS),
            Description=description,
        ),
        label=label,
        group=group,
    )


def tags(name: str, **extra: str) -> Tags:
    """Tags for one resource: a Name prefixed with the site name, plus the application tag.

    `name` is a suffix such as "public-1"; stack-level tags from the operator propagate to every resource by
    CloudFormation itself, so only what is specific to the resource is set here.
    """
    return Tags(Name=Sub(f"${{{SITE_NAME.name}}}-{name}"), Application=APPLICATION_TAG, **extra)


def checkov_skips(**reasons: str) -> dict[str, object]:
    """Resource Metadata that suppresses checkov checks, each with the reason it does not apply.

    Called as `checkov_skips(CKV_AWS_158="why")`; the reason is mandatory by construction.
    """
    return {
        "checkov": {
            "skip": [{"id": check_id, "comment": reason} for check_id, reason in sorted(reasons.items())]
        }
    }


def declare_parameters(template: Template, parameters: Iterable[OperatorParameter]) -> None:
    """Declare operator parameters in a template (the child side of a pass-through)."""
    for parameter in parameters:
        template.add_parameter(parameter.parameter)


def equals_any(value: AWSHelperFn, options: list[str]) -> Or:
    """Condition expression: `value` equals one of `options` (Fn::Or takes 2-10 operands, so nest)."""
    tests = [Equals(value, option) for option in options]
    chunks = [tests[i : i + 10] for i in range(0, len(tests), 10)]
    groups = [Or(*chunk) if len(chunk) > 1 else chunk[0] for chunk in chunks]
    return Or(*groups) if len(groups) > 1 else groups[0]


@functools.cache
def output_as_parameter(output: str, type_: str = "String") -> Parameter:
    """The parameter a later layer declares to receive an earlier layer's output of the same name."""
    return Parameter(output, Type=type_, Description=f"{output} (an output of an earlier layer)")


# The CloudWatch namespace of Moodle's own health metrics (moodle-metrics.sh publishes there, the web role
# may publish only there, the monitoring layer's alarms read it).
MOODLE_METRICS_NAMESPACE = "Moodle"
