"""Template conditions in the words an operator uses, for the figures' labels: a reader of the figure knows
"only when 3 AZs are chosen", not `HasAz3`. Shared by the figure (figure.py) and the detailed graph
(diagram.py), so the two say the same thing.
"""

from __future__ import annotations

import re

# What each condition a drawn resource can carry means, in the params file's terms.
CONDITION_WORDS = {
    "HasAz3": "only when 3 AZs are chosen",
    "NatPerAz": "only with a NAT gateway per AZ",
    "NatInAz3": "only with a NAT gateway per AZ and 3 AZs",
    "UseCloudFront": "only with CloudFront",
    "NoCloudFront": "only without CloudFront",
    "WafOnCloudFront": "only with WAF and CloudFront in us-east-1",
    "WafOnLoadBalancer": "only with WAF, on the load balancer unless CloudFront in us-east-1",
    "CreateCertificate": "only with a domain and hosted zone and no certificate ARN",
    "HasCertificate": "only with a certificate",
    "HasHostedZone": "only with a hosted zone",
    "CloudFrontWithHostedZone": "only with CloudFront and a hosted zone",
    "SendThroughSes": "only with a domain and no SMTP relay",
    "SesRecordsInHostedZone": "only with a domain, a hosted zone and no SMTP relay",
    "SessionCacheIsMemcached": "when the session cache engine is memcached",
    "SessionCacheIsValkey": "when the session cache engine is valkey",
    "ApplicationCacheIsMemcached": "when the application cache engine is memcached",
    "ApplicationCacheIsValkey": "when the application cache engine is valkey",
    "HasAlarmEmail": "only with an alarm e-mail",
    "UseWarmPool": "only with a warm pool",
}


def in_words(condition: str) -> str:
    """A condition as a label says it. One not listed above (a condition added since) still reads as
    words, never as its CamelCase name: HasFooBar -> "only when has foo bar"."""
    if condition in CONDITION_WORDS:
        return CONDITION_WORDS[condition]
    words = re.findall(r"[A-Z]+(?![a-z])\d*|[A-Z]?[a-z]+\d*|\d+", condition)
    return "only when " + " ".join(word.lower() for word in words)
