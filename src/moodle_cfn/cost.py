"""Monthly cost estimate of a params file: every component, the usage it assumes, and the prices it uses.

Prices come from a bundled table (src/moodle_cfn/prices/<region>.json, with its as-of date and source), or
with --live from the AWS Price List API for the instance-hour prices, which dominate the bill.
Usage that no template fixes (data stored and transferred, requests, log volume) is an Assumptions field,
printed beside each figure and overridable on the command line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any

from moodle_cfn.errors import InputError
from moodle_cfn.layers import LAYERS, waf
from moodle_cfn.layers.existing_vpc import EXISTING_VPC_ID
from moodle_cfn.rules import active_resources

BUNDLED_REGIONS = ("us-east-1",)
# Price List API "location" names of the regions --live understands.
REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)",
    "ca-central-1": "Canada (Central)",
    "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)",
    "eu-west-3": "EU (Paris)",
    "eu-central-1": "EU (Frankfurt)",
    "eu-north-1": "EU (Stockholm)",
    "eu-south-2": "Europe (Spain)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-south-1": "Asia Pacific (Mumbai)",
    "sa-east-1": "South America (Sao Paulo)",
}
# The secret RDS keeps for the master user, which no template declares.
RDS_MANAGED_SECRETS = 1


@dataclass(frozen=True)
class Assumptions:
    """Usage a template cannot know. Every field is a command-line option of `moodle-cfn cost`."""

    hours: float = 730
    transfer_gb: float = 500  # served to viewers per month
    requests_million: float = 20  # viewer requests per month
    moodledata_gb: float = 100  # files in moodledata
    moodledata_standard_share: float = 0.3  # the rest has moved to Infrequent Access
    efs_read_gb: float = 200  # elastic throughput, per month
    efs_write_gb: float = 50
    database_gb: float = 20
    database_io_million: float = 200  # Aurora Standard I/O requests per month
    database_average_acu: float = 1  # Serverless v2 average capacity of each instance
    nat_gb: float = 50  # through the NAT gateways (packages, downloads, APIs)
    load_balancer_lcu: float = 1  # average load balancer capacity units
    log_gb: float = 10  # CloudWatch Logs ingested per month (flow logs, node logs, PostgreSQL)
    backup_daily_change: float = 0.02  # share of the data that changes each day (incremental backups)


@dataclass(frozen=True)
class Line:
    """One component of the estimate: expected monthly cost, its range, and the usage it assumes."""

    component: str
    monthly: float
    low: float
    high: float
    assumes: str


class PriceTable:
    """Prices for one region, from the bundled JSON (or refreshed by --live)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)

    @classmethod
    def bundled(cls, region: str) -> PriceTable:
        """The table shipped in the package for `region`."""
        if region not in BUNDLED_REGIONS:
            raise InputError(
                region,
                f"no bundled prices for this region (bundled: {', '.join(BUNDLED_REGIONS)}); use --live",
                "--region",
            )
        text = resources.files("moodle_cfn.prices").joinpath(f"{region}.json").read_text(encoding="utf-8")
        return cls(json.loads(text))

    def unit(self, key: str) -> float:
        """A unit price such as nat_gateway_hour."""
        return float(self.data[key])

    def hourly(self, table: str, size: str, parameter: str) -> float:
        """The hourly price of an instance, database or cache node size."""
        prices = self.data[table]
        if size not in prices:
            raise InputError(
                self.data["region"], f"no price for {size!r} in the {table} table; use --live", parameter
            )
        return float(prices[size])


def line(
    component: str, monthly: float, assumes: str, low: float | None = None, high: float | None = None
) -> Line:
    """A Line rounded to cents, its range defaulting to the figure itself."""
    return Line(component, round(monthly, 2), round(low if low is not None else monthly, 2),
                round(high if high is not None else monthly, 2), assumes)  # fmt: skip


def web_tier(v: Mapping[str, str], p: PriceTable, a: Assumptions) -> list[Line]:
    """Instances (desired count, and the min..max range), their volumes, the warm pool's volumes."""
    hourly = p.hourly("ec2_instance_hour", v["WebInstanceType"], "WebInstanceType")
    low, desired, high = (int(v[k]) for k in ("WebMinSize", "WebDesiredCapacity", "WebMaxSize"))
    per_node = hourly * a.hours
    volume = float(v["WebRootVolumeSize"]) * p.unit("ebs_gp3_gb_month")
    warm = int(v["WebWarmPoolSize"]) if v["WebWarmPool"] == "true" else 0
    return [
        line("Web nodes", desired * per_node, f"{desired} x {v['WebInstanceType']} x {a.hours:g} h at {hourly} USD/h",
             low * per_node, high * per_node),
        line("Web node volumes", (desired + warm) * volume,
             f"{desired} nodes + {warm} in the warm pool x {v['WebRootVolumeSize']} GiB gp3",
             (low + warm) * volume, (high + warm) * volume),
    ]  # fmt: skip


