"""AWS WAF in front of Moodle: AWS managed rule groups and a per-client rate limit.

A web ACL for CloudFront must be created in us-east-1, so where it goes depends on the stack's region:
- CloudFront on and the stack in us-east-1: a CLOUDFRONT-scope ACL on the distribution, seeing viewers' IPs.
- Otherwise: a REGIONAL ACL on the load balancer. Behind CloudFront (a stack outside us-east-1) the load
  balancer sees only CloudFront's addresses, so the IP reputation list and the rate limit are left out:
  the only viewer address there is in X-Forwarded-For, whose first entry (what WAF's forwarded-IP setting
  reads) the client writes itself, so a limit keyed on it would be bypassed by sending another one. A rate
  limit keyed on an address no client can forge needs a CLOUDFRONT-scope ACL, which only a stack in
  us-east-1 can create.

Two rules of the common rule set would block ordinary Moodle use and only count: SizeRestrictions_BODY
(any upload or long forum post over 8 KB) and CrossSiteScripting_BODY (HTML from Moodle's editors).
"""

from __future__ import annotations

from troposphere import And, Equals, GetAtt, If, Not, NoValue, Parameter, Ref, Sub, Template
from troposphere.elasticloadbalancingv2 import LoadBalancer
from troposphere.wafv2 import (
    AllowAction,
    BlockAction,
    CountAction,
    DefaultAction,
    ManagedRuleGroupStatement,
    OverrideAction,
    RateBasedStatement,
    RuleAction,
    RuleActionOverride,
    Statement,
    VisibilityConfig,
    WebACL,
    WebACLAssociation,
    WebACLRule,
)

from moodle_cfn.common import GROUP_EDGE, OperatorParameter, number_parameter
from moodle_cfn.layers import site

WAF_ON_CLOUDFRONT = "WafOnCloudFront"
WAF_ON_LOAD_BALANCER = "WafOnLoadBalancer"
# Rules of AWSManagedRulesCommonRuleSet that ordinary Moodle traffic trips: counted, not blocked.
COUNT_ONLY_COMMON_RULES = ("SizeRestrictions_BODY", "CrossSiteScripting_BODY")

ENABLE_WAF = OperatorParameter(
    Parameter(
        "EnableWaf",
        Type="String",
        Default="true",
        AllowedValues=["true", "false"],
        Description="Put an AWS WAF web ACL (AWS managed rules and a per-client rate limit) in front of the site: "
        "on CloudFront when the stack is in us-east-1, on the load balancer otherwise. About 10 USD/month "
        "plus 0.60 USD per million requests.",
    ),
    label="AWS WAF",
    group=GROUP_EDGE,
)
WAF_RATE_LIMIT = number_parameter(
    "WafRateLimit",
    10000,
    100,
    2000000000,
    "Requests per 5 minutes one client address may make before WAF blocks it. A campus behind "
    "one NAT address is one client: keep this high enough for a full exam room.",
    label="WAF rate limit (requests / 5 min / address)",
    group=GROUP_EDGE,
)
PARAMETERS = (ENABLE_WAF, WAF_RATE_LIMIT)


def add_conditions(template: Template) -> None:
    """Where the web ACL goes."""
    in_us_east_1 = Equals(Ref("AWS::Region"), "us-east-1")
    use_waf = Equals(Ref(ENABLE_WAF.parameter), "true")
    cloudfront = Equals(Ref(site.ENABLE_CLOUDFRONT.parameter), "true")
    template.add_condition(WAF_ON_CLOUDFRONT, And(use_waf, cloudfront, in_us_east_1))
    template.add_condition(WAF_ON_LOAD_BALANCER, And(use_waf, Not(And(cloudfront, in_us_east_1))))


def visibility(name: str) -> VisibilityConfig:
    """Metrics and sampled requests for a rule or ACL."""
    return VisibilityConfig(CloudWatchMetricsEnabled=True, SampledRequestsEnabled=True, MetricName=name)


def managed(priority: int, name: str, count_only: tuple[str, ...] = ()) -> WebACLRule:
    """An AWS managed rule group, some of its rules only counting."""
    overrides = [
        RuleActionOverride(Name=rule, ActionToUse=RuleAction(Count=CountAction())) for rule in count_only
    ]
    return WebACLRule(
        Name=name,
        Priority=priority,
        OverrideAction=OverrideAction(**{"None": {}}),
        Statement=Statement(
            ManagedRuleGroupStatement=ManagedRuleGroupStatement(
                VendorName="AWS", Name=name, RuleActionOverrides=overrides or NoValue
            )
        ),
        VisibilityConfig=visibility(name),
    )


def rate_limit(priority: int) -> WebACLRule:
    """Block a client address over WafRateLimit requests in 5 minutes, keyed on the connection's source."""
    statement = RateBasedStatement(Limit=Ref(WAF_RATE_LIMIT.parameter), AggregateKeyType="IP")
    return WebACLRule(
        Name="RateLimitPerClient",
        Priority=priority,
        Action=RuleAction(Block=BlockAction()),
        Statement=Statement(RateBasedStatement=statement),
        VisibilityConfig=visibility("RateLimitPerClient"),
    )


def rules(behind_cloudfront: str | None) -> list[object]:
    """The rule list; the IP reputation list and the rate limit only where the ACL sees viewers' own
    addresses as the connection's source (`behind_cloudfront`: the condition under which it does not)."""

    def where_viewers_connect(rule: WebACLRule) -> object:
        return If(behind_cloudfront, NoValue, rule) if behind_cloudfront else rule

    return [
        where_viewers_connect(managed(0, "AWSManagedRulesAmazonIpReputationList")),
        managed(1, "AWSManagedRulesCommonRuleSet", COUNT_ONLY_COMMON_RULES),
        managed(2, "AWSManagedRulesKnownBadInputsRuleSet"),
        where_viewers_connect(rate_limit(3)),
    ]


def web_acl(title: str, scope: str, condition: str, rule_list: object) -> WebACL:
    """A web ACL allowing by default, with the given rules."""
    return WebACL(
        title,
        Condition=condition,
        Scope=scope,
        DefaultAction=DefaultAction(Allow=AllowAction()),
        Rules=rule_list,
        VisibilityConfig=visibility(title),
        Description=Sub("Moodle ${SiteName}"),
    )


def add_web_acls(template: Template, load_balancer: LoadBalancer) -> WebACL:
    """The CloudFront-scope ACL (us-east-1) or the regional one on the load balancer; returns the former."""
    cloudfront_acl = template.add_resource(
        web_acl("CloudFrontWebAcl", "CLOUDFRONT", WAF_ON_CLOUDFRONT, rules(None))
    )
    regional = template.add_resource(
        web_acl("LoadBalancerWebAcl", "REGIONAL", WAF_ON_LOAD_BALANCER, rules(site.USE_CLOUDFRONT))
    )
    template.add_resource(
        WebACLAssociation(
            "LoadBalancerWebAclAssociation",
            Condition=WAF_ON_LOAD_BALANCER,
            ResourceArn=Ref(load_balancer),
            WebACLArn=GetAtt(regional, "Arn"),
        )
    )
    return cloudfront_acl
