"""Master template: the operator's parameters and console form, the Rules, and the wiring of the nested layers.

Wiring is by name: a child parameter is either an operator parameter of the same name (passed with Ref) or
an output of the same name of an earlier layer (passed with GetAtt ...Outputs.Name). Nothing is hand-copied,
and a child parameter with no source is a build error. The network stack exists only without ExistingVpcId:
each of its outputs is passed through Fn::If, whose other branch is the operator's existing id or the
existing-VPC layer's security group (layers/existing_vpc.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from troposphere import (
    AWSHelperFn,
    Equals,
    GetAtt,
    If,
    Join,
    Output,
    Parameter,
    Ref,
    Sub,
    Template,
)
from troposphere.cloudformation import Stack

from moodle_cfn.common import GROUP_TEMPLATES, SITE_NAME, OperatorParameter
from moodle_cfn.layers import LAYERS, Layer, app, cache, database, existing_vpc, file_system, mail, site
from moodle_cfn.layers.address_plan import APP, DATA, PUBLIC
from moodle_cfn.layers.network import AVAILABILITY_ZONE_NAMES, VPC_ID

TEMPLATES_BUCKET_NAME = OperatorParameter(
    Parameter(
        "TemplatesBucketName",
        Type="String",
        AllowedPattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        ConstraintDescription="An S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens.",
        Description="S3 bucket holding the nested templates (the bucket `moodle-cfn publish` uploaded to).",
    ),
    label="Templates S3 bucket",
    group=GROUP_TEMPLATES,
)
TEMPLATES_KEY_PREFIX = OperatorParameter(
    Parameter(
        "TemplatesKeyPrefix",
        Type="String",
        Default="moodle-cfn/",
        AllowedPattern=r"^([0-9A-Za-z!_.*'()-]+/)*$",
        ConstraintDescription="Empty, or path segments each ending in '/', such as moodle-cfn/ or releases/v1/.",
        Description="Key prefix of the nested templates in the bucket; ends with '/'.",
    ),
    label="Templates key prefix",
    group=GROUP_TEMPLATES,
)
TEMPLATES_BUCKET_REGION = OperatorParameter(
    Parameter(
        "TemplatesBucketRegion",
        Type="String",
        Default="",
        AllowedPattern=r"^([a-z]{2}(-gov)?-[a-z]+-[0-9])?$",
        ConstraintDescription="Empty, or a region code such as eu-west-1.",
        Description="Region of the templates bucket. Empty means this stack's region; set it when StackSets "
        "deploy into regions other than the bucket's.",
    ),
    label="Templates bucket region",
    group=GROUP_TEMPLATES,
)
LOCATION_PARAMETERS = (TEMPLATES_BUCKET_NAME, TEMPLATES_KEY_PREFIX, TEMPLATES_BUCKET_REGION)
BUCKET_REGION_IS_STACK_REGION = "TemplatesBucketInStackRegion"


def s3_template_url(layer: Layer) -> Sub:
    """Where CloudFormation fetches a nested template: the published bucket, in its own region."""
    return Sub(
        "https://${TemplatesBucketName}.s3.${BucketRegion}.${AWS::URLSuffix}/${TemplatesKeyPrefix}"
        + layer.file_name,
        BucketRegion=If(
            BUCKET_REGION_IS_STACK_REGION, Ref("AWS::Region"), Ref(TEMPLATES_BUCKET_REGION.parameter)
        ),
    )


def local_template_url(layer: Layer) -> str:
    """A relative path, which makes cfn-lint check the parent/child contract (E3043, E1010)."""
    return layer.file_name


@dataclass(frozen=True)
class TemplateLocation:
    """Where the master finds its nested templates: the parameters and conditions that takes, and the URL."""

    parameters: tuple[OperatorParameter, ...]
    conditions: tuple[tuple[str, AWSHelperFn], ...]
    url: Callable[[Layer], object]


# The published master: nested templates in an S3 bucket given by parameters.
S3_LOCATION = TemplateLocation(
    LOCATION_PARAMETERS,
    ((BUCKET_REGION_IS_STACK_REGION, Equals(Ref(TEMPLATES_BUCKET_REGION.parameter), "")),),
    s3_template_url,
)
# The lint-only master: nested templates beside it on disk.
LOCAL_LOCATION = TemplateLocation((), (), local_template_url)


def operator_parameters(location: TemplateLocation = S3_LOCATION) -> tuple[OperatorParameter, ...]:
    """Every parameter of the master, in console order: site, then each layer's, then template location."""
    return (SITE_NAME, *(p for layer in LAYERS for p in layer.parameters), *location.parameters)