def network(v: Mapping[str, str], p: PriceTable, a: Assumptions) -> list[Line]:
    """NAT gateways (hours and data) and the load balancer (hours and capacity units). In an existing VPC
    the stack has no NAT gateway: the VPC's own outbound route is its owner's cost, not counted here."""
    alb = a.hours * (p.unit("alb_hour") + a.load_balancer_lcu * p.unit("alb_lcu_hour"))
    if v.get(EXISTING_VPC_ID.name):
        nat_line = line(
            "NAT gateways", 0, "none: ExistingVpcId (the VPC's own outbound route is not counted)"
        )
    else:
        gateways = int(v["AvailabilityZoneCount"]) if v["NatGatewayMode"] == "per-az" else 1
        nat = gateways * a.hours * p.unit("nat_gateway_hour") + a.nat_gb * p.unit("nat_gateway_gb")
        nat_line = line("NAT gateways", nat, f"{gateways} x {a.hours:g} h + {a.nat_gb:g} GB processed")
    return [
        nat_line,
        line("Load balancer", alb, f"{a.hours:g} h at {a.load_balancer_lcu:g} LCU average"),
    ]


def database(v: Mapping[str, str], p: PriceTable, a: Assumptions) -> list[Line]:
    """Two Aurora instances (or Serverless v2 capacity), storage and I/O."""
    storage = a.database_gb * p.unit("aurora_storage_gb_month") + a.database_io_million * p.unit(
        "aurora_io_million"
    )
    if v["DatabaseCapacityMode"] == "serverless-v2":
        acu = p.unit("aurora_acu_hour") * a.hours * 2  # writer and reader
        low, high = float(v["DatabaseMinCapacity"]), float(v["DatabaseMaxCapacity"])
        average = min(max(a.database_average_acu, low), high)
        compute = line("Aurora Serverless v2 (2 instances)", average * acu,
                       f"{average:g} ACU average each (range {low:g}-{high:g} ACU) at {p.unit('aurora_acu_hour')} USD/ACU-h",
                       low * acu, high * acu)  # fmt: skip
    else:
        hourly = p.hourly("aurora_instance_hour", v["DatabaseInstanceClass"], "DatabaseInstanceClass")
        compute = line(
            "Aurora instances",
            2 * hourly * a.hours,
            f"writer + reader, {v['DatabaseInstanceClass']} at {hourly} USD/h",
        )
    return [
        compute,
        line(
            "Aurora storage and I/O",
            storage,
            f"{a.database_gb:g} GB stored, {a.database_io_million:g} M I/O requests",
        ),
    ]


def caches(v: Mapping[str, str], p: PriceTable, a: Assumptions) -> list[Line]:
    """Both cache clusters, valkey nodes at their discount."""
    lines = []
    for role in ("Session", "Application"):
        engine, node_type, nodes = (v[f"{role}Cache{k}"] for k in ("Engine", "NodeType", "Nodes"))
        hourly = p.hourly("elasticache_node_hour", node_type, f"{role}CacheNodeType")
        if engine == "valkey":
            hourly *= 1 - p.unit("valkey_node_discount")
        lines.append(
            line(
                f"{role} cache",
                int(nodes) * hourly * a.hours,
                f"{nodes} x {node_type} {engine} at {hourly:.4f} USD/h",
            )
        )
    return lines


