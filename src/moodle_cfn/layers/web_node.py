"""The Moodle web node: its instance type and AMI, instance role, launch template, user data and log groups.

Instances run Amazon Linux 2023 from the public SSM parameter of the architecture matching the instance
type (Graviton or x86), require IMDSv2, have no key pair and no public address (shell access through SSM
Session Manager), and boot with bootstrap/user-data.sh. The Auto Scaling group that launches them is
auto_scaling.py's.
"""

from __future__ import annotations

from troposphere import AWSHelperFn, Base64, GetAtt, If, Parameter, Ref, Sub, Template
from troposphere.ec2 import (
    EBSBlockDevice,
    IamInstanceProfile,
    LaunchTemplate,
    LaunchTemplateBlockDeviceMapping,
    LaunchTemplateData,
    MetadataOptions,
    Monitoring,
    TagSpecifications,
)
from troposphere.iam import InstanceProfile, Policy, Role
from troposphere.logs import LogGroup

from moodle_cfn import bootstrap
from moodle_cfn.common import (
    GROUP_WEB,
    RETAIN_EXCEPT_ON_CREATE,
    SITE_NAME,
    OperatorParameter,
    checkov_skips,
    equals_any,
    log_retention_parameter,
    number_parameter,
    tags,
)
from moodle_cfn.encryption import CUSTOMER_KEY_SKIP_REASON, customer_key
from moodle_cfn.policies import WebNodeResources, ec2_trust_policy, web_node_policy

IS_GRAVITON = "WebInstanceIsGraviton"
GRAVITON_TYPES = [
    "t4g.medium", "t4g.large", "t4g.xlarge",
    "c7g.large", "c7g.xlarge", "c7g.2xlarge", "c7g.4xlarge",
    "m7g.large", "m7g.xlarge", "m7g.2xlarge", "m7g.4xlarge",
    "r7g.large", "r7g.xlarge",
]  # fmt: skip
X86_TYPES = [
    "t3.medium", "t3.large",
    "c7i.large", "c7i.xlarge", "c7i.2xlarge", "c7i.4xlarge",
    "m7i.large", "m7i.xlarge", "m7i.2xlarge", "m7i.4xlarge",
]  # fmt: skip
AL2023_AMI = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
LOG_NAMES = ("bootstrap", "apache-access", "apache-error", "php-fpm", "moodle-cron")
LAUNCH_TEMPLATE_TITLE = "WebLaunchTemplate"

WEB_INSTANCE_TYPE = OperatorParameter(
    Parameter(
        "WebInstanceType",
        Type="String",
        Default="m7g.large",
        AllowedValues=GRAVITON_TYPES + X86_TYPES,
        Description="Instance type of the web nodes. Graviton (t4g, c7g, m7g, r7g) costs ~20% less than Intel; "
        "the AMI follows the type.",
    ),
    label="Web instance type",
    group=GROUP_WEB,
)
WEB_ROOT_VOLUME_GIB = number_parameter(
    "WebRootVolumeSize",
    30,
    20,
    500,
    "Size (GiB) of each node's encrypted gp3 root volume.",
    label="Root volume (GiB)",
    group=GROUP_WEB,
)
APP_LOG_RETENTION_DAYS = log_retention_parameter(
    "AppLogRetentionDays",
    30,
    "Days CloudWatch Logs keeps the web nodes' logs (Apache, PHP-FPM, cron, bootstrap).",
    label="Web node log retention (days)",
    group=GROUP_WEB,
)


def _ami_parameter(arch: str) -> tuple[OperatorParameter, Parameter]:
    """The master takes the public SSM parameter name and resolves it; the web tier receives the AMI id."""
    name = f"WebAmi{arch.replace('_', '').capitalize()}"
    master_side = OperatorParameter(
        Parameter(
            name,
            Type="AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            Default=AL2023_AMI.format(arch=arch),
            Description=f"SSM parameter holding the Amazon Linux 2023 {arch} AMI (the latest by default).",
        ),
        label=f"Amazon Linux 2023 AMI ({arch})",
        group=GROUP_WEB,
    )
    return master_side, Parameter(
        name, Type="AWS::EC2::Image::Id", Description=f"Amazon Linux 2023 {arch} AMI id"
    )


