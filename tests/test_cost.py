"""The monthly estimate: hand-checked arithmetic, every params file priced, clear errors, --live stubbed."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from moodle_cfn import cost, master
from moodle_cfn.cli import main
from moodle_cfn.errors import InputError
from moodle_cfn.rules import effective_values
from tests.conftest import PARAMS_FILES

# A small, fully known price table: every figure below is worked out by hand from it.
PRICES = cost.PriceTable(
    {
        "region": "test-1",
        "currency": "USD",
        "as_of": "test",
        "source": "test",
        "ec2_instance_hour": {"m7g.large": 0.1},
        "ebs_gp3_gb_month": 0.1,
        "nat_gateway_hour": 0.05,
        "nat_gateway_gb": 0.05,
        "alb_hour": 0.02,
        "alb_lcu_hour": 0.01,
        "aurora_instance_hour": {"db.r7g.large": 0.3},
        "aurora_acu_hour": 0.1,
        "aurora_storage_gb_month": 0.1,
        "aurora_io_million": 0.2,
        "elasticache_node_hour": {"cache.t4g.small": 0.02, "cache.m7g.large": 0.2},
        "valkey_node_discount": 0.2,
        "efs_standard_gb_month": 0.3,
        "efs_ia_gb_month": 0.02,
        "efs_elastic_read_gb": 0.03,
        "efs_elastic_write_gb": 0.06,
        "cloudfront_gb": 0.1,
        "cloudfront_https_per_10k": 0.01,
        "backup_efs_gb_month": 0.05,
        "backup_aurora_gb_month": 0.02,
        "logs_ingest_gb": 0.5,
        "logs_storage_gb_month": 0.03,
        "waf_web_acl_month": 5,
        "waf_rule_month": 1,
        "waf_requests_million": 0.6,
        "secret_month": 0.4,
        "alarm_month": 0.1,
        "dashboard_month": 3,
    }
)
HOURS_100 = cost.Assumptions(hours=100)
SITE = {
    "WebInstanceType": "m7g.large", "WebMinSize": "2", "WebDesiredCapacity": "3", "WebMaxSize": "5",
    "WebRootVolumeSize": "30", "WebWarmPool": "true", "WebWarmPoolSize": "1",
    "AvailabilityZoneCount": "3", "NatGatewayMode": "per-az",
    "DatabaseCapacityMode": "provisioned", "DatabaseInstanceClass": "db.r7g.large",
    "DatabaseMinCapacity": "0.5", "DatabaseMaxCapacity": "8",
    "SessionCacheEngine": "memcached", "SessionCacheNodeType": "cache.t4g.small", "SessionCacheNodes": "2",
    "ApplicationCacheEngine": "valkey", "ApplicationCacheNodeType": "cache.m7g.large", "ApplicationCacheNodes": "3",
    "FileSystemThroughputMode": "elastic", "EnableCloudFront": "true", "BackupRetentionDays": "10", "EnableWaf": "true",
}  # fmt: skip


def by_name(lines: list[cost.Line]) -> dict[str, cost.Line]:
    return {x.component: x for x in lines}


def test_web_tier_arithmetic():
    lines = by_name(cost.web_tier(SITE, PRICES, HOURS_100))
    # 3 desired x 0.1 USD/h x 100 h = 30; range 2..5 nodes = 20..50
    assert lines["Web nodes"] == cost.Line(
        "Web nodes", 30.0, 20.0, 50.0, "3 x m7g.large x 100 h at 0.1 USD/h"
    )
    # (3 + 1 warm) x 30 GiB x 0.1 = 12; range (2+1)x3 = 9 .. (5+1)x3 = 18
    assert (
        lines["Web node volumes"].monthly,
        lines["Web node volumes"].low,
        lines["Web node volumes"].high,
    ) == (12.0, 9.0, 18.0)


def test_network_arithmetic():
    lines = by_name(cost.network(SITE, PRICES, HOURS_100))
    assert lines["NAT gateways"].monthly == 3 * 100 * 0.05 + 50 * 0.05  # 17.5
    assert lines["Load balancer"].monthly == 100 * (0.02 + 1 * 0.01)  # 3.0
    single = by_name(cost.network({**SITE, "NatGatewayMode": "single"}, PRICES, HOURS_100))
    assert single["NAT gateways"].monthly == 1 * 100 * 0.05 + 50 * 0.05  # 7.5


def test_database_arithmetic_in_both_modes():
    provisioned = by_name(cost.database(SITE, PRICES, HOURS_100))
    assert provisioned["Aurora instances"].monthly == 2 * 0.3 * 100  # 60
    assert provisioned["Aurora storage and I/O"].monthly == 20 * 0.1 + 200 * 0.2  # 42
    serverless = by_name(cost.database({**SITE, "DatabaseCapacityMode": "serverless-v2"}, PRICES, HOURS_100))
    acu = serverless["Aurora Serverless v2 (2 instances)"]
    # average 1 ACU x 2 instances x 0.1 x 100 h = 20; range 0.5..8 ACU = 10..160
    assert (acu.monthly, acu.low, acu.high) == (20.0, 10.0, 160.0)


def test_cache_arithmetic_with_the_valkey_discount():
    lines = by_name(cost.caches(SITE, PRICES, HOURS_100))
    assert lines["Session cache"].monthly == 2 * 0.02 * 100  # 4
    assert lines["Application cache"].monthly == 48.0  # 3 nodes x 0.2 USD/h x (1 - 0.2) x 100 h


def test_storage_edge_and_operations_arithmetic():
    values = effective_values(master.build().to_dict()["Parameters"], SITE)
    lines = by_name(
        cost.storage_and_edge(SITE, PRICES, HOURS_100) + cost.operations(values, PRICES, HOURS_100)
    )
    # 30 GB x 0.3 + 70 GB x 0.02 + 200 x 0.03 + 50 x 0.06 = 9 + 1.4 + 6 + 3
    assert lines["EFS moodledata"].monthly == 19.4
    assert lines["CloudFront"].monthly == 500 * 0.1 + 20 * 100 * 0.01  # 70
    # (1 + 0.02 x 10) x (100 x 0.05 + 20 x 0.02) = 1.2 x 5.4
    assert lines["AWS Backup"].monthly == 6.48
    assert lines["AWS WAF"].monthly == 5 + 4 * 1 + 20 * 0.6  # 21
    # secrets: RDS's master, Moodle's database user, the valkey AUTH token, the CloudFront origin header and
    # the Moodle admin: 5; alarms: 4 load balancer + 4 database + 3 + 3 caches + 1 file system + 2 x 3 NAT
    # + 7 of Moodle's own health + 1 web disk: 29
    assert lines["Secrets, alarms, dashboard"].monthly == round(5 * 0.4 + 29 * 0.1 + 3, 2)
    assert (
        lines["Secrets, alarms, dashboard"].assumes
        == "5 secrets (RDS's own included), 29 alarms, 1 dashboard"
    )


def test_secret_and_alarm_counts_follow_the_templates():
    defaults = effective_values(master.build().to_dict()["Parameters"], {"AWS::Region": "us-east-1"})
    single_nat = {**defaults, "NatGatewayMode": "single", "AvailabilityZoneCount": "2"}
    serverless = {**single_nat, "DatabaseCapacityMode": "serverless-v2", "EnableCloudFront": "false"}
    assert cost.count_resources("AWS::CloudWatch::Alarm", single_nat) == 4 + 4 + 3 + 3 + 1 + 2 + 7 + 1
    assert cost.count_resources("AWS::CloudWatch::Alarm", serverless) == 4 + 5 + 3 + 3 + 1 + 2 + 7 + 1
    # without CloudFront there is no origin header secret
    assert cost.count_resources("AWS::SecretsManager::Secret", serverless) == 2


def test_total_adds_every_line():
    lines = cost.estimate(effective_values(master.build().to_dict()["Parameters"], SITE), PRICES, HOURS_100)
    total = cost.total(lines)
    assert total.monthly == round(sum(x.monthly for x in lines), 2)
    assert total.low <= total.monthly <= total.high


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_every_params_file_is_priced_with_the_bundled_table(path, capsys):
    assert main(["cost", str(path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["region"] == "us-east-1" and report["prices_source"]
    assert report["total"]["monthly"] > 100
    assert all(c["assumes"] for c in report["components"])


def test_assumptions_are_options(capsys):
    assert main(["cost", str(PARAMS_FILES[0]), "--transfer-gb", "0", "--format", "json"]) == 0
    cdn = next(c for c in json.loads(capsys.readouterr().out)["components"] if c["component"] == "CloudFront")
    assert cdn["assumes"].startswith("0 GB out")


def test_unknown_region_and_unknown_size_are_clear_errors(capsys):
    assert main(["cost", str(PARAMS_FILES[0]), "--region", "eu-west-1"]) == 2
    assert (
        "eu-west-1: --region: no bundled prices for this region (bundled: us-east-1); use --live"
        in capsys.readouterr().err
    )
    with pytest.raises(InputError, match=r"WebInstanceType: no price for 'x9\.huge'"):
        cost.web_tier({**SITE, "WebInstanceType": "x9.huge"}, PRICES, HOURS_100)


def product(price: str) -> str:
    return json.dumps(
        {
            "terms": {
                "OnDemand": {"T": {"priceDimensions": {"D": {"unit": "Hrs", "pricePerUnit": {"USD": price}}}}}
            }
        }
    )


def test_live_prices_come_from_the_price_list_api():
    client = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    expected = {
        "ServiceCode": "AmazonEC2",
        "Filters": [
            {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
            {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
            {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
            {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
            {"Type": "TERM_MATCH", "Field": "location", "Value": "EU (Ireland)"},
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "m7g.large"},
        ],
        "MaxResults": 10,
    }
    stubber.add_response("get_products", {"PriceList": [product("0.0000"), product("0.0892")]}, expected)
    with stubber:
        prices = cost.live(
            "eu-west-1", cost.PriceTable.bundled("us-east-1"), {"ec2_instance_hour": ["m7g.large"]}, client
        )
    stubber.assert_no_pending_responses()
    assert prices.hourly("ec2_instance_hour", "m7g.large", "WebInstanceType") == 0.0892
    assert prices.data["region"] == "eu-west-1" and "live" in prices.data["as_of"]


def test_live_without_a_price_is_a_clear_error():
    client = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stubber.add_response("get_products", {"PriceList": []})
    with stubber, pytest.raises(InputError, match=r"no on-demand price for m7g\.large"):
        cost.live(
            "eu-west-1", cost.PriceTable.bundled("us-east-1"), {"ec2_instance_hour": ["m7g.large"]}, client
        )
    with pytest.raises(InputError, match="--live knows the regions"):
        cost.live("xx-nowhere-1", cost.PriceTable.bundled("us-east-1"), {}, client)


def test_live_without_credentials_is_one_line(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["cost", str(PARAMS_FILES[0]), "--live"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AWS Price List API: no AWS credentials found" in err