def storage_and_edge(v: Mapping[str, str], p: PriceTable, a: Assumptions) -> list[Line]:
    """EFS storage and throughput, CloudFront, AWS Backup."""
    standard = a.moodledata_gb * a.moodledata_standard_share
    efs = standard * p.unit("efs_standard_gb_month") + (a.moodledata_gb - standard) * p.unit(
        "efs_ia_gb_month"
    )
    if v["FileSystemThroughputMode"] == "elastic":
        efs += a.efs_read_gb * p.unit("efs_elastic_read_gb") + a.efs_write_gb * p.unit("efs_elastic_write_gb")
    lines = [
        line("EFS moodledata", efs, f"{a.moodledata_gb:g} GB ({a.moodledata_standard_share:.0%} Standard, rest IA); "
             f"{a.efs_read_gb:g} GB read, {a.efs_write_gb:g} GB written"),
    ]  # fmt: skip
    if v["EnableCloudFront"] == "true":
        cdn = a.transfer_gb * p.unit("cloudfront_gb") + a.requests_million * 100 * p.unit(
            "cloudfront_https_per_10k"
        )
        lines.append(
            line("CloudFront", cdn, f"{a.transfer_gb:g} GB out, {a.requests_million:g} M HTTPS requests")
        )
    retention = int(v["BackupRetentionDays"])
    stored = 1 + a.backup_daily_change * retention  # a full copy, then each day's changes
    backup = stored * (
        a.moodledata_gb * p.unit("backup_efs_gb_month") + a.database_gb * p.unit("backup_aurora_gb_month")
    )
    lines.append(
        line(
            "AWS Backup",
            backup,
            f"{retention} days kept, {a.backup_daily_change:.0%} of the data changing daily",
        )
    )
    return lines


@functools.cache
def layer_templates() -> tuple[dict[str, Any], ...]:
    """Every layer's template as data (built once)."""
    return tuple(layer.build().to_dict() for layer in LAYERS)


def count_resources(resource_type: str, values: Mapping[str, str]) -> int:
    """How many resources of a type the templates create for these parameter values."""
    return sum(
        r["Type"] == resource_type for t in layer_templates() for r in active_resources(t, values).values()
    )


def operations(v: Mapping[str, str], p: PriceTable, a: Assumptions) -> list[Line]:
    """Logs, WAF, secrets, alarms and the dashboard."""
    lines = [line("CloudWatch Logs", a.log_gb * (p.unit("logs_ingest_gb") + p.unit("logs_storage_gb_month")),
                  f"{a.log_gb:g} GB ingested per month")]  # fmt: skip
    if v["EnableWaf"] == "true":
        rules = len(waf.rules(None))
        cost = p.unit("waf_web_acl_month") + rules * p.unit("waf_rule_month")
        cost += a.requests_million * p.unit("waf_requests_million")
        lines.append(line("AWS WAF", cost, f"1 web ACL, {rules} rules, {a.requests_million:g} M requests"))
    # Counted in the templates, for these parameter values.
    with_region = {**v, "AWS::Region": p.data["region"]}
    secrets = RDS_MANAGED_SECRETS + count_resources("AWS::SecretsManager::Secret", with_region)
    alarms = count_resources("AWS::CloudWatch::Alarm", with_region)
    other = secrets * p.unit("secret_month") + alarms * p.unit("alarm_month") + p.unit("dashboard_month")
    lines.append(
        line(
            "Secrets, alarms, dashboard",
            other,
            f"{secrets} secrets (RDS's own included), {alarms} alarms, 1 dashboard",
        )
    )
    return lines


COMPONENTS: tuple[Callable[[Mapping[str, str], PriceTable, Assumptions], list[Line]], ...] = (
    web_tier, network, database, caches, storage_and_edge, operations,
)  # fmt: skip


def estimate(values: Mapping[str, str], prices: PriceTable, assumptions: Assumptions) -> list[Line]:
    """Every component's monthly cost for a params file's effective values."""
    return [item for component in COMPONENTS for item in component(values, prices, assumptions)]


def total(lines: list[Line]) -> Line:
    """The sum of the lines, with the sum of their ranges."""
    return Line("Total", round(sum(x.monthly for x in lines), 2), round(sum(x.low for x in lines), 2),
                round(sum(x.high for x in lines), 2), "")  # fmt: skip


def render_table(lines: list[Line], prices: PriceTable) -> str:
    """A fixed-width table: component, USD/month, range, assumptions; then where the prices come from."""
    rows = [*lines, total(lines)]
    width = max(len(r.component) for r in rows)
    out = [f"{'Component':<{width}}  {'USD/month':>10}  {'range':>19}  assumes", "-" * (width + 60)]
    for r in rows:
        span = f"{r.low:,.2f}-{r.high:,.2f}" if r.low != r.high else ""
        out.append(f"{r.component:<{width}}  {r.monthly:>10,.2f}  {span:>19}  {r.assumes}".rstrip())
    out.append("")
    out.append(f"Prices: {prices.data['region']}, {prices.data['currency']}, as of {prices.data['as_of']}.")
    out.append(f"Source: {prices.data['source']}")
    return "\n".join(out) + "\n"


