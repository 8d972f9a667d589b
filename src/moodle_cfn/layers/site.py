"""The site's name on the Internet: domain, hosted zone, certificates, and whether CloudFront fronts it.

Certificates: with a domain and a Route 53 hosted zone, the stack creates an ACM certificate validated by
DNS; an existing certificate ARN can be given instead. CloudFront only takes certificates from us-east-1:
in us-east-1 it reuses the regional certificate; elsewhere the operator gives CloudFrontCertificateArn.
Without a domain the site is served at CloudFront's own name (https://dxxxx.cloudfront.net).
"""

from __future__ import annotations

from troposphere import And, Condition, Equals, If, Not, Or, Parameter, Ref, Template
from troposphere.certificatemanager import Certificate, DomainValidationOption

from moodle_cfn.common import GROUP_SITE, OperatorParameter, tags

HAS_DOMAIN = "HasDomain"
HAS_HOSTED_ZONE = "HasHostedZone"
CREATE_CERTIFICATE = "CreateCertificate"
USE_CLOUDFRONT = "UseCloudFront"
NO_CLOUDFRONT = "NoCloudFront"
HAS_CLOUDFRONT_CERTIFICATE_ARN = "HasCloudFrontCertificateArn"
HAS_CERTIFICATE_ARN = "HasCertificateArn"
# A certificate exists (given or created). The Rules make it true exactly when there is a domain; TLS
# choices test this condition so that cfn-lint can see the certificate is there.
HAS_CERTIFICATE = "HasCertificate"
CLOUDFRONT_WITH_HOSTED_ZONE = "CloudFrontWithHostedZone"

CERTIFICATE_ARN_PATTERN = r"arn:aws[a-z-]*:acm:{region}:[0-9]{{12}}:certificate/[a-f0-9-]+"

DOMAIN_NAME = OperatorParameter(
    Parameter(
        "DomainName",
        Type="String",
        Default="",
        AllowedPattern=r"^(([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})?$",
        ConstraintDescription="Empty, or a lower-case host name such as moodle.example.edu.",
        Description="Host name of the site, such as moodle.example.edu. Empty: the site answers at the "
        "CloudFront domain name. A domain needs HostedZoneId or CertificateArn for its certificate.",
    ),
    label="Domain name",
    group=GROUP_SITE,
)
HOSTED_ZONE_ID = OperatorParameter(
    Parameter(
        "HostedZoneId",
        Type="String",
        Default="",
        AllowedPattern=r"^(Z[A-Z0-9]{1,32})?$",
        ConstraintDescription="Empty, or a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ.",
        Description="Route 53 public hosted zone of DomainName. Given: the stack creates the DNS-validated "
        "certificate (unless CertificateArn is set) and the A/AAAA alias records. Empty: you create the DNS "
        "record yourself, pointing at the SiteTarget output.",
    ),
    label="Route 53 hosted zone id",
    group=GROUP_SITE,
)
CERTIFICATE_ARN = OperatorParameter(
    Parameter(
        "CertificateArn",
        Type="String",
        Default="",
        AllowedPattern=rf"^({CERTIFICATE_ARN_PATTERN.format(region='[a-z0-9-]+')})?$",
        ConstraintDescription="Empty, or an ACM certificate ARN in this stack's region.",
        Description="Existing ACM certificate for DomainName in this stack's region (for the load balancer). "
        "Empty: created in the stack when HostedZoneId is given.",
    ),
    label="Existing certificate ARN (this region)",
    group=GROUP_SITE,
)
CLOUDFRONT_CERTIFICATE_ARN = OperatorParameter(
    Parameter(
        "CloudFrontCertificateArn",
        Type="String",
        Default="",
        AllowedPattern=rf"^({CERTIFICATE_ARN_PATTERN.format(region='us-east-1')})?$",
        ConstraintDescription="Empty, or an ACM certificate ARN in us-east-1.",
        Description="CloudFront only accepts certificates from us-east-1: outside us-east-1, give the ARN of a "
        "us-east-1 certificate for DomainName. In us-east-1 leave empty to reuse the load balancer's.",
    ),
    label="CloudFront certificate ARN (must be in us-east-1)",
    group=GROUP_SITE,
)
ENABLE_CLOUDFRONT = OperatorParameter(
    Parameter(
        "EnableCloudFront",
        Type="String",
        Default="true",
        AllowedValues=["true", "false"],
        Description="Serve the site through CloudFront (static files cached at the edge, the load balancer "
        "reachable only from CloudFront). false: viewers reach the load balancer directly; needs DomainName.",
    ),
    label="Use CloudFront",
    group=GROUP_SITE,
)

PARAMETERS = (DOMAIN_NAME, HOSTED_ZONE_ID, CERTIFICATE_ARN, CLOUDFRONT_CERTIFICATE_ARN, ENABLE_CLOUDFRONT)


def is_empty(parameter: OperatorParameter) -> Equals:
    """Condition expression: the parameter was left empty."""
    return Equals(Ref(parameter.parameter), "")


