"""The load balancer's listeners, and the secret header that marks a request as this distribution's.

- HTTPS (443), whenever a certificate exists: TLS 1.3 policy, and Strict-Transport-Security added to every
  response by the listener itself (ALB "Add response headers", listener attribute
  routing.http.response.strict_transport_security.header_value;
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/header-modification.html). Behind
  CloudFront its default answer is 403 and only requests with the origin header are forwarded.
- HTTP (80): a redirect to HTTPS whenever a certificate exists. Without one (CloudFront's own name) it is
  the VPC origin's port on the internal load balancer: 403 unless the origin header is there.

The origin header (X-Origin-Verify, a generated secret) no longer guards against other people's
distributions: the load balancer is internal and only a VPC origin in this account can reach it. It keeps
the load balancer answering 403 to anything else that ever gets a path to it (another distribution's VPC
origin in this account, a peered network, a widened security group), and it travels inside TLS whenever
the site has a certificate.
"""

from __future__ import annotations

from troposphere import If, Ref, Sub, Template
from troposphere.elasticloadbalancingv2 import (
    Action,
    Certificate,
    FixedResponseConfig,
    HttpHeaderConfig,
    Listener,
    ListenerAttribute,
    ListenerRule,
    ListenerRuleAction,
    LoadBalancer,
    RedirectConfig,
    TargetGroup,
)
from troposphere.elasticloadbalancingv2 import (
    Condition as RuleCondition,
)
from troposphere.secretsmanager import GenerateSecretString, Secret

from moodle_cfn.common import SITE_NAME, checkov_skips
from moodle_cfn.encryption import generated_secret
from moodle_cfn.layers import site
from moodle_cfn.layers.security_groups import HTTP_PORT, HTTPS_PORT

ORIGIN_HEADER = "X-Origin-Verify"
ORIGIN_SECRET_REFERENCE = "{{resolve:secretsmanager:${OriginSecret}:SecretString:value}}"
TLS13_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# One year, the same value CloudFront's response headers policy sends (edge.py). No includeSubDomains: the
# site's domain may have subdomains this stack does not serve.
HSTS_MAX_AGE_SECONDS = 31536000
HSTS_HEADER_VALUE = f"max-age={HSTS_MAX_AGE_SECONDS}"
HSTS_ATTRIBUTE = "routing.http.response.strict_transport_security.header_value"


def add_origin_secret(template: Template) -> Secret:
    """The value CloudFront sends in X-Origin-Verify, generated so it is never a parameter."""
    return template.add_resource(
        generated_secret(
            "OriginSecret",
            Sub(f"${{{SITE_NAME.name}}}: header value proving a request came through CloudFront"),
            GenerateSecretString(
                SecretStringTemplate="{}",
                GenerateStringKey="value",
                PasswordLength=48,
                ExcludePunctuation=True,
            ),
            "origin-secret",
            # Generated anew with the distribution; nothing is lost with it.
            keep=False,
            condition=site.USE_CLOUDFRONT,
        )
    )


def fixed_403() -> Action:
    """The answer to a request that did not come through CloudFront."""
    return Action(
        Type="fixed-response",
        FixedResponseConfig=FixedResponseConfig(
            StatusCode="403", ContentType="text/plain", MessageBody="Forbidden"
        ),
    )


def redirect_to_https() -> Action:
    """A permanent redirect to the same URL over HTTPS."""
    return Action(
        Type="redirect",
        RedirectConfig=RedirectConfig(Protocol="HTTPS", Port=str(HTTPS_PORT), StatusCode="HTTP_301"),
    )


def add_listeners(
    template: Template, load_balancer: LoadBalancer, target_group: TargetGroup, certificate_arn: object
) -> None:
    """HTTPS (with HSTS) and HTTP listeners, and the rule forwarding CloudFront's requests."""
    secret = add_origin_secret(template)
    forward = Action(Type="forward", TargetGroupArn=Ref(target_group))
    https = template.add_resource(
        Listener(
            "HttpsListener",
            Condition=site.HAS_CERTIFICATE,
            LoadBalancerArn=Ref(load_balancer),
            Protocol="HTTPS",
            Port=HTTPS_PORT,
            SslPolicy=TLS13_POLICY,
            Certificates=[Certificate(CertificateArn=certificate_arn)],
            DefaultActions=[If(site.USE_CLOUDFRONT, fixed_403(), forward)],
            ListenerAttributes=[ListenerAttribute(Key=HSTS_ATTRIBUTE, Value=HSTS_HEADER_VALUE)],
        )
    )
    http = template.add_resource(
        Listener(
            "HttpListener",
            LoadBalancerArn=Ref(load_balancer),
            Protocol="HTTP",
            Port=HTTP_PORT,
            # With a certificate HTTP only redirects; without one it is the internal load balancer's VPC
            # origin port, and only requests carrying the secret header are forwarded.
            DefaultActions=[If(site.HAS_CERTIFICATE, redirect_to_https(), fixed_403())],
            Metadata=checkov_skips(
                **dict.fromkeys(
                    ("CKV_AWS_2", "CKV_AWS_103"),
                    "Redirects to HTTPS whenever a certificate exists; without one the load balancer is "
                    "internal, reached only by CloudFront's VPC origin, and viewers get HTTPS from CloudFront.",
                )
            ),
        )
    )
    template.add_resource(
        ListenerRule(
            "ForwardFromCloudFront",
            Condition=site.USE_CLOUDFRONT,
            ListenerArn=If(site.HAS_CERTIFICATE, Ref(https), Ref(http)),
            Priority=1,
            Conditions=[
                RuleCondition(
                    Field="http-header",
                    HttpHeaderConfig=HttpHeaderConfig(
                        HttpHeaderName=ORIGIN_HEADER,
                        Values=[Sub(ORIGIN_SECRET_REFERENCE, OriginSecret=Ref(secret))],
                    ),
                )
            ],
            Actions=[ListenerRuleAction(Type="forward", TargetGroupArn=Ref(target_group))],
        )
    )
