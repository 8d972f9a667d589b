"""Deploy rehearsal of the cache layer in moto, after the network and data layers.

moto ignores ElastiCache and Secrets Manager, so both clusters and the valkey secrets are named placeholders
(tests/rehearsal.py): this proves the template deploys against a real network stack with the values the
master passes, and that its outputs resolve for the default (memcached) choice. Engine behaviour itself is
covered by test_cache.py and the cfn-lint / checkov gates over every engine choice (tests/variants.py).
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("params_file", ["dev.yaml", "production.yaml"])
def test_cache_stack_deploys_with_network_outputs(rehearsal, params_file):
    stacks = rehearsal(params_file)
    network, caches = stacks["NetworkStack"], stacks["CacheStack"]
    assert caches["parameters"]["DataSubnetIds"] == network["outputs"]["DataSubnetIds"]
    assert caches["parameters"]["CacheSecurityGroupId"] == network["outputs"]["CacheSecurityGroupId"]
    outputs = caches["outputs"]
    assert outputs["SessionCacheEngine"] == outputs["ApplicationCacheEngine"] == "memcached"
    assert (
        outputs["SessionCacheEndpoint"]
        == "moto-placeholder:SessionMemcachedCluster.ConfigurationEndpoint.Address"
    )
    assert outputs["SessionCacheAuthSecretArn"] == "none"