AMI_ARM64, AMI_ARM64_ID = _ami_parameter("arm64")
AMI_X86_64, AMI_X86_64_ID = _ami_parameter("x86_64")
MASTER_ONLY_PARAMETERS = (AMI_ARM64, AMI_X86_64)


def add_conditions(template: Template) -> None:
    """Whether the instance type is Graviton, which picks the AMI's architecture."""
    template.add_condition(IS_GRAVITON, equals_any(Ref(WEB_INSTANCE_TYPE.parameter), GRAVITON_TYPES))


def add_log_groups(template: Template) -> dict[str, LogGroup]:
    """One log group per kind of node log, named so the CloudWatch agent config can name them."""
    groups = {}
    for log in LOG_NAMES:
        title = "".join(part.capitalize() for part in log.split("-")) + "LogGroup"
        groups[log] = template.add_resource(
            LogGroup(
                title,
                LogGroupName=Sub(f"/moodle/${{{SITE_NAME.name}}}/{log}"),
                RetentionInDays=Ref(APP_LOG_RETENTION_DAYS.parameter),
                KmsKeyId=customer_key(),
                Metadata=checkov_skips(CKV_AWS_158=CUSTOMER_KEY_SKIP_REASON),
                **RETAIN_EXCEPT_ON_CREATE,
            )
        )
    return groups


def add_instance_role(template: Template, resources: WebNodeResources) -> tuple[Role, InstanceProfile]:
    """The nodes' role: Session Manager, plus only this stack's secrets, file system, logs and caches. No AWS
    managed policy: each grants more than a node needs (policies.web_node_policy says what instead)."""
    role = template.add_resource(
        Role(
            "WebInstanceRole",
            AssumeRolePolicyDocument=ec2_trust_policy(),
            Policies=[Policy(PolicyName="moodle-web-node", PolicyDocument=web_node_policy(resources))],
            Metadata=checkov_skips(
                CKV_AWS_111="Session Manager's ssmmessages actions and ssm:UpdateInstanceInformation accept no "
                "narrower resource (AWS's own Session Manager policy grants them on *); every other write "
                "names this stack's resources"
            ),
            Tags=tags("web-node"),
        )
    )
    return role, template.add_resource(InstanceProfile("WebInstanceProfile", Roles=[Ref(role)]))


def add_launch_template(
    template: Template, profile: InstanceProfile, web_security_group: Parameter, user_data: Sub
) -> LaunchTemplate:
    """Amazon Linux 2023 for the instance type's architecture, IMDSv2 only, encrypted gp3 root volume."""
    return template.add_resource(
        LaunchTemplate(
            LAUNCH_TEMPLATE_TITLE,
            LaunchTemplateData=LaunchTemplateData(
                ImageId=If(IS_GRAVITON, Ref(AMI_ARM64_ID), Ref(AMI_X86_64_ID)),
                InstanceType=Ref(WEB_INSTANCE_TYPE.parameter),
                IamInstanceProfile=IamInstanceProfile(Arn=GetAtt(profile, "Arn")),
                SecurityGroupIds=[Ref(web_security_group)],
                MetadataOptions=MetadataOptions(
                    HttpTokens="required",
                    HttpEndpoint="enabled",
                    HttpPutResponseHopLimit=1,
                    InstanceMetadataTags="enabled",
                ),
                BlockDeviceMappings=[
                    LaunchTemplateBlockDeviceMapping(
                        DeviceName="/dev/xvda",
                        Ebs=EBSBlockDevice(
                            VolumeType="gp3",
                            VolumeSize=Ref(WEB_ROOT_VOLUME_GIB.parameter),
                            Encrypted=True,
                            DeleteOnTermination=True,
                        ),
                    )
                ],
                Monitoring=Monitoring(Enabled=True),
                UserData=Base64(user_data),
                TagSpecifications=[
                    TagSpecifications(ResourceType=kind, Tags=tags("web")) for kind in ("instance", "volume")
                ],
            ),
        )
    )


def user_data(**variables: AWSHelperFn | str) -> Sub:
    """bootstrap/user-data.sh with its Fn::Sub variables bound."""
    text = bootstrap.read("user-data.sh")
    missing = {name for name in bootstrap.placeholders(text) if not name.startswith("AWS::")} - set(variables)
    if missing:
        raise ValueError(f"user-data.sh uses unbound variables {sorted(missing)}")
    return Sub(text, **variables)