def add_conditions(template: Template) -> None:
    """Domain, certificate and CloudFront switches."""
    template.add_condition(HAS_DOMAIN, Not(is_empty(DOMAIN_NAME)))
    template.add_condition(HAS_HOSTED_ZONE, Not(is_empty(HOSTED_ZONE_ID)))
    template.add_condition(
        CREATE_CERTIFICATE,
        And(Not(is_empty(DOMAIN_NAME)), Not(is_empty(HOSTED_ZONE_ID)), is_empty(CERTIFICATE_ARN)),
    )
    template.add_condition(USE_CLOUDFRONT, Equals(Ref(ENABLE_CLOUDFRONT.parameter), "true"))
    template.add_condition(NO_CLOUDFRONT, Equals(Ref(ENABLE_CLOUDFRONT.parameter), "false"))
    template.add_condition(HAS_CLOUDFRONT_CERTIFICATE_ARN, Not(is_empty(CLOUDFRONT_CERTIFICATE_ARN)))
    template.add_condition(HAS_CERTIFICATE_ARN, Not(is_empty(CERTIFICATE_ARN)))
    template.add_condition(HAS_CERTIFICATE, Or(Condition(HAS_CERTIFICATE_ARN), Condition(CREATE_CERTIFICATE)))
    template.add_condition(
        CLOUDFRONT_WITH_HOSTED_ZONE,
        And(Equals(Ref(ENABLE_CLOUDFRONT.parameter), "true"), Not(is_empty(HOSTED_ZONE_ID))),
    )


def add_certificate(template: Template) -> Certificate:
    """The regional certificate, created when a domain and its hosted zone are given and no ARN is."""
    return template.add_resource(
        Certificate(
            "SiteCertificate",
            Condition=CREATE_CERTIFICATE,
            DomainName=Ref(DOMAIN_NAME.parameter),
            ValidationMethod="DNS",
            DomainValidationOptions=[
                DomainValidationOption(
                    DomainName=Ref(DOMAIN_NAME.parameter), HostedZoneId=Ref(HOSTED_ZONE_ID.parameter)
                )
            ],
            Tags=tags("certificate"),
        )
    )


def regional_certificate_arn(certificate: Certificate) -> If:
    """The load balancer's certificate, under HasCertificate: the one given, else the one created here."""
    return If(HAS_CERTIFICATE_ARN, Ref(CERTIFICATE_ARN.parameter), Ref(certificate))


def cloudfront_certificate_arn(certificate: Certificate) -> If:
    """CloudFront's certificate: the us-east-1 ARN given, else the regional one (valid only in us-east-1)."""
    return If(
        HAS_CLOUDFRONT_CERTIFICATE_ARN,
        Ref(CLOUDFRONT_CERTIFICATE_ARN.parameter),
        regional_certificate_arn(certificate),
    )


def master_rules() -> dict[str, dict[str, object]]:
    """Rules rejecting domain and certificate combinations that cannot work."""
    not_empty = lambda p: Not(is_empty(p))  # noqa: E731 - reads better inline below
    return {
        "DomainNeedsCertificate": {
            "RuleCondition": not_empty(DOMAIN_NAME),
            "Assertions": [
                {
                    "Assert": Or(not_empty(HOSTED_ZONE_ID), not_empty(CERTIFICATE_ARN)),
                    "AssertDescription": "DomainName needs HostedZoneId (the stack creates the certificate) or "
                    "CertificateArn (an existing certificate in this region).",
                }
            ],
        },
        "CertificatesNeedDomain": {
            "RuleCondition": is_empty(DOMAIN_NAME),
            "Assertions": [
                {
                    "Assert": And(
                        is_empty(HOSTED_ZONE_ID),
                        is_empty(CERTIFICATE_ARN),
                        is_empty(CLOUDFRONT_CERTIFICATE_ARN),
                    ),
                    "AssertDescription": "HostedZoneId, CertificateArn and CloudFrontCertificateArn only apply "
                    "with a DomainName.",
                }
            ],
        },
        "HttpsWithoutCloudFrontNeedsDomain": {
            "RuleCondition": Equals(Ref(ENABLE_CLOUDFRONT.parameter), "false"),
            "Assertions": [
                {
                    "Assert": not_empty(DOMAIN_NAME),
                    "AssertDescription": "Without CloudFront the load balancer serves viewers itself and needs a "
                    "DomainName with a certificate; the site would otherwise be plain HTTP.",
                }
            ],
        },
        "CloudFrontCertificateInUsEast1": {
            "RuleCondition": And(Equals(Ref(ENABLE_CLOUDFRONT.parameter), "true"), not_empty(DOMAIN_NAME)),
            "Assertions": [
                {
                    "Assert": Or(
                        not_empty(CLOUDFRONT_CERTIFICATE_ARN), Equals(Ref("AWS::Region"), "us-east-1")
                    ),
                    "AssertDescription": "CloudFront only accepts certificates from us-east-1: outside us-east-1 "
                    "give CloudFrontCertificateArn, a us-east-1 certificate for DomainName.",
                }
            ],
        },
    }
