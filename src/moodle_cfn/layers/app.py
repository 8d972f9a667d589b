"""App layer: everything around the Moodle web nodes (layers/site.py, load_balancer.py, web_tier.py, edge.py).

It takes the network's subnets and security groups, the data layer's secrets and file system, and the cache
layer's cluster ids, and builds the certificate, the load balancer, the Auto Scaling web tier, CloudFront
and the DNS records.
"""

from __future__ import annotations

from awacs import elasticache, kms, s3
from awacs.aws import Allow, Statement
from troposphere import (
    Equals,
    GetAtt,
    If,
    Join,
    Not,
    NoValue,
    Or,
    Output,
    Ref,
    Select,
    Split,
    Sub,
    Template,
)

from moodle_cfn import al2023
from moodle_cfn.common import (
    MOODLE_METRICS_NAMESPACE,
    SITE_NAME,
    OperatorParameter,
    declare_parameters,
    output_as_parameter,
)
from moodle_cfn.encryption import DATA_KMS_KEY_ARN, HAS_DATA_KMS_KEY
from moodle_cfn.layers import (
    auto_scaling,
    cache,
    connections,
    database,
    edge,
    file_system,
    listeners,
    load_balancer,
    mail,
    moodle,
    scaling_windows,
    site,
    waf,
    web_node,
    web_tier,
)
from moodle_cfn.policies import WebNodeResources

PARAMETERS: tuple[OperatorParameter, ...] = (
    *site.PARAMETERS,
    *load_balancer.PARAMETERS,
    *edge.PARAMETERS,
    *waf.PARAMETERS,
    *web_tier.PARAMETERS,
    *moodle.PARAMETERS,
    *mail.PARAMETERS,
    *web_node.MASTER_ONLY_PARAMETERS,
)
CHECKS = (*web_tier.CHECKS, *moodle.CHECKS, *connections.CHECKS, *mail.CHECKS)
EXPANDERS = {
    **web_tier.EXPANDERS,
    **moodle.EXPANDERS,
    # An AMI parameter: a public latest-AL2023 parameter, or a pinned AMI with its release (al2023.py).
    **{
        ami.name: al2023.expand_ami(ami.name, arch)
        for ami, arch in ((web_node.AMI_ARM64, "arm64"), (web_node.AMI_X86_64, "x86_64"))
    },
}
ANY_MEMCACHED = "AnyCacheIsMemcached"
HAS_CODE_BUNDLE = "HasMoodleCodeBundle"
PLUGINS_IN_S3 = "HasPluginsInS3"
ADMIN_SECRET_OUTPUT = "MoodleAdminSecretArn"

# Values taken from the data and cache layers (names are their outputs').
DATA_INPUTS = tuple(
    output_as_parameter(name)
    for name in (
        database.DATABASE_APP_SECRET_ARN,
        file_system.FILE_SYSTEM_ARN,
        file_system.ACCESS_POINT_ARN,
        file_system.CODE_ACCESS_POINT_ARN,
        database.DATABASE_ENDPOINT,
        database.DATABASE_READER_ENDPOINT,
        database.DATABASE_PORT,
        file_system.FILE_SYSTEM_ID,
        file_system.ACCESS_POINT_ID,
        file_system.CODE_ACCESS_POINT_ID,
    )
)
CACHE_INPUTS = tuple(
    output_as_parameter(role.output(what))
    for role in cache.ROLES
    for what in ("Id", "AuthSecretArn", "Endpoint", "Port")
)

SITE_URL = "SiteUrl"
CLOUDFRONT_DOMAIN = "CloudFrontDomainName"
LOAD_BALANCER_DNS = "LoadBalancerDnsName"
AUTO_SCALING_GROUP = "AutoScalingGroupName"
SITE_TARGET = "SiteTarget"
LOAD_BALANCER_FULL_NAME = "LoadBalancerFullName"
TARGET_GROUP_FULL_NAME = "TargetGroupFullName"


