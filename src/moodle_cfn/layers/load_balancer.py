"""The Application Load Balancer: target group, access logs, and who may reach it (listeners: listeners.py).

With CloudFront the load balancer is internal, in the private application subnets, and CloudFront reaches
it through a VPC origin (edge.py): it has no public address at all. Its security group admits only the
CloudFront origin-facing managed prefix list, on the one port the VPC origin uses. Without CloudFront it
is internet-facing in the public subnets: viewers reach it on 443, and on 80 only to be redirected.
"""

from __future__ import annotations

from awacs import s3 as s3_actions
from awacs.aws import Allow, Bool, Condition, Deny, PolicyDocument, Principal, Statement
from troposphere import (
    Equals,
    FindInMap,
    GetAtt,
    If,
    Join,
    Not,
    NoValue,
    Parameter,
    Ref,
    Sub,
    Template,
)
from troposphere.ec2 import SecurityGroupIngress
from troposphere.elasticloadbalancingv2 import (
    LoadBalancer,
    LoadBalancerAttributes,
    Matcher,
    TargetGroup,
    TargetGroupAttribute,
)
from troposphere.s3 import (
    AbortIncompleteMultipartUpload,
    Bucket,
    BucketEncryption,
    BucketPolicy,
    LifecycleConfiguration,
    LifecycleRule,
    NoncurrentVersionExpiration,
    OwnershipControls,
    OwnershipControlsRule,
    PublicAccessBlockConfiguration,
    ServerSideEncryptionByDefault,
    ServerSideEncryptionRule,
    VersioningConfiguration,
)

from moodle_cfn.common import (
    GROUP_EDGE,
    RETAIN,
    OperatorParameter,
    checkov_skips,
    equals_any,
    number_parameter,
    tags,
)
from moodle_cfn.layers import site
from moodle_cfn.layers.address_plan import PUBLIC
from moodle_cfn.layers.auto_scaling import APP_SUBNET_IDS
from moodle_cfn.layers.network import VPC_ID, as_parameter
from moodle_cfn.layers.security_groups import ALB_SG, HTTP_PORT, HTTPS_PORT, WEB_SG
from moodle_cfn.policies import POLICY_VERSION

# bootstrap/moodle-health.php on every node: 200 only once the node serves this site's Moodle.
HEALTH_CHECK_PATH = "/lb-health"
# Moodle requests in flight when a node leaves (uploads, quiz submissions) get this long to finish.
DEREGISTRATION_DELAY_SECONDS = "60"
# Long enough for a course restore page; CloudFront's origin read timeout (60 s) is the tighter limit.
IDLE_TIMEOUT_SECONDS = "120"
HAS_PREFIX_LIST_PARAMETER = "HasCloudFrontPrefixListParameter"

# Elastic Load Balancing's log-delivery account per region, for regions older than August 2022; newer
# regions use the logdelivery.elasticloadbalancing.amazonaws.com service principal.
ELB_LOG_ACCOUNTS = {
    "us-east-1": "127311923021",
    "us-east-2": "033677994240",
    "us-west-1": "027434742980",
    "us-west-2": "797873946194",
    "af-south-1": "098369216593",
    "ap-east-1": "754344448648",
    "ap-south-1": "718504428378",
    "ap-northeast-1": "582318560864",
    "ap-northeast-2": "600734575887",
    "ap-northeast-3": "383597477331",
    "ap-southeast-1": "114774131450",
    "ap-southeast-2": "783225319266",
    "ca-central-1": "985666609251",
    "eu-central-1": "054676820928",
    "eu-west-1": "156460612806",
    "eu-west-2": "652711504416",
    "eu-west-3": "009996457667",
    "eu-south-1": "635631232127",
    "eu-north-1": "897822967062",
    "me-south-1": "076674570225",
    "sa-east-1": "507241528517",
}
# The com.amazonaws.global.cloudfront.origin-facing managed prefix list, per region. Elsewhere the
# operator gives its id (aws ec2 describe-managed-prefix-lists).
CLOUDFRONT_PREFIX_LISTS = {
    "us-east-1": "pl-3b927c52",
    "us-east-2": "pl-b6a144df",
    "us-west-1": "pl-4ea04527",
    "us-west-2": "pl-82a045eb",
    "eu-west-1": "pl-4fa04526",
    "eu-west-2": "pl-93a247fa",
    "eu-central-1": "pl-a3a144ca",
    "ap-southeast-1": "pl-31a34658",
    "ap-southeast-2": "pl-b8a742d1",
    "ap-northeast-1": "pl-58a04531",
}
ELB_ACCOUNT_REGION = "RegionHasElbLogAccount"
TARGET_GROUP_TITLE = "NodeTargetGroup"

