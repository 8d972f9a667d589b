"""CloudFront in front of the load balancer, and the site's DNS records.

Dynamic pages are never cached: the default behaviour passes every cookie, header and query string and
caches nothing. Only Moodle's static handlers (theme images, styles, fonts, JavaScript, the YUI combo
loader) are cached at the edge: their URLs carry a revision, so a new revision is a new URL. pluginfile.php
is not cached: its answers depend on the user's session.

CloudFront to the load balancer: a VPC origin (AWS::CloudFront::VpcOrigin) to the internal load balancer,
so there is no public origin to find or bypass, and the hop never crosses the Internet. Its protocol is
HTTPS whenever the site has a certificate. Without a domain it cannot be: CloudFront only accepts an
origin certificate from a publicly trusted CA whose name matches the origin or Host header, and no such
certificate exists for dxxxx.cloudfront.net or an internal load balancer name, so that one case stays
HTTP, over the VPC origin's private connection only (README, "CloudFront to the load balancer").
- https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/private-content-vpc-origins.html
- https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/restrict-access-to-load-balancer.html
- https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/cnames-and-https-requirements.html
Every behaviour adds Strict-Transport-Security through one response headers policy.
"""

from __future__ import annotations

from troposphere import Equals, GetAtt, If, Not, NoValue, Parameter, Ref, Sub, Template
from troposphere.cloudfront import (
    CacheBehavior,
    CacheCookiesConfig,
    CacheHeadersConfig,
    CachePolicy,
    CachePolicyConfig,
    CacheQueryStringsConfig,
    DefaultCacheBehavior,
    Distribution,
    DistributionConfig,
    Origin,
    OriginCustomHeader,
    OriginRequestCookiesConfig,
    OriginRequestHeadersConfig,
    OriginRequestPolicy,
    OriginRequestPolicyConfig,
    OriginRequestQueryStringsConfig,
    ParametersInCacheKeyAndForwardedToOrigin,
    ResponseHeadersPolicy,
    ResponseHeadersPolicyConfig,
    SecurityHeadersConfig,
    StrictTransportSecurity,
    ViewerCertificate,
    VpcOrigin,
    VpcOriginConfig,
    VpcOriginEndpointConfig,
)
from troposphere.elasticloadbalancingv2 import LoadBalancer
from troposphere.route53 import AliasTarget, RecordSetType

from moodle_cfn.common import GROUP_EDGE, OperatorParameter, checkov_skips, tags
from moodle_cfn.layers import site, waf
from moodle_cfn.layers.listeners import HSTS_MAX_AGE_SECONDS, ORIGIN_HEADER, ORIGIN_SECRET_REFERENCE
from moodle_cfn.layers.security_groups import HTTP_PORT, HTTPS_PORT

# AWS managed CloudFront policies.
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER = "216adef6-5c7f-47e4-b989-5492eafa07d3"
# The hosted zone of every CloudFront alias target.
CLOUDFRONT_ZONE = "Z2FDTNDATAQYW2"
ORIGIN_ID = "moodle-alb"
# Moodle's cacheable static handlers (same URLs with and without the 5.1 public/ directory).
STATIC_PATHS = (
    "/theme/image.php*",
    "/theme/styles.php*",
    "/theme/font.php*",
    "/theme/javascript.php*",
    "/theme/yui_combo.php*",
    "/lib/javascript.php*",
    "/lib/requirejs.php*",
)
# CloudFront waits this long for the origin's first byte (60 s is the most without a quota increase).
ORIGIN_READ_TIMEOUT = 60

CLOUDFRONT_PRICE_CLASS = OperatorParameter(
    Parameter(
        "CloudFrontPriceClass",
        Type="String",
        Default="PriceClass_100",
        AllowedValues=["PriceClass_100", "PriceClass_200", "PriceClass_All"],
        Description="Edge locations to serve from: 100 = North America and Europe (cheapest), 200 = adds Asia, "
        "Middle East and Africa, All = every location.",
    ),
    label="CloudFront price class",
    group=GROUP_EDGE,
)
CLOUDFRONT_WEB_ACL_ARN = OperatorParameter(
    Parameter(
        "CloudFrontWebAclArn",
        Type="String",
        Default="",
        AllowedPattern=r"^(arn:aws[a-z-]*:wafv2:us-east-1:[0-9]{12}:global/webacl/[A-Za-z0-9_-]+/[a-f0-9-]+)?$",
        ConstraintDescription="Empty, or the ARN of an AWS WAF web ACL with CLOUDFRONT scope (in us-east-1).",
        Description="Existing AWS WAF web ACL (CLOUDFRONT scope) to attach to the distribution. Empty: none.",
    ),
    label="WAF web ACL ARN for CloudFront (optional)",
    group=GROUP_EDGE,
)
PARAMETERS = (CLOUDFRONT_PRICE_CLASS, CLOUDFRONT_WEB_ACL_ARN)
HAS_WEB_ACL = "HasCloudFrontWebAcl"