def declare(template: Template) -> None:
    """Parameters: operator choices, then values from the other layers."""
    operator = [p for p in PARAMETERS if p not in web_node.MASTER_ONLY_PARAMETERS]
    declare_parameters(
        template,
        (
            SITE_NAME,
            *operator,
            DATA_KMS_KEY_ARN,
            database.DATABASE_NAME,
            database.DATABASE_ENGINE_VERSION,
            *(role.engine for role in cache.ROLES),
        ),
    )
    for parameter in (
        *load_balancer.NETWORK_INPUTS,
        auto_scaling.APP_SUBNET_IDS,
        web_node.AMI_ARM64_ID,
        web_node.AMI_X86_64_ID,
        *DATA_INPUTS,
        *CACHE_INPUTS,
    ):
        template.add_parameter(parameter)


def cache_secret_arns() -> list[If]:
    """The valkey AUTH secrets, for the clusters running valkey."""
    return [If(role.is_valkey, Ref(role.output("AuthSecretArn")), NoValue) for role in cache.ROLES]


def conditional_statements(template: Template) -> tuple[If, ...]:
    """Permissions that exist only for some choices: the customer key, the operator's code bundle and
    plugin archives, and memcached node discovery. Each is a statement of the role's own policy under its
    condition (AWS::NoValue when the condition is false), not a policy resource of its own: so every one
    is attached with the role, before the first node boots."""
    template.add_condition(
        ANY_MEMCACHED, Or(*(Equals(Ref(r.engine.parameter), "memcached") for r in cache.ROLES))
    )
    cluster_arns = [
        If(
            r.is_memcached,
            Sub(
                "arn:${AWS::Partition}:elasticache:${AWS::Region}:${AWS::AccountId}:cluster:${Id}",
                Id=Ref(r.output("Id")),
            ),
            NoValue,
        )
        for r in cache.ROLES
    ]
    template.add_condition(PLUGINS_IN_S3, Not(Equals(Ref(moodle.PLUGINS_S3_PREFIX.parameter), "")))

    def object_arn(uri: OperatorParameter, suffix: str = "") -> Sub:
        path = Select(1, Split("s3://", Ref(uri.parameter)))
        return Sub(f"arn:${{AWS::Partition}}:s3:::${{Path}}{suffix}", Path=path)

    return tuple(
        If(condition, Statement(Sid=sid, Effect=Allow, Action=actions, Resource=resources), NoValue)
        for condition, sid, actions, resources in (
            # Secrets Manager decrypts a secret under the site's key with the caller's permission.
            (HAS_DATA_KMS_KEY, "DecryptSecretsAndFiles", [kms.Decrypt], [Ref(DATA_KMS_KEY_ARN.parameter)]),
            (HAS_CODE_BUNDLE, "ReadTheCodeBundle", [s3.GetObject], [object_arn(moodle.CODE_S3_URI)]),
            (
                PLUGINS_IN_S3,
                "ReadThePluginArchives",
                [s3.GetObject],
                [object_arn(moodle.PLUGINS_S3_PREFIX, "*")],
            ),
            (ANY_MEMCACHED, "ListMemcachedNodes", [elasticache.DescribeCacheClusters], cluster_arns),
        )
    )


def add_outputs(
    template: Template,
    load_balancer_resource: object,
    target_group: object,
    distribution: object,
    group: object,
) -> None:
    """Where the site is, and the names an operator looks up."""
    host = If(
        site.HAS_DOMAIN,
        Ref(site.DOMAIN_NAME.parameter),
        If(
            site.USE_CLOUDFRONT, GetAtt(distribution, "DomainName"), GetAtt(load_balancer_resource, "DNSName")
        ),
    )
    target = If(
        site.USE_CLOUDFRONT, GetAtt(distribution, "DomainName"), GetAtt(load_balancer_resource, "DNSName")
    )
    for name, description, value in (
        (SITE_URL, "The Moodle site (its wwwroot)", Sub("https://${Host}", Host=host)),
        (SITE_TARGET, "Point the domain's DNS record (CNAME or alias) here when HostedZoneId is empty", target),
        (CLOUDFRONT_DOMAIN, "CloudFront domain name (none without CloudFront)", If(site.USE_CLOUDFRONT, GetAtt(distribution, "DomainName"), "none")),
        (LOAD_BALANCER_DNS, "Load balancer DNS name", GetAtt(load_balancer_resource, "DNSName")),
        (AUTO_SCALING_GROUP, "Auto Scaling group of the web nodes", Ref(group)),
        (LOAD_BALANCER_FULL_NAME, "Load balancer name in CloudWatch metrics", GetAtt(load_balancer_resource, "LoadBalancerFullName")),
        (TARGET_GROUP_FULL_NAME, "Target group name in CloudWatch metrics", GetAtt(target_group, "TargetGroupFullName")),
    ):  # fmt: skip
        template.add_output(Output(name, Description=description, Value=value))


