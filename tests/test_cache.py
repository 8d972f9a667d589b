"""Targeted properties of the cache template: both engines, for each cluster, and their validations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moodle_cfn.checks import run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.layers import cache
from tests.cfn_eval import active_resources, evaluate_conditions, of_type, resolve_ifs

ENGINE_CHOICES = [(s, a) for s in cache.ENGINES for a in cache.ENGINES]


@pytest.fixture(scope="module")
def cache_template() -> dict[str, Any]:
    return json.loads(cache.build().to_json())


def choose(session: str, application: str) -> dict[str, str]:
    return {"SessionCacheEngine": session, "ApplicationCacheEngine": application}


@pytest.mark.parametrize(("session", "application"), ENGINE_CHOICES)
def test_each_cluster_is_exactly_one_resource_of_its_engine(cache_template, session, application):
    resources = active_resources(cache_template, choose(session, application))
    for role, engine in ((cache.SESSION, session), (cache.APPLICATION, application)):
        memcached = {
            n for n in of_type(resources, "AWS::ElastiCache::CacheCluster") if n.startswith(role.key)
        }
        valkey = {
            n for n in of_type(resources, "AWS::ElastiCache::ReplicationGroup") if n.startswith(role.key)
        }
        secrets = {n for n in of_type(resources, "AWS::SecretsManager::Secret") if n.startswith(role.key)}
        assert (len(memcached), len(valkey), len(secrets)) == (
            (1, 0, 0) if engine == "memcached" else (0, 1, 1)
        )


def test_the_two_clusters_are_separate(cache_template):
    resources = active_resources(cache_template, choose("memcached", "memcached"))
    clusters = of_type(resources, "AWS::ElastiCache::CacheCluster")
    assert set(clusters) == {"SessionMemcachedCluster", "ApplicationMemcachedCluster"}
    assert clusters["SessionMemcachedCluster"]["Properties"]["NumCacheNodes"] == {"Ref": "SessionCacheNodes"}


def test_memcached_is_pinned_and_spread_across_azs(cache_template):
    for role in cache.ROLES:
        props = cache_template["Resources"][f"{role.key}MemcachedCluster"]["Properties"]
        assert props["Engine"] == "memcached" and props["EngineVersion"] == "1.6.22"
        assert props["AZMode"] == "cross-az"
        assert props["CacheSubnetGroupName"] == {"Ref": "CacheSubnetGroup"}
        assert props["VpcSecurityGroupIds"] == [{"Ref": "CacheSecurityGroupId"}]
        assert props["CacheNodeType"] == {"Ref": f"{role.key}CacheNodeType"}
    subnets = cache_template["Resources"]["CacheSubnetGroup"]["Properties"]["SubnetIds"]
    assert subnets == {"Ref": "DataSubnetIds"}


def test_valkey_fails_over_across_azs_encrypted_with_auth_from_secrets_manager(cache_template):
    for role in cache.ROLES:
        props = cache_template["Resources"][f"{role.key}ValkeyReplicationGroup"]["Properties"]
        assert props["Engine"] == "valkey"
        assert props["AutomaticFailoverEnabled"] is True and props["MultiAZEnabled"] is True
        assert props["AtRestEncryptionEnabled"] is True and props["TransitEncryptionEnabled"] is True
        assert props["TransitEncryptionMode"] == "required"
        template, variables = props["AuthToken"]["Fn::Sub"]
        assert template == "{{resolve:secretsmanager:${Secret}:SecretString:token}}"
        assert variables == {"Secret": {"Ref": f"{role.key}ValkeyAuthSecret"}}
        assert props["SnapshotRetentionLimit"] == {"Ref": "CacheSnapshotRetentionDays"}
        assert props["NumCacheClusters"] == {"Ref": f"{role.key}CacheNodes"}
        secret = cache_template["Resources"][f"{role.key}ValkeyAuthSecret"]
        # Kept, unless the create that made it rolls back (tests/test_first_create.py).
        assert (secret["DeletionPolicy"], secret["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
        assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32


def test_no_secret_is_a_parameter(cache_template):
    assert not [
        name for name in cache_template["Parameters"] if "token" in name.lower() or "auth" in name.lower()
    ]


@pytest.mark.parametrize(("session", "application"), ENGINE_CHOICES)
def test_outputs_point_at_the_chosen_engine(cache_template, session, application):
    conditions = evaluate_conditions(cache_template, choose(session, application))
    outputs = {name: resolve_ifs(o["Value"], conditions) for name, o in cache_template["Outputs"].items()}
    for role, engine in ((cache.SESSION, session), (cache.APPLICATION, application)):
        endpoint = outputs[role.output("Endpoint")]["Fn::GetAtt"]
        if engine == "valkey":
            assert endpoint == [f"{role.key}ValkeyReplicationGroup", "PrimaryEndPoint.Address"]
            assert outputs[role.output("AuthSecretArn")] == {"Ref": f"{role.key}ValkeyAuthSecret"}
        else:
            # The configuration endpoint plus the cluster id let nodes discover the node list.
            assert endpoint == [f"{role.key}MemcachedCluster", "ConfigurationEndpoint.Address"]
            assert outputs[role.output("Id")] == {"Ref": f"{role.key}MemcachedCluster"}
            assert outputs[role.output("AuthSecretArn")] == cache.NOT_USED
        assert outputs[role.output("Engine")] == {"Ref": f"{role.key}CacheEngine"}


def values(**overrides: str) -> dict[str, str]:
    base = {
        "AvailabilityZoneCount": "3",
        "SessionCacheEngine": "memcached",
        "SessionCacheNodes": "3",
        "ApplicationCacheEngine": "memcached",
        "ApplicationCacheNodes": "3",
    }
    return base | overrides


def test_valid_node_counts_pass():
    run_checks(cache.CHECKS, values(), "p.yaml")
    run_checks(cache.CHECKS, values(SessionCacheEngine="valkey", SessionCacheNodes="2"), "p.yaml")


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"SessionCacheNodes": "2"}, "SessionCacheNodes", "one node in every Availability Zone"),
        (
            {"ApplicationCacheNodes": "1", "AvailabilityZoneCount": "2"},
            "ApplicationCacheNodes",
            "every Availability Zone",
        ),
        ({"SessionCacheNodes": "2.5"}, "SessionCacheNodes", "whole number"),
    ],
)
def test_node_count_validations(overrides, key, reason):
    with pytest.raises(InputError, match=f"p.yaml: {key}: .*{reason}"):
        run_checks(cache.CHECKS, values(**overrides), "p.yaml")


def test_node_count_bounds_are_template_constraints(cache_template):
    for role in cache.ROLES:
        spec = cache_template["Parameters"][f"{role.key}CacheNodes"]
        assert (spec["MinValue"], spec["MaxValue"]) == (2, cache.MAX_VALKEY_NODES)