def add_static_policies(template: Template) -> tuple[CachePolicy, OriginRequestPolicy]:
    """Cache key for static handlers: path and query string (yui_combo.php lists files in it), no cookies."""
    cache_policy = template.add_resource(
        CachePolicy(
            "StaticCachePolicy",
            Condition=site.USE_CLOUDFRONT,
            CachePolicyConfig=CachePolicyConfig(
                Name=Sub("${AWS::StackName}-moodle-static"),
                Comment="Moodle static handlers: revisioned URLs, cache for long",
                MinTTL=0,
                DefaultTTL=86400,
                MaxTTL=31536000,
                ParametersInCacheKeyAndForwardedToOrigin=ParametersInCacheKeyAndForwardedToOrigin(
                    EnableAcceptEncodingGzip=True,
                    EnableAcceptEncodingBrotli=True,
                    CookiesConfig=CacheCookiesConfig(CookieBehavior="none"),
                    HeadersConfig=CacheHeadersConfig(HeaderBehavior="none"),
                    QueryStringsConfig=CacheQueryStringsConfig(QueryStringBehavior="all"),
                ),
            ),
        )
    )
    origin_policy = template.add_resource(
        OriginRequestPolicy(
            "StaticOriginRequestPolicy",
            Condition=site.USE_CLOUDFRONT,
            OriginRequestPolicyConfig=OriginRequestPolicyConfig(
                Name=Sub("${AWS::StackName}-moodle-static-origin"),
                Comment="Moodle static handlers: the Host header (wwwroot and the origin certificate), no cookies",
                CookiesConfig=OriginRequestCookiesConfig(CookieBehavior="none"),
                HeadersConfig=OriginRequestHeadersConfig(HeaderBehavior="whitelist", Headers=["Host"]),
                QueryStringsConfig=OriginRequestQueryStringsConfig(QueryStringBehavior="none"),
            ),
        )
    )
    return cache_policy, origin_policy


def add_vpc_origin(template: Template, load_balancer: LoadBalancer) -> VpcOrigin:
    """CloudFront's private way into the internal load balancer: HTTPS whenever a certificate exists."""
    return template.add_resource(
        VpcOrigin(
            "LoadBalancerVpcOrigin",
            Condition=site.USE_CLOUDFRONT,
            VpcOriginEndpointConfig=VpcOriginEndpointConfig(
                Name=Sub("${AWS::StackName}-alb"),
                Arn=Ref(load_balancer),
                HTTPPort=HTTP_PORT,
                HTTPSPort=HTTPS_PORT,
                # The Host header is forwarded, so the load balancer's certificate for DomainName matches.
                OriginProtocolPolicy=If(site.HAS_CERTIFICATE, "https-only", "http-only"),
                OriginSSLProtocols=["TLSv1.2"],
            ),
            Tags=tags("vpc-origin"),
        )
    )


def add_security_headers_policy(template: Template) -> ResponseHeadersPolicy:
    """Strict-Transport-Security on every response CloudFront sends, replacing any the origin sent."""
    return template.add_resource(
        ResponseHeadersPolicy(
            "SecurityHeadersPolicy",
            Condition=site.USE_CLOUDFRONT,
            ResponseHeadersPolicyConfig=ResponseHeadersPolicyConfig(
                Name=Sub("${AWS::StackName}-moodle-security"),
                Comment="Moodle: HSTS on every response",
                SecurityHeadersConfig=SecurityHeadersConfig(
                    StrictTransportSecurity=StrictTransportSecurity(
                        AccessControlMaxAgeSec=HSTS_MAX_AGE_SECONDS,
                        IncludeSubdomains=False,
                        Preload=False,
                        Override=True,
                    )
                ),
            ),
        )
    )


