"""CloudFront to the load balancer, for every combination of the site choices the master's Rules accept:
no public origin, no plaintext hop across the Internet, HSTS on every path, and a security group open only
to what the chosen path needs. See README "CloudFront to the load balancer"."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from moodle_cfn.errors import InputError
from moodle_cfn.rules import check_rules
from tests.cfn_eval import active_resources, of_type
from tests.variants import DOMAIN, REGIONAL_CERTIFICATE, US_EAST_1_CERTIFICATE, ZONE

SITE_CHOICES = {
    "no-domain": {},
    "created-certificate": {"DomainName": DOMAIN, "HostedZoneId": ZONE},
    "given-certificate": {"DomainName": DOMAIN, "CertificateArn": REGIONAL_CERTIFICATE},
    "given-certificate-and-zone": {"DomainName": DOMAIN, "HostedZoneId": ZONE, "CertificateArn": REGIONAL_CERTIFICATE},
}  # fmt: skip
EDGE_CHOICES = {
    "cloudfront": {"EnableCloudFront": "true"},
    "cloudfront-own-certificate": {"EnableCloudFront": "true", "CloudFrontCertificateArn": US_EAST_1_CERTIFICATE},
    "no-cloudfront": {"EnableCloudFront": "false"},
}  # fmt: skip
REGIONS = ("us-east-1", "eu-west-1")
VIEWER_PORTS = {80, 443}


def accepted_combinations(master_template: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Every site x edge x region combination the master's Rules let through (each checked, not assumed)."""
    accepted = []
    for (site, site_given), (edge, edge_given), region in itertools.product(
        SITE_CHOICES.items(), EDGE_CHOICES.items(), REGIONS
    ):
        given = {**site_given, **edge_given, "AWS::Region": region}
        try:
            check_rules(master_template, given, "combination")
        except InputError:
            continue
        accepted.append((f"{site}/{edge}/{region}", given))
    return accepted


@pytest.fixture(scope="module")
def combinations(master_template, app_template) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    found = [
        (name, given, active_resources(app_template, given))
        for name, given in accepted_combinations(master_template)
    ]
    # Of 24, the Rules refuse CloudFront off without a domain (2), a CloudFront certificate without a domain
    # (2), and a CloudFront domain outside us-east-1 without a us-east-1 certificate (3).
    assert len(found) == 17, [name for name, _, _ in found]
    return found


def has_certificate(given: dict[str, str]) -> bool:
    return "DomainName" in given


def test_no_origin_is_public_and_none_is_plaintext_across_the_internet(combinations):
    for name, given, active in combinations:
        distributions = of_type(active, "AWS::CloudFront::Distribution")
        if given["EnableCloudFront"] == "false":
            assert not distributions and not of_type(active, "AWS::CloudFront::VpcOrigin"), name
            continue
        (distribution,) = distributions.values()
        (origin,) = distribution["Properties"]["DistributionConfig"]["Origins"]
        assert "CustomOriginConfig" not in origin, f"{name}: a public custom origin"
        (vpc_origin,) = of_type(active, "AWS::CloudFront::VpcOrigin")
        assert origin["VpcOriginConfig"]["VpcOriginId"] == {"Fn::GetAtt": [vpc_origin, "Id"]}, name
        endpoint = active[vpc_origin]["Properties"]["VpcOriginEndpointConfig"]
        assert endpoint["Arn"] == {"Ref": "LoadBalancer"}, name
        # HTTPS whenever a certificate can exist; without a domain no trusted certificate can, and the one
        # plaintext hop left is the VPC origin's, to an internal load balancer (asserted below).
        expected = "https-only" if has_certificate(given) else "http-only"
        assert endpoint["OriginProtocolPolicy"] == expected, name
        # The name CloudFront checks the load balancer's certificate against is the certificate's.
        domain = (
            {"Ref": "DomainName"} if has_certificate(given) else {"Fn::GetAtt": ["LoadBalancer", "DNSName"]}
        )
        assert origin["DomainName"] == domain, name
        assert endpoint["OriginSSLProtocols"] == ["TLSv1.2"], name


def test_behind_cloudfront_the_load_balancer_is_internal_in_private_subnets(combinations):
    for name, given, active in combinations:
        balancer = active["LoadBalancer"]["Properties"]
        if given["EnableCloudFront"] == "true":
            assert (balancer["Scheme"], balancer["Subnets"]) == ("internal", {"Ref": "AppSubnetIds"}), name
        else:
            expected = ("internet-facing", {"Ref": "PublicSubnetIds"})
            assert (balancer["Scheme"], balancer["Subnets"]) == expected, name


def test_the_security_group_admits_only_what_the_path_needs(combinations):
    for name, given, active in combinations:
        rules = sorted(
            (r["Properties"]["FromPort"], r["Properties"]["ToPort"], r["Properties"].get("CidrIp"),
             "SourcePrefixListId" in r["Properties"], "SourceSecurityGroupId" in r["Properties"])
            for r in of_type(active, "AWS::EC2::SecurityGroupIngress").values()
        )  # fmt: skip
        if given["EnableCloudFront"] == "true":
            # One rule: CloudFront's prefix list, on the port the VPC origin speaks.
            port = 443 if has_certificate(given) else 80
            assert rules == [(port, port, None, True, False)], name
        else:
            assert rules == [(80, 80, "0.0.0.0/0", False, False), (443, 443, "0.0.0.0/0", False, False)], name


def test_http_only_ever_redirects_where_https_exists_and_https_carries_hsts(combinations):
    for name, given, active in combinations:
        listener_ports = {
            r["Properties"]["Port"]: r["Properties"]
            for r in of_type(active, "AWS::ElasticLoadBalancingV2::Listener").values()
        }
        assert set(listener_ports) <= VIEWER_PORTS, name
        if not has_certificate(given):
            assert set(listener_ports) == {80}, name
            continue
        (action,) = listener_ports[80]["DefaultActions"]
        assert action["Type"] == "redirect" and action["RedirectConfig"]["Protocol"] == "HTTPS", name
        attributes = {a["Key"]: a["Value"] for a in listener_ports[443]["ListenerAttributes"]}
        assert attributes == {
            "routing.http.response.strict_transport_security.header_value": "max-age=31536000"
        }, name
        assert listener_ports[443]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06", name


def test_every_cloudfront_behaviour_adds_hsts(combinations):
    for name, given, active in combinations:
        if given["EnableCloudFront"] == "false":
            continue
        config = active["Distribution"]["Properties"]["DistributionConfig"]
        behaviours = [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]
        policies = {b["ResponseHeadersPolicyId"]["Ref"] for b in behaviours}
        assert len(behaviours) == 8 and len(policies) == 1, name
        (policy,) = policies
        security = active[policy]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
        assert security["StrictTransportSecurity"] == {
            "AccessControlMaxAgeSec": 31536000,
            "IncludeSubdomains": False,
            "Override": True,
            "Preload": False,
        }, name


def test_every_path_in_passes_a_web_acl_when_waf_is_on(master_template, app_template):
    """The only way in is CloudFront (then the ACL is on it in us-east-1, on the load balancer elsewhere) or
    the internet-facing load balancer, which then carries the ACL."""
    for name, given in accepted_combinations(master_template):
        active = active_resources(app_template, {**given, "EnableWaf": "true"})
        on_distribution = "WebACLId" in active.get("Distribution", {}).get("Properties", {}).get(
            "DistributionConfig", {}
        )
        on_load_balancer = "LoadBalancerWebAclAssociation" in active
        assert on_distribution != on_load_balancer, name
        if given["EnableCloudFront"] == "false":
            assert on_load_balancer, name
