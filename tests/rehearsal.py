"""Deploy rehearsals in a local moto server: layer by layer, each fed what the master would pass it.

moto runs CloudFormation for real for most network, EFS, IAM and logs resources, but not all. Known gaps
(moto 5.2), which each rehearsal works around and states:
- GetAtt <NestedStack>.Outputs.X fails, so layers are deployed one by one and outputs fed forward; the
  values each child gets are read from the master template's nested-stack Parameters (`child_parameters`),
  never hand-copied.
- Ignored or unsupported: AWS::RDS::DBCluster, AWS::RDS::DBClusterParameterGroup, Aurora DBInstances
  without EngineVersion (crash), AWS::SecretsManager::Secret, ElastiCache, CloudFront, ACM, alarms, scaling
  policies, SecurityGroupEgress. An output or property that GetAtt's one of them fails CreateStack with
  HTTP 500, so `with_placeholders` removes them and turns every reference into a named placeholder string.
- GetAtt FileSystem.Arn / AccessPoint.Arn are unsupported (the output silently vanishes), and
  DescribeRouteTables does not show associations made by AWS::EC2::SubnetRouteTableAssociation.
- moto's CloudFront has no CloudFormation resources at all (no Distribution, VpcOrigin, CachePolicy,
  OriginRequestPolicy or ResponseHeadersPolicy): that CloudFront reaches the internal load balancer through
  the VPC origin, and sends HSTS, is checked only on the template (tests/test_origin_access.py) and against
  the AWS documentation. Its Listener ignores ListenerAttributes (describe_listener_attributes answers only
  its own default), so the HTTPS listener's HSTS attribute is not rehearsed either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3

from moodle_cfn.layers import Layer
from moodle_cfn.rules import condition_values, effective_values

PLACEHOLDER = "moto-placeholder:"


SSM_TYPE = "AWS::SSM::Parameter::Value<"


def child_parameters(
    master_template: dict[str, Any],
    layer: Layer,
    given: dict[str, str],
    outputs_by_stack: dict[str, dict[str, str]],
    read_ssm: Callable[[str], str],
    region: str = "us-east-1",
) -> dict[str, str]:
    """The parameter values the master passes `layer`'s nested stack, for params `given`.

    `outputs_by_stack` maps a nested stack's logical id (NetworkStack, ...) to its deployed outputs. A master
    parameter of an SSM type is resolved as CloudFormation would, by reading the SSM parameter it names; an
    Fn::If by the master's Conditions for these values (the network outputs, in an existing VPC), an
    Fn::Join of a list parameter by joining it.
    """
    values = effective_values(master_template["Parameters"], given)
    conditions = stack_conditions(master_template, given, region)
    passed = master_template["Resources"][layer.stack_title]["Properties"]["Parameters"]

    def resolve(source: Any) -> str:
        if isinstance(source, str):
            return source
        if "Fn::If" in source:
            name, when_true, when_false = source["Fn::If"]
            return resolve(when_true if conditions[name] else when_false)
        if "Fn::Join" in source:
            separator, items = source["Fn::Join"]
            return resolve(items) if isinstance(items, dict) else separator.join(resolve(i) for i in items)
        if "Ref" in source:
            value = values[source["Ref"]]
            is_ssm = master_template["Parameters"][source["Ref"]]["Type"].startswith(SSM_TYPE)
            return read_ssm(value) if is_ssm else value
        stack, attribute = source["Fn::GetAtt"]
        return outputs_by_stack[stack][attribute.removeprefix("Outputs.")]

    return {name: resolve(source) for name, source in passed.items()}


def stack_conditions(master_template: dict[str, Any], given: dict[str, str], region: str) -> dict[str, bool]:
    """The master's Conditions for params `given` in `region`: which nested stacks exist, which Fn::If
    branch each passes on."""
    values = {**effective_values(master_template["Parameters"], given), "AWS::Region": region}
    return condition_values(master_template, values)


def layer_exists(master_template: dict[str, Any], layer: Layer, given: dict[str, str], region: str) -> bool:
    """Whether the master creates `layer`'s nested stack for params `given` (the network stack, say, only
    without ExistingVpcId)."""
    return layer.condition is None or stack_conditions(master_template, given, region)[layer.condition]


def with_placeholders(
    template: dict[str, Any], resources: set[str], attributes: set[tuple[str, str]] = frozenset()
) -> dict[str, Any]:
    """`template` without `resources`, and without GetAtt of `attributes`; every reference becomes a string
    "moto-placeholder:<Name>[.<Attribute>]" so the stack still creates and the gap stays visible."""

    def replace(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in resources:
                return PLACEHOLDER + node["Ref"]
            if set(node) == {"Fn::GetAtt"}:
                name, attribute = node["Fn::GetAtt"]
                if name in resources or (name, attribute) in attributes:
                    return f"{PLACEHOLDER}{name}.{attribute}"
            return {key: replace(value) for key, value in node.items()}
        if isinstance(node, list):
            return [replace(item) for item in node]
        return node

    trimmed = json.loads(json.dumps(template))
    for name in resources:
        del trimmed["Resources"][name]
    for resource in trimmed["Resources"].values():
        depends = resource.get("DependsOn")
        if depends is not None:
            kept = [d for d in ([depends] if isinstance(depends, str) else depends) if d not in resources]
            if kept:
                resource["DependsOn"] = kept
            else:
                del resource["DependsOn"]
    return replace(trimmed)


def deploy(
    aws: dict[str, Any], name: str, template: dict[str, Any], parameters: dict[str, str]
) -> dict[str, Any]:
    """Create a stack; return its outputs and logical -> physical ids."""
    cloudformation = boto3.client("cloudformation", **aws)
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    resources = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    return {
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "physical": {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources},
    }