def _dollars(line: Line) -> str:
    """Whole USD, with the range when the stack can scale: 175 (88-701)."""
    span = f" ({line.low:,.0f}-{line.high:,.0f})" if round(line.low) != round(line.high) else ""
    return f"{line.monthly:,.0f}{span}"


def render_markdown(estimates: Mapping[str, list[Line]]) -> str:
    """A Markdown table comparing params files: one row per component, one column per file, the total."""
    names = list(estimates)
    # Components in estimate order: each at the earliest place any file lists it.
    place: dict[str, int] = {}
    for lines in estimates.values():
        for index, x in enumerate(lines):
            place[x.component] = min(index, place.get(x.component, index))
    components = sorted(place, key=lambda component: place[component])
    by_file = {name: {x.component: x for x in lines} for name, lines in estimates.items()}
    out = ["| Component | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for component in components:
        cells = [_dollars(by_file[n][component]) if component in by_file[n] else "-" for n in names]
        out.append(f"| {component} | " + " | ".join(cells) + " |")
    totals = [f"**{_dollars(total(estimates[n]))}**" for n in names]
    out.append("| **Total** | " + " | ".join(totals) + " |")
    return "\n".join(out) + "\n"


def render_totals(estimates: Mapping[str, list[Line]]) -> str:
    """A Markdown table of each params file's monthly total and range."""
    out = ["| Params file | USD per month (range as it scales) |", "|---|---:|"]
    out += [f"| `{name}` | {_dollars(total(lines))} |" for name, lines in estimates.items()]
    return "\n".join(out) + "\n"


def render_json(lines: list[Line], prices: PriceTable, assumptions: Assumptions) -> str:
    """The estimate as JSON, with the assumptions and the price table's provenance."""
    document = {
        "region": prices.data["region"],
        "currency": prices.data["currency"],
        "prices_as_of": prices.data["as_of"],
        "prices_source": prices.data["source"],
        "assumptions": asdict(assumptions),
        "components": [asdict(x) for x in lines],
        "total": asdict(total(lines)),
    }
    return json.dumps(document, indent=2) + "\n"


def assumption_fields() -> list[tuple[str, float]]:
    """(name, default) of every assumption, for the command-line options."""
    return [(f.name, f.default) for f in fields(Assumptions)]


def _on_demand_price(product: Mapping[str, Any]) -> float:
    """The hourly on-demand USD price in one Price List API product."""
    (term,) = product["terms"]["OnDemand"].values()
    (dimension,) = term["priceDimensions"].values()
    return float(dimension["pricePerUnit"]["USD"])


LIVE_QUERIES = {
    # table: (service code, filters for one size, the attribute holding the size)
    "ec2_instance_hour": ("AmazonEC2", {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                                        "capacitystatus": "Used"}, "instanceType"),
    "aurora_instance_hour": ("AmazonRDS", {"databaseEngine": "Aurora PostgreSQL", "deploymentOption": "Single-AZ"},
                             "instanceType"),
    "elasticache_node_hour": ("AmazonElastiCache", {"cacheEngine": "Memcached"}, "instanceType"),
}  # fmt: skip


def live(region: str, base: PriceTable, wanted: Mapping[str, list[str]], client: Any) -> PriceTable:
    """`base` with the instance-hour prices of `wanted` sizes read from the Price List API."""
    location = REGION_NAMES.get(region)
    if location is None:
        raise InputError(region, f"--live knows the regions {', '.join(sorted(REGION_NAMES))}", "--region")
    data = json.loads(json.dumps(base.data))
    data.update(
        region=region,
        as_of=f"live from the AWS Price List API for instance hours; other unit prices are the bundled "
        f"{base.data['region']} ones ({base.data['as_of']})",
    )
    for table, sizes in wanted.items():
        service, filters, attribute = LIVE_QUERIES[table]
        for size in sizes:
            terms = [{"Type": "TERM_MATCH", "Field": k, "Value": value} for k, value in
                     {**filters, "location": location, attribute: size}.items()]  # fmt: skip
            answer = client.get_products(ServiceCode=service, Filters=terms, MaxResults=10)
            prices = sorted({_on_demand_price(json.loads(item)) for item in answer["PriceList"]} - {0.0})
            if not prices:
                raise InputError(region, f"the Price List API has no on-demand price for {size}", "--live")
            data[table][size] = prices[0]
    return PriceTable(data)