def add_console_form(template: Template, parameters: Iterable[OperatorParameter]) -> None:
    """Parameter groups and labels for the CloudFormation console (AWS::CloudFormation::Interface)."""
    for parameter in parameters:
        template.add_parameter(parameter.parameter)
        template.set_parameter_label(parameter.parameter, parameter.label)
        template.add_parameter_to_group(parameter.parameter, parameter.group)


NETWORK_LAYER = next(layer for layer in LAYERS if layer.name == "network")
EXISTING_VPC_LAYER = next(layer for layer in LAYERS if layer.condition == existing_vpc.USES_EXISTING_VPC)


@functools.cache
def existing_vpc_layer_outputs() -> frozenset[str]:
    """The outputs of the layer that stands in for the network layer in an existing VPC."""
    return frozenset(EXISTING_VPC_LAYER.build().outputs)


def in_existing_vpc(output: str) -> object:
    """What a consumer of network output `output` receives in an existing VPC: the operator's id, the
    existing-VPC layer's security group, or "" (NAT gateway ids, the VPC CIDR: none are the stack's own)."""
    from_parameter = existing_vpc.from_parameter(output)
    if from_parameter is not None:
        return from_parameter
    if output in existing_vpc_layer_outputs():
        return GetAtt(EXISTING_VPC_LAYER.stack_title, f"Outputs.{output}")
    return ""


def output_source(stack: Stack, layer: Layer, output: str) -> AWSHelperFn:
    """How the master passes `layer`'s output `output` on: GetAtt, through Fn::If for the network layer."""
    value = GetAtt(stack, f"Outputs.{output}")
    if layer is not NETWORK_LAYER:
        return value
    return If(existing_vpc.USES_EXISTING_VPC, in_existing_vpc(output), value)


def parameter_sources(
    template: Template, stacks: dict[str, Stack], outputs_by_layer: dict[str, set[str]]
) -> dict[str, AWSHelperFn]:
    """Every value a child may ask for: operator parameters by Ref, earlier layers' outputs by GetAtt
    (the network layer's through Fn::If, and before the existing-VPC layer's outputs of the same name)."""
    sources: dict[str, AWSHelperFn] = {name: operator_value(p) for name, p in template.parameters.items()}
    layers = {layer.name: layer for layer in LAYERS}
    for layer_name, outputs in outputs_by_layer.items():
        for output in sorted(outputs):
            sources.setdefault(output, output_source(stacks[layer_name], layers[layer_name], output))
    return sources


def operator_value(parameter: Parameter) -> AWSHelperFn:
    """An operator parameter as a nested stack receives it: a string, so a list is joined with commas."""
    if parameter.Type == "CommaDelimitedList":
        return Join(",", Ref(parameter))
    return Ref(parameter)


def stacks_read(value: object) -> set[str]:
    """Logical ids of the stacks whose outputs `value` reads (through Fn::If too)."""
    data = value.to_dict() if isinstance(value, AWSHelperFn) else value
    if isinstance(data, dict):
        if "Fn::GetAtt" in data:
            return {data["Fn::GetAtt"][0]}
        return {title for item in data.values() for title in stacks_read(item)}
    if isinstance(data, list):
        return {title for item in data for title in stacks_read(item)}
    return set()