CLOUDFRONT_PREFIX_LIST_ID = OperatorParameter(
    Parameter(
        "CloudFrontPrefixListId",
        Type="String",
        Default="",
        AllowedPattern=r"^(pl-[0-9a-f]{8,17})?$",
        ConstraintDescription="Empty, or a managed prefix list id such as pl-3b927c52.",
        Description="Id of the com.amazonaws.global.cloudfront.origin-facing prefix list. Empty: looked up, in "
        "the regions docs/design.md lists (App design); set it elsewhere.",
    ),
    label="CloudFront origin-facing prefix list id (other regions)",
    group=GROUP_EDGE,
)
ACCESS_LOG_RETENTION_DAYS = number_parameter(
    "AccessLogRetentionDays",
    90,
    1,
    3650,
    "Days the load balancer access logs are kept in their S3 bucket.",
    label="Load balancer access log retention (days)",
    group=GROUP_EDGE,
)
PARAMETERS = (CLOUDFRONT_PREFIX_LIST_ID, ACCESS_LOG_RETENTION_DAYS)

VPC = as_parameter(VPC_ID)
PUBLIC_SUBNET_IDS = as_parameter(PUBLIC.ids_output)
ALB_SECURITY_GROUP = as_parameter(ALB_SG.id_output)
WEB_SECURITY_GROUP = as_parameter(WEB_SG.id_output)
NETWORK_INPUTS = (VPC, PUBLIC_SUBNET_IDS, ALB_SECURITY_GROUP, WEB_SECURITY_GROUP)


def add_mappings_and_conditions(template: Template) -> None:
    """Per-region lookups and the conditions choosing between them."""
    template.add_mapping(
        "ElbLogDelivery", {region: {"AccountId": account} for region, account in ELB_LOG_ACCOUNTS.items()}
    )
    template.add_mapping(
        "CloudFrontPrefixList", {region: {"Id": pl} for region, pl in CLOUDFRONT_PREFIX_LISTS.items()}
    )
    template.add_condition(ELB_ACCOUNT_REGION, equals_any(Ref("AWS::Region"), sorted(ELB_LOG_ACCOUNTS)))
    template.add_condition(
        HAS_PREFIX_LIST_PARAMETER, Not(Equals(Ref(CLOUDFRONT_PREFIX_LIST_ID.parameter), ""))
    )


def log_bucket_policy(bucket: Bucket) -> PolicyDocument:
    """Elastic Load Balancing may write this account's logs; nobody may use the bucket without TLS."""
    logs_prefix = Sub("${Bucket}/AWSLogs/${AWS::AccountId}/*", Bucket=GetAtt(bucket, "Arn"))
    delivery = If(
        ELB_ACCOUNT_REGION,
        Principal(
            "AWS",
            Sub(
                "arn:${AWS::Partition}:iam::${Account}:root",
                Account=FindInMap("ElbLogDelivery", Ref("AWS::Region"), "AccountId"),
            ),
        ),
        Principal("Service", "logdelivery.elasticloadbalancing.amazonaws.com"),
    )
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Sid="ElbLogDelivery",
                Effect=Allow,
                Principal=delivery,
                Action=[s3_actions.PutObject],
                Resource=[logs_prefix],
            ),
            Statement(
                Sid="DenyInsecureTransport",
                Effect=Deny,
                Principal=Principal("*"),
                Action=[s3_actions.Action("*")],
                Resource=[GetAtt(bucket, "Arn"), Sub("${Bucket}/*", Bucket=GetAtt(bucket, "Arn"))],
                Condition=Condition(Bool("aws:SecureTransport", "false")),
            ),
        ],
    )