def add_distribution(
    template: Template, load_balancer: LoadBalancer, certificate_arn: object, stack_web_acl: object
) -> Distribution:
    """The distribution: HTTPS to viewers (HTTP/2 and HTTP/3), the VPC origin to the load balancer."""
    template.add_condition(HAS_WEB_ACL, Not(Equals(Ref(CLOUDFRONT_WEB_ACL_ARN.parameter), "")))
    cache_policy, origin_policy = add_static_policies(template)
    headers_policy = add_security_headers_policy(template)
    vpc_origin = add_vpc_origin(template, load_balancer)
    static = [
        CacheBehavior(
            PathPattern=path,
            TargetOriginId=ORIGIN_ID,
            ViewerProtocolPolicy="redirect-to-https",
            AllowedMethods=["GET", "HEAD", "OPTIONS"],
            CachedMethods=["GET", "HEAD"],
            CachePolicyId=Ref(cache_policy),
            OriginRequestPolicyId=Ref(origin_policy),
            ResponseHeadersPolicyId=Ref(headers_policy),
            Compress=True,
        )
        for path in STATIC_PATHS
    ]
    return template.add_resource(
        Distribution(
            "Distribution",
            Condition=site.USE_CLOUDFRONT,
            DistributionConfig=DistributionConfig(
                Enabled=True,
                Comment=Sub("Moodle ${SiteName}"),
                Aliases=If(site.HAS_DOMAIN, [Ref(site.DOMAIN_NAME.parameter)], NoValue),
                HttpVersion="http2and3",
                IPV6Enabled=True,
                PriceClass=Ref(CLOUDFRONT_PRICE_CLASS.parameter),
                # The operator's own web ACL wins over the one this stack creates in us-east-1.
                WebACLId=If(
                    HAS_WEB_ACL,
                    Ref(CLOUDFRONT_WEB_ACL_ARN.parameter),
                    If(waf.WAF_ON_CLOUDFRONT, GetAtt(stack_web_acl, "Arn"), NoValue),
                ),
                ViewerCertificate=If(
                    site.HAS_CERTIFICATE,
                    ViewerCertificate(
                        AcmCertificateArn=certificate_arn,
                        SslSupportMethod="sni-only",
                        MinimumProtocolVersion="TLSv1.2_2021",
                    ),
                    ViewerCertificate(CloudFrontDefaultCertificate=True),
                ),
                Origins=[
                    Origin(
                        Id=ORIGIN_ID,
                        # With a domain, the name its certificate carries (as is the forwarded Host header):
                        # CloudFront checks the origin certificate against one of the two. The VPC origin,
                        # not this name, decides where requests go (CDK's VpcOrigin takes such a domainName).
                        DomainName=If(
                            site.HAS_DOMAIN, Ref(site.DOMAIN_NAME.parameter), GetAtt(load_balancer, "DNSName")
                        ),
                        VpcOriginConfig=VpcOriginConfig(
                            VpcOriginId=GetAtt(vpc_origin, "Id"), OriginReadTimeout=ORIGIN_READ_TIMEOUT
                        ),
                        OriginCustomHeaders=[
                            OriginCustomHeader(
                                HeaderName=ORIGIN_HEADER,
                                HeaderValue=Sub(ORIGIN_SECRET_REFERENCE, OriginSecret=Ref("OriginSecret")),
                            )
                        ],
                    )
                ],
                DefaultCacheBehavior=DefaultCacheBehavior(
                    TargetOriginId=ORIGIN_ID,
                    ViewerProtocolPolicy="redirect-to-https",
                    AllowedMethods=["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"],
                    CachedMethods=["GET", "HEAD"],
                    CachePolicyId=CACHING_DISABLED,
                    OriginRequestPolicyId=ALL_VIEWER,
                    ResponseHeadersPolicyId=Ref(headers_policy),
                    Compress=True,
                ),
                CacheBehaviors=static,
            ),
            Metadata=checkov_skips(
                CKV_AWS_86="CloudFront standard logs need an ACL-enabled bucket; every dynamic request is logged "
                "by the load balancer instead (nothing dynamic is cached).",
                CKV_AWS_68="A WAF web ACL is the operator's choice (CloudFrontWebAclArn); it costs per rule and "
                "request, and Shield Standard already covers network-layer attacks.",
                CKV_AWS_174="TLSv1.2_2021 is set whenever the site has its own certificate; CloudFront's default "
                "certificate (no domain) does not allow choosing the protocol.",
            ),
        )
    )


def add_dns_records(template: Template, load_balancer: LoadBalancer, distribution: Distribution) -> None:
    """A and AAAA alias records for the domain: to CloudFront, or (A only) to the IPv4 load balancer."""
    cloudfront_target = AliasTarget(DNSName=GetAtt(distribution, "DomainName"), HostedZoneId=CLOUDFRONT_ZONE)
    template.add_resource(
        RecordSetType(
            "SiteAliasIpv4",
            Condition=site.HAS_HOSTED_ZONE,
            HostedZoneId=Ref(site.HOSTED_ZONE_ID.parameter),
            Name=Ref(site.DOMAIN_NAME.parameter),
            Type="A",
            AliasTarget=If(
                site.USE_CLOUDFRONT,
                cloudfront_target,
                AliasTarget(
                    DNSName=GetAtt(load_balancer, "DNSName"),
                    HostedZoneId=GetAtt(load_balancer, "CanonicalHostedZoneID"),
                    EvaluateTargetHealth=True,
                ),
            ),
        )
    )
    template.add_resource(
        RecordSetType(
            "SiteAliasIpv6",
            Condition=site.CLOUDFRONT_WITH_HOSTED_ZONE,
            HostedZoneId=Ref(site.HOSTED_ZONE_ID.parameter),
            Name=Ref(site.DOMAIN_NAME.parameter),
            Type="AAAA",
            AliasTarget=cloudfront_target,
        )
    )