def site_host(load_balancer_resource: object, distribution: object) -> If:
    """The host name of the site: the domain, else CloudFront's name, else the load balancer's."""
    return If(
        site.HAS_DOMAIN,
        Ref(site.DOMAIN_NAME.parameter),
        If(
            site.USE_CLOUDFRONT, GetAtt(distribution, "DomainName"), GetAtt(load_balancer_resource, "DNSName")
        ),
    )


def node_settings(host: If, admin_secret: object, release_parameter: object) -> dict[str, object]:
    """Every value moodle-node-setup.sh reads from site.json, by name."""
    values: dict[str, object] = {
        "AWS_REGION": Ref("AWS::Region"),
        "STACK_NAME": Ref("AWS::StackName"),
        "INIT_RESOURCE": web_node.LAUNCH_TEMPLATE_TITLE,
        "SIGNAL_RESOURCE": auto_scaling.ASG_TITLE,
        "LIFECYCLE_HOOK": auto_scaling.LIFECYCLE_HOOK,
        "DRAIN_HOOK": auto_scaling.DRAIN_HOOK,
        "HEALTH_CHECK_PATH": load_balancer.HEALTH_CHECK_PATH,
        "WWWROOT": Sub("https://${Host}", Host=host),
        "MOODLE_VERSION": Ref(moodle.MOODLE_VERSION.parameter),
        "MOODLE_CODE_S3_URI": Ref(moodle.CODE_S3_URI.parameter),
        "MOODLE_CODE_SHA256": Ref(moodle.CODE_SHA256.parameter),
        "MOODLE_PLUGINS": Ref(moodle.MOODLE_PLUGINS.parameter),
        "RELEASE_PARAMETER": Ref(release_parameter),
        "ADMIN_EMAIL": Ref(moodle.ADMIN_EMAIL.parameter),
        "SITE_FULL_NAME": Ref(moodle.SITE_FULL_NAME.parameter),
        "SITE_SHORT_NAME": Ref(moodle.SITE_SHORT_NAME.parameter),
        "ADMIN_SECRET_ARN": Ref(admin_secret),
        "DATABASE_HOST": Ref(output_as_parameter(database.DATABASE_ENDPOINT)),
        "DATABASE_PORT": Ref(output_as_parameter(database.DATABASE_PORT)),
        # Moodle's read-only replica option (config.php): the same port and login as the writer.
        "DATABASE_READER_HOST": Ref(output_as_parameter(database.DATABASE_READER_ENDPOINT)),
        "DATABASE_NAME": Ref(database.DATABASE_NAME.parameter),
        # The major alone (the node installs that PostgreSQL client): a minor change rolls no node.
        "DATABASE_MAJOR_VERSION": Select(0, Split(".", Ref(database.DATABASE_ENGINE_VERSION.parameter))),
        "DATABASE_APP_SECRET_ARN": Ref(output_as_parameter(database.DATABASE_APP_SECRET_ARN)),
        "FILE_SYSTEM_ID": Ref(output_as_parameter(file_system.FILE_SYSTEM_ID)),
        "ACCESS_POINT_ID": Ref(output_as_parameter(file_system.ACCESS_POINT_ID)),
        "CODE_ACCESS_POINT_ID": Ref(output_as_parameter(file_system.CODE_ACCESS_POINT_ID)),
        # Moodle's own health metrics (moodle-metrics.sh): their namespace and Site dimension.
        "METRICS_NAMESPACE": MOODLE_METRICS_NAMESPACE,
        "SITE_NAME": Ref(SITE_NAME.parameter),
    }
    for role in cache.ROLES:
        prefix = role.key.upper()
        values[f"{prefix}_CACHE_ENGINE"] = Ref(role.engine.parameter)
        for what, suffix in (
            ("Id", "ID"),
            ("Endpoint", "ENDPOINT"),
            ("Port", "PORT"),
            ("AuthSecretArn", "AUTH_SECRET_ARN"),
        ):
            values[f"{prefix}_CACHE_{suffix}"] = Ref(output_as_parameter(role.output(what)))
    return values