def add_log_bucket(template: Template) -> Bucket:
    """Encrypted, private, versioned bucket for the load balancer's access logs, expiring them."""
    bucket = template.add_resource(
        Bucket(
            "AccessLogBucket",
            # Load balancer access logs can only be written with SSE-S3 (AES256), not with a KMS key.
            BucketEncryption=BucketEncryption(
                ServerSideEncryptionConfiguration=[
                    ServerSideEncryptionRule(
                        ServerSideEncryptionByDefault=ServerSideEncryptionByDefault(SSEAlgorithm="AES256")
                    )
                ]
            ),
            PublicAccessBlockConfiguration=PublicAccessBlockConfiguration(
                BlockPublicAcls=True,
                BlockPublicPolicy=True,
                IgnorePublicAcls=True,
                RestrictPublicBuckets=True,
            ),
            OwnershipControls=OwnershipControls(
                Rules=[OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]
            ),
            VersioningConfiguration=VersioningConfiguration(Status="Enabled"),
            LifecycleConfiguration=LifecycleConfiguration(
                Rules=[
                    LifecycleRule(
                        Id="expire-access-logs",
                        Status="Enabled",
                        ExpirationInDays=Ref(ACCESS_LOG_RETENTION_DAYS.parameter),
                        NoncurrentVersionExpiration=NoncurrentVersionExpiration(NoncurrentDays=1),
                        AbortIncompleteMultipartUpload=AbortIncompleteMultipartUpload(DaysAfterInitiation=1),
                    )
                ]
            ),
            Tags=tags("alb-logs"),
            Metadata=checkov_skips(
                CKV_AWS_18="This bucket receives the load balancer's access logs; logging its own access "
                "would need a second bucket for no reader.",
            ),
            **RETAIN,
        )
    )
    template.add_resource(
        BucketPolicy("AccessLogBucketPolicy", Bucket=Ref(bucket), PolicyDocument=log_bucket_policy(bucket))
    )
    return bucket


def add_alb_ingress(template: Template) -> None:
    """Who reaches the load balancer: CloudFront's prefix list on the VPC origin's port, or viewers on 443
    and 80.

    Behind CloudFront the load balancer is internal, so the prefix list admits CloudFront's VPC origin and
    nothing on the Internet can reach it at all. The CloudFront guide allows either the origin-facing
    prefix list or the CloudFront-VPCOrigins-Service-SG group CloudFront creates in the VPC with its first
    VPC origin; that group does not exist before the VPC origin does, so a template cannot name it without
    a lookup function, and the prefix list already admits nothing but CloudFront
    (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/private-content-vpc-origins.html).
    One prefix-list rule only: the CloudFront list counts as about 55 rules against the security group's
    quota of 60, so a second one would not fit.
    """
    origin_port = If(site.HAS_CERTIFICATE, HTTPS_PORT, HTTP_PORT)
    template.add_resource(
        SecurityGroupIngress(
            "AlbFromCloudFront",
            Condition=site.USE_CLOUDFRONT,
            GroupId=Ref(ALB_SECURITY_GROUP),
            IpProtocol="tcp",
            FromPort=origin_port,
            ToPort=origin_port,
            SourcePrefixListId=If(
                HAS_PREFIX_LIST_PARAMETER,
                Ref(CLOUDFRONT_PREFIX_LIST_ID.parameter),
                FindInMap("CloudFrontPrefixList", Ref("AWS::Region"), "Id"),
            ),
            Description="CloudFront origin-facing addresses only",
        )
    )
    for port, what in (
        (HTTPS_PORT, "HTTPS from viewers"),
        (HTTP_PORT, "HTTP from viewers, redirected to HTTPS"),
    ):
        template.add_resource(
            SecurityGroupIngress(
                f"AlbFromViewersPort{port}",
                Condition=site.NO_CLOUDFRONT,
                GroupId=Ref(ALB_SECURITY_GROUP),
                IpProtocol="tcp",
                FromPort=port,
                ToPort=port,
                CidrIp="0.0.0.0/0",
                Description=what,
                Metadata=checkov_skips(
                    CKV_AWS_260="Without CloudFront this is the public entrance; port 80 only answers with a "
                    "redirect to HTTPS (the rule exists only when a certificate does)."
                )
                if port == HTTP_PORT
                else NoValue,
            )
        )


