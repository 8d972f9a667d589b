"""The tier security groups and the whole east-west policy between them, with the ports it opens.

One group per tier; egress is inline and ingress between tiers is standalone, so no two groups form a
cycle. The same code builds the groups in the network layer's VPC (network.py) and in an operator's
existing VPC (existing_vpc.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import AWSHelperFn, GetAtt, Output, Ref, Template
from troposphere.ec2 import SecurityGroup, SecurityGroupIngress, SecurityGroupRule

from moodle_cfn.common import tags
from moodle_cfn.layers.address_plan import ANYWHERE

# Ports between tiers.
HTTP_PORT = 80
HTTPS_PORT = 443
SMTP_SUBMISSION_PORT = 587
POSTGRES_PORT = 5432
MEMCACHED_PORT = 11211
VALKEY_PORT = 6379
NFS_PORT = 2049


@dataclass(frozen=True)
class TierSecurityGroup:
    """A security group for one tier; `key` prefixes its logical id and its output."""

    key: str
    description: str

    @property
    def title(self) -> str:
        """Logical id of the security group."""
        return f"{self.key}SecurityGroup"

    @property
    def id_output(self) -> str:
        """Name of the output carrying the group id."""
        return f"{self.key}SecurityGroupId"


ALB_SG = TierSecurityGroup(
    "Alb", "Application Load Balancer: from CloudFront, or from viewers without CloudFront"
)
WEB_SG = TierSecurityGroup("Web", "Moodle web nodes: HTTP from the load balancer only")
DATABASE_SG = TierSecurityGroup("Database", "Aurora PostgreSQL: from the web nodes only")
CACHE_SG = TierSecurityGroup("Cache", "ElastiCache session and application caches: from the web nodes only")
FILE_SYSTEM_SG = TierSecurityGroup(
    "FileSystem", "EFS mount targets for moodledata: NFS from the web nodes only"
)
DATABASE_ROLE_FUNCTION_SG = TierSecurityGroup(
    "DatabaseRoleFunction",
    "Database-role and rotation function: PostgreSQL to the database, HTTPS to Secrets Manager and S3",
)
# Destinations after their sources: add_security_groups builds them in reverse.
SECURITY_GROUPS = (ALB_SG, WEB_SG, DATABASE_ROLE_FUNCTION_SG, DATABASE_SG, CACHE_SG, FILE_SYSTEM_SG)


@dataclass(frozen=True)
class PeerRule:
    """Traffic allowed from one tier's group to another's on one TCP port."""

    source: TierSecurityGroup
    destination: TierSecurityGroup
    port: int
    what: str


# The whole east-west policy. Both cache ports are open because each cache cluster picks its engine
# (memcached or valkey) independently; nothing else listens in the cache group.
PEER_RULES = (
    PeerRule(ALB_SG, WEB_SG, HTTP_PORT, "HTTP from the load balancer to Apache"),
    PeerRule(WEB_SG, DATABASE_SG, POSTGRES_PORT, "PostgreSQL from the web nodes"),
    PeerRule(WEB_SG, CACHE_SG, MEMCACHED_PORT, "memcached from the web nodes"),
    PeerRule(WEB_SG, CACHE_SG, VALKEY_PORT, "valkey from the web nodes"),
    PeerRule(WEB_SG, FILE_SYSTEM_SG, NFS_PORT, "NFS from the web nodes"),
    PeerRule(
        DATABASE_ROLE_FUNCTION_SG, DATABASE_SG, POSTGRES_PORT, "PostgreSQL from the database-role function"
    ),
)

# Where the web nodes may reach outside the VPC (through the NAT gateways): package repositories, the Moodle
# download, AWS APIs, and mail submission to Amazon SES or another smarthost.
WEB_INTERNET_PORTS = (
    (HTTPS_PORT, "HTTPS to package repositories, Moodle downloads and AWS APIs"),
    (HTTP_PORT, "HTTP to package mirrors that do not redirect to HTTPS"),
    (SMTP_SUBMISSION_PORT, "SMTP submission (STARTTLS) to Amazon SES or the site's mail relay"),
)
# The database-role function (in the app subnets) calls Secrets Manager through the NAT gateways and answers
# CloudFormation at an S3 URL (through the S3 gateway endpoint); nothing else.
FUNCTION_INTERNET_PORTS = ((HTTPS_PORT, "HTTPS to Secrets Manager and CloudFormation's S3 response URL"),)
INTERNET_PORTS = {WEB_SG: WEB_INTERNET_PORTS, DATABASE_ROLE_FUNCTION_SG: FUNCTION_INTERNET_PORTS}
# A security group with explicit egress loses the default allow-all rule; this one matches nothing routable.
NO_EGRESS = SecurityGroupRule(
    IpProtocol="icmp", FromPort=-1, ToPort=-1, CidrIp="127.0.0.1/32", Description="No outbound traffic"
)


def egress_rules(group: TierSecurityGroup, groups: dict[str, SecurityGroup]) -> list[SecurityGroupRule]:
    """Inline egress of one group: its peer rules, plus its Internet ports if it has any (else nothing)."""
    rules = [
        SecurityGroupRule(
            IpProtocol="tcp",
            FromPort=rule.port,
            ToPort=rule.port,
            DestinationSecurityGroupId=Ref(groups[rule.destination.key]),
            Description=rule.what,
        )
        for rule in PEER_RULES
        if rule.source == group
    ]
    rules += [
        SecurityGroupRule(IpProtocol="tcp", FromPort=port, ToPort=port, CidrIp=ANYWHERE, Description=what)
        for port, what in INTERNET_PORTS.get(group, ())
    ]
    return rules or [NO_EGRESS]


def add_security_groups(template: Template, vpc_id: AWSHelperFn) -> dict[str, SecurityGroup]:
    """One group per tier in the VPC `vpc_id`. Egress is inline, ingress between tiers is standalone, so no two
    groups form a cycle. The network layer calls it for its own VPC, the existing-VPC layer for the operator's.

    Who may reach the load balancer depends on whether CloudFront fronts it: the app layer adds that ingress.
    """
    groups: dict[str, SecurityGroup] = {}
    # Destinations first: a group's inline egress refers to the groups it talks to.
    for group in reversed(SECURITY_GROUPS):
        resource = SecurityGroup(
            group.title,
            GroupDescription=group.description,
            VpcId=vpc_id,
            SecurityGroupEgress=egress_rules(group, groups),
            Tags=tags(f"{group.key.lower()}-sg"),
        )
        groups[group.key] = template.add_resource(resource)

    for rule in PEER_RULES:
        template.add_resource(
            SecurityGroupIngress(
                f"{rule.destination.key}From{rule.source.key}Port{rule.port}",
                GroupId=Ref(groups[rule.destination.key]),
                IpProtocol="tcp",
                FromPort=rule.port,
                ToPort=rule.port,
                SourceSecurityGroupId=Ref(groups[rule.source.key]),
                Description=rule.what,
            )
        )
    return groups


def add_security_group_outputs(template: Template, groups: dict[str, SecurityGroup]) -> None:
    """The id of each tier's group, for the layers that place resources in it."""
    for group in SECURITY_GROUPS:
        template.add_output(
            Output(group.id_output, Description=group.description, Value=GetAtt(groups[group.key], "GroupId"))
        )