def add_layer_stacks(template: Template, template_url: Callable[[Layer], object]) -> dict[str, Stack]:
    """One nested stack per layer, in order, each fed by name from the master's parameters and earlier outputs."""
    stacks: dict[str, Stack] = {}
    outputs_by_layer: dict[str, set[str]] = {}
    for layer in LAYERS:
        child = layer.build()
        sources = parameter_sources(template, stacks, outputs_by_layer)
        missing = sorted(set(child.parameters) - set(sources))
        if missing:
            raise ValueError(f"layer {layer.name}: no master parameter or earlier output named {missing}")
        parameters = {name: sources[name] for name in sorted(child.parameters)}
        stack = Stack(
            layer.stack_title,
            # Stateful resources inside a layer carry their own Snapshot/Retain policies; the nested
            # stack itself holds nothing that survives on its own.
            DeletionPolicy="Delete",
            UpdateReplacePolicy="Delete",
            TemplateURL=template_url(layer),
            Parameters=parameters,
        )
        if layer.condition:
            stack.Condition = layer.condition
        if layer.after_every_earlier_layer:
            # The earlier stacks it reads no output from; an output read already orders the two stacks. Not a
            # conditional one (it may not exist): the stacks that read the network's outputs wait for it.
            read = {title for value in parameters.values() for title in stacks_read(value)}
            stack.DependsOn = sorted(
                s.title for s in stacks.values() if s.title not in read and not getattr(s, "Condition", None)
            )
        stacks[layer.name] = template.add_resource(stack)
        outputs_by_layer[layer.name] = set(child.outputs)
    return stacks


# What an operator looks for after a deploy, by layer; the nested stacks keep the full detail.
MASTER_OUTPUTS = {
    "network": (
        (VPC_ID, "VPC id"),
        (AVAILABILITY_ZONE_NAMES, "Availability Zones in use"),
        (PUBLIC.ids_output, "Public subnet ids"),
        (APP.ids_output, "Private application subnet ids"),
        (DATA.ids_output, "Private data subnet ids"),
    ),
    "data": (
        (database.DATABASE_ENDPOINT, "Aurora writer endpoint"),
        (database.DATABASE_READER_ENDPOINT, "Aurora reader endpoint"),
        (
            database.DATABASE_MASTER_SECRET_ARN,
            "Secret of the database master user (managed and rotated by RDS)",
        ),
        (database.DATABASE_APP_SECRET_ARN, "Secret of Moodle's database user"),
        (file_system.FILE_SYSTEM_ID, "EFS file system holding moodledata"),
    ),
    "app": (
        (app.SITE_URL, "The Moodle site"),
        (app.SITE_TARGET, "DNS target for the domain when the stack does not manage its records"),
        (app.CLOUDFRONT_DOMAIN, "CloudFront domain name"),
        (app.LOAD_BALANCER_DNS, "Load balancer DNS name"),
        (app.AUTO_SCALING_GROUP, "Auto Scaling group of the web nodes"),
        (app.ADMIN_SECRET_OUTPUT, "Secret with Moodle's admin password"),
    ),
    "monitoring": (
        ("AlarmTopicArn", "SNS topic every alarm notifies (subscribe more endpoints to it)"),
        ("DashboardName", "CloudWatch dashboard of the site"),
    ),
    "cache": tuple(
        (role.output(what), f"{role.purpose} cache {what.lower()}")
        for role in cache.ROLES
        for what in ("Engine", "Endpoint")
    ),
}


def add_outputs(template: Template, stacks: dict[str, Stack]) -> None:
    """The MASTER_OUTPUTS, read from the nested stacks."""
    layers = {layer.name: layer for layer in LAYERS}
    for layer_name, outputs in MASTER_OUTPUTS.items():
        for name, description in outputs:
            value = output_source(stacks[layer_name], layers[layer_name], name)
            template.add_output(Output(name, Description=description, Value=value))


def build(location: TemplateLocation = S3_LOCATION) -> Template:
    """The master template; `location` says where each nested template is found."""
    template = Template(
        Description="moodle-cfn master: a highly available Moodle site (network, data, cache and app layers)"
    )
    add_console_form(template, operator_parameters(location))
    for name, condition in location.conditions:
        template.add_condition(name, condition)
    existing_vpc.add_conditions(template)
    for name, rule in site.master_rules().items():
        template.add_rule(name, rule)
    for name, rule in mail.master_rules().items():
        template.add_rule(name, rule)
    for name, rule in existing_vpc.master_rules().items():
        template.add_rule(name, rule)
    stacks = add_layer_stacks(template, location.url)
    add_outputs(template, stacks)
    return template