def build() -> Template:
    """The app nested template."""
    template = Template(
        Description="moodle-cfn app: certificate, load balancer, Auto Scaling web tier with Moodle, CloudFront, DNS"
    )
    declare(template)
    site.add_conditions(template)
    cache.add_conditions(template)
    load_balancer.add_mappings_and_conditions(template)
    web_tier.add_conditions(template)
    waf.add_conditions(template)
    template.add_condition(HAS_CODE_BUNDLE, Not(Equals(Ref(moodle.CODE_S3_URI.parameter), "")))
    mail.add_conditions(template)

    certificate = site.add_certificate(template)
    alb, target_group = load_balancer.add_load_balancer(template)
    listeners.add_listeners(template, alb, target_group, site.regional_certificate_arn(certificate))
    cloudfront_acl = waf.add_web_acls(template, alb)
    distribution = edge.add_distribution(
        template, alb, site.cloudfront_certificate_arn(certificate), cloudfront_acl
    )
    edge.add_dns_records(template, alb, distribution)

    admin_secret = moodle.add_admin_secret(template)
    release_parameter = moodle.add_release_parameter(template)
    logs = web_node.add_log_groups(template)
    mail_credentials = mail.add_resources(template)
    resources = WebNodeResources(
        secret_arns=[
            Ref(output_as_parameter(database.DATABASE_APP_SECRET_ARN)),
            *cache_secret_arns(),
            Ref(admin_secret),
            *mail.secret_arns(mail_credentials),
        ],
        file_system_arn=Ref(output_as_parameter(file_system.FILE_SYSTEM_ARN)),
        access_point_arn=Ref(output_as_parameter(file_system.ACCESS_POINT_ARN)),
        code_access_point_arn=Ref(output_as_parameter(file_system.CODE_ACCESS_POINT_ARN)),
        log_group_arns=[GetAtt(group, "Arn") for group in logs.values()],
        group_tag=(auto_scaling.GROUP_SITE_TAG, Ref(SITE_NAME.parameter)),
        release_parameter_arn=moodle.release_parameter_arn(),
        conditional_statements=conditional_statements(template),
    )
    _, profile = web_node.add_instance_role(template, resources)
    host = site_host(alb, distribution)
    settings = {
        **node_settings(host, admin_secret, release_parameter),
        **mail.node_settings(mail_credentials),
    }
    launch_template = web_node.add_launch_template(
        template,
        profile,
        load_balancer.WEB_SECURITY_GROUP,
        web_node.user_data(
            SignalResource=auto_scaling.ASG_TITLE,
            InitResource=web_node.LAUNCH_TEMPLATE_TITLE,
            LifecycleHook=auto_scaling.LIFECYCLE_HOOK,
            NodeFilesDigest=moodle.node_files_digest(),
            # The settings, and the site name the log configuration uses.
            NodeInputs=Join(
                " | ", [*(value for _, value in sorted(settings.items())), Ref(SITE_NAME.parameter)]
            ),
        ),
    )
    launch_template.Metadata = moodle.init_metadata(settings)
    group = auto_scaling.add_auto_scaling_group(template, launch_template, target_group)
    auto_scaling.add_scaling(template, group, load_balancer.alb_full_name_for_metrics(alb, target_group))
    scaling_windows.add_scheduled_actions(template, group)
    add_outputs(template, alb, target_group, distribution, group)
    template.add_output(
        Output(
            ADMIN_SECRET_OUTPUT,
            Description="Secret holding the Moodle admin password",
            Value=Ref(admin_secret),
        )
    )
    template.add_output(
        Output(
            moodle.RELEASE_OUTPUT,
            Description="SSM parameter holding the Moodle release the site runs",
            Value=Ref(release_parameter),
        )
    )
    return template