def add_load_balancer(template: Template) -> tuple[LoadBalancer, TargetGroup]:
    """The ALB (internal in the private application subnets behind CloudFront, else internet-facing in the
    public ones) and its target group; listeners.py adds the listeners."""
    bucket = add_log_bucket(template)
    add_alb_ingress(template)
    load_balancer = template.add_resource(
        LoadBalancer(
            "LoadBalancer",
            DependsOn=["AccessLogBucketPolicy"],
            # Scheme cannot change in place: a stack moving to (or off) CloudFront gets a new load balancer.
            Scheme=If(site.USE_CLOUDFRONT, "internal", "internet-facing"),
            Type="application",
            Subnets=If(site.USE_CLOUDFRONT, Ref(APP_SUBNET_IDS), Ref(PUBLIC_SUBNET_IDS)),
            SecurityGroups=[Ref(ALB_SECURITY_GROUP)],
            LoadBalancerAttributes=[
                LoadBalancerAttributes(Key=key, Value=value)
                for key, value in (
                    ("access_logs.s3.enabled", "true"),
                    ("access_logs.s3.bucket", Ref(bucket)),
                    ("routing.http.drop_invalid_header_fields.enabled", "true"),
                    # The viewer's address for Moodle, which takes the last X-Forwarded-For entry. Behind
                    # CloudFront the header arrives as "<what the client sent>, <viewer>" (CloudFront appends
                    # the address it saw) and must pass unchanged: appending would make CloudFront's own
                    # address the last entry. Without CloudFront, "append" adds the client's address last.
                    # (ELB guide, "X-Forwarded-For header": append | preserve | remove.) Only CloudFront
                    # reaches the load balancer when it is on (internal, VPC origin, prefix list), so what
                    # it appended cannot be forged.
                    (
                        "routing.http.xff_header_processing.mode",
                        If(site.USE_CLOUDFRONT, "preserve", "append"),
                    ),
                    ("idle_timeout.timeout_seconds", IDLE_TIMEOUT_SECONDS),
                    ("deletion_protection.enabled", "false"),
                )
            ],
            Tags=tags("alb"),
        )
    )
    target_group = template.add_resource(
        TargetGroup(
            # A target group serves one load balancer only (TargetGroupAssociationLimit): a new logical id
            # (was WebTargetGroup) gives the new internal load balancer of an updated stack a new group.
            TARGET_GROUP_TITLE,
            VpcId=Ref(VPC),
            Protocol="HTTP",
            Port=HTTP_PORT,
            TargetType="instance",
            HealthCheckProtocol="HTTP",
            HealthCheckPath=HEALTH_CHECK_PATH,
            HealthCheckIntervalSeconds=15,
            HealthCheckTimeoutSeconds=5,
            HealthyThresholdCount=2,
            UnhealthyThresholdCount=3,
            Matcher=Matcher(HttpCode="200"),
            TargetGroupAttributes=[
                TargetGroupAttribute(
                    Key="deregistration_delay.timeout_seconds", Value=DEREGISTRATION_DELAY_SECONDS
                ),
                # Moodle pages vary from milliseconds to seconds: send new requests to the least busy node.
                TargetGroupAttribute(Key="load_balancing.algorithm.type", Value="least_outstanding_requests"),
            ],
            Tags=tags("web"),
        )
    )
    return load_balancer, target_group


def alb_full_name_for_metrics(load_balancer: LoadBalancer, target_group: TargetGroup) -> Join:
    """The ResourceLabel of ALBRequestCountPerTarget: app/<lb>/<id>/targetgroup/<tg>/<id>."""
    return Join(
        "/", [GetAtt(load_balancer, "LoadBalancerFullName"), GetAtt(target_group, "TargetGroupFullName")]
    )
