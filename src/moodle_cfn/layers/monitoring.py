"""Monitoring layer: an SNS topic, CloudWatch alarms on every tier, and one dashboard for the site.

The operator should hear about trouble before the users do: 5xx rate and slow answers at the load
balancer, unhealthy nodes, the web group stuck at its maximum, the database's CPU, memory, connections,
replica lag (and capacity in Serverless v2), the caches' CPU, evictions and memory, the file system's I/O
limit, and NAT gateways dropping packets or running out of ports.

Cache node metrics exist per node only, so each cache alarm takes the worst node with metric math over
every node the cluster may have (up to 6; absent nodes have no data and are ignored by MAX).
"""

from __future__ import annotations

import json

from troposphere import And, Equals, If, Not, NoValue, Output, Parameter, Ref, Select, Sub, Template
from troposphere.cloudwatch import Alarm, Dashboard, Metric, MetricDataQuery, MetricDimension, MetricStat
from troposphere.sns import SubscriptionResource, Topic

from moodle_cfn.azs import AVAILABILITY_ZONE_COUNT, AZ_SLOTS, three_azs
from moodle_cfn.common import (
    GROUP_MONITORING,
    SITE_NAME,
    OperatorParameter,
    checkov_skips,
    declare_parameters,
    number_parameter,
    output_as_parameter,
)
from moodle_cfn.encryption import DATA_KMS_KEY_ARN, HAS_DATA_KMS_KEY
from moodle_cfn.layers import app, auto_scaling, cache, database, existing_vpc, moodle_metrics, nat, network
from moodle_cfn.layers.file_system import FILE_SYSTEM_ID

HAS_ALARM_EMAIL = "HasAlarmEmail"
MAX_CACHE_NODES = cache.MAX_VALKEY_NODES
FIVE_MINUTES = 300
MIB = 1024 * 1024

# Values this layer reads from the app layer (names are its outputs').
LOAD_BALANCER_FULL_NAME = app.LOAD_BALANCER_FULL_NAME
TARGET_GROUP_FULL_NAME = app.TARGET_GROUP_FULL_NAME
AUTO_SCALING_GROUP_NAME = app.AUTO_SCALING_GROUP

ALARM_EMAIL = OperatorParameter(
    Parameter(
        "AlarmEmail",
        Type="String",
        Default="",
        AllowedPattern=r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$",
        ConstraintDescription="Empty, or an e-mail address.",
        Description="Address for alarm notifications (confirm AWS's subscription e-mail). Empty: alarms still go "
        "to the AlarmTopicArn topic.",
    ),
    label="Alarm e-mail",
    group=GROUP_MONITORING,
)
DATABASE_CONNECTIONS_ALARM = number_parameter(
    "DatabaseConnectionsAlarm",
    1000,
    10,
    100000,
    "Alarm when the database has more connections than this (db.r7g.large allows 1,510 by Aurora's default).",
    label="Database connections alarm",
    group=GROUP_MONITORING,
)
PARAMETERS = (ALARM_EMAIL, DATABASE_CONNECTIONS_ALARM)

INPUTS = tuple(
    output_as_parameter(name)
    for name in (
        LOAD_BALANCER_FULL_NAME,
        TARGET_GROUP_FULL_NAME,
        AUTO_SCALING_GROUP_NAME,
        database.DATABASE_CLUSTER_ID,
        FILE_SYSTEM_ID,
        *(role.output("Id") for role in cache.ROLES),
    )
)
NAT_GATEWAYS = network.as_parameter(network.NAT_GATEWAY_IDS)
# The NAT gateways watched: the stack's own, which exist only when it created the VPC (an existing VPC's
# routing is its owner's). Spelled out with Equals rather than Condition references, as in the network layer.
NAT_ALARM_CONDITIONS = {1: "OwnNatGateway1", 2: "OwnNatGateway2", 3: "OwnNatGateway3"}


def add_nat_alarm_conditions(template: Template) -> None:
    """Which NAT gateways have alarms: those the network layer creates (`nat.nat_condition`), none in an
    existing VPC."""
    creates_vpc = Equals(Ref(existing_vpc.EXISTING_VPC_ID.parameter), "")
    per_az = Equals(Ref(nat.NAT_GATEWAY_MODE.parameter), "per-az")
    template.add_condition(NAT_ALARM_CONDITIONS[1], creates_vpc)
    template.add_condition(NAT_ALARM_CONDITIONS[2], And(creates_vpc, per_az))
    template.add_condition(NAT_ALARM_CONDITIONS[3], And(creates_vpc, per_az, three_azs()))


def dimensions(**values: object) -> list[MetricDimension]:
    """CloudWatch dimensions from keyword arguments."""
    return [MetricDimension(Name=name, Value=value) for name, value in values.items()]


def alarm(
    title: str,
    description: str,
    topic: Topic,
    threshold: object,
    comparison: str,
    *,
    metric: tuple[str, str, list[MetricDimension]] | None = None,
    statistic: str = "Average",
    queries: list[MetricDataQuery] | None = None,
    periods: int = 3,
    condition: str | None = None,
) -> Alarm:
    """An alarm on one metric or on a metric-math expression, notifying the topic when it fires and clears."""
    extra: dict[str, object] = {}
    if metric is not None:
        namespace, name, dims = metric
        extra.update(Namespace=namespace, MetricName=name, Dimensions=dims, Period=FIVE_MINUTES)
        if statistic.startswith("p"):
            extra["ExtendedStatistic"] = statistic
        else:
            extra["Statistic"] = statistic
    else:
        extra["Metrics"] = queries
    resource = Alarm(
        title,
        AlarmDescription=Sub(f"${{{SITE_NAME.name}}}: {description}"),
        Threshold=threshold,
        ComparisonOperator=comparison,
        EvaluationPeriods=periods,
        DatapointsToAlarm=periods,
        TreatMissingData="notBreaching",
        AlarmActions=[Ref(topic)],
        OKActions=[Ref(topic)],
        **extra,
    )
    if condition:
        resource.Condition = condition
    return resource


def stat(
    query_id: str, namespace: str, name: str, dims: list[MetricDimension], statistic: str
) -> MetricDataQuery:
    """One metric inside a metric-math alarm (not returned itself)."""
    return MetricDataQuery(
        Id=query_id,
        ReturnData=False,
        MetricStat=MetricStat(
            Metric=Metric(Namespace=namespace, MetricName=name, Dimensions=dims),
            Period=FIVE_MINUTES,
            Stat=statistic,
        ),
    )


def expression(text: str, label: str) -> MetricDataQuery:
    """The returned metric-math expression of an alarm."""
    return MetricDataQuery(Id="result", Expression=text, Label=label, ReturnData=True)


def load_balancer_alarms(topic: Topic) -> list[Alarm]:
    """5xx rate, slow answers, unhealthy nodes, and the group at its ceiling."""
    balancer = dimensions(LoadBalancer=Ref(LOAD_BALANCER_FULL_NAME))
    counts = [
        stat("elb5xx", "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", balancer, "Sum"),
        stat("target5xx", "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", balancer, "Sum"),
        stat("requests", "AWS/ApplicationELB", "RequestCount", balancer, "Sum"),
    ]
    rate = expression("IF(requests > 0, 100 * (FILL(elb5xx, 0) + FILL(target5xx, 0)) / requests, 0)", "5xx %")
    return [
        alarm("LoadBalancer5xxRate", "more than 5% of requests answered 5xx", topic, 5, "GreaterThanThreshold",
              queries=[*counts, rate], periods=2),
        alarm("TargetResponseTime", "95th percentile response time above 3 s", topic, 3, "GreaterThanThreshold",
              metric=("AWS/ApplicationELB", "TargetResponseTime", balancer), statistic="p95"),
        alarm("UnhealthyWebNodes", "a web node fails its health check", topic, 1, "GreaterThanOrEqualToThreshold",
              metric=("AWS/ApplicationELB", "UnHealthyHostCount",
                      dimensions(TargetGroup=Ref(TARGET_GROUP_FULL_NAME), LoadBalancer=Ref(LOAD_BALANCER_FULL_NAME))),
              statistic="Maximum", periods=2),
        alarm("WebGroupAtMaximum", "the web group has been at WebMaxSize for 15 minutes", topic,
              Ref(auto_scaling.WEB_MAX_SIZE.parameter), "GreaterThanOrEqualToThreshold",
              metric=("AWS/AutoScaling", "GroupInServiceInstances", dimensions(AutoScalingGroupName=Ref(AUTO_SCALING_GROUP_NAME))),
              statistic="Minimum"),
    ]  # fmt: skip


def database_alarms(topic: Topic) -> list[Alarm]:
    """CPU, memory, connections and replica lag of the cluster, capacity in Serverless v2."""
    cluster = dimensions(DBClusterIdentifier=Ref(output_as_parameter(database.DATABASE_CLUSTER_ID)))
    return [
        alarm("DatabaseCpu", "database CPU above 80%", topic, 80, "GreaterThanThreshold",
              metric=("AWS/RDS", "CPUUtilization", cluster)),
        alarm("DatabaseFreeableMemory", "database freeable memory below 512 MiB", topic, 512 * MIB, "LessThanThreshold",
              metric=("AWS/RDS", "FreeableMemory", cluster), statistic="Minimum"),
        alarm("DatabaseConnections", "database connections above DatabaseConnectionsAlarm", topic,
              Ref(DATABASE_CONNECTIONS_ALARM.parameter), "GreaterThanThreshold",
              metric=("AWS/RDS", "DatabaseConnections", cluster), statistic="Maximum"),
        alarm("DatabaseReplicaLag", "the reader lags the writer by more than 2 s", topic, 2000, "GreaterThanThreshold",
              metric=("AWS/RDS", "AuroraReplicaLagMaximum", cluster), statistic="Maximum"),
        alarm("DatabaseCapacity", "Serverless v2 capacity above 90% of DatabaseMaxCapacity", topic, 90,
              "GreaterThanThreshold", metric=("AWS/RDS", "ACUUtilization", cluster),
              condition=database.IS_SERVERLESS),
    ]  # fmt: skip


# (metric, statistic, threshold, comparison, what) per engine; each alarm takes the worst node.
CACHE_ALARMS = {
    "memcached": (
        ("CPUUtilization", "Maximum", 80, "GreaterThanThreshold", "CPU above 80% on a node"),
        (
            "Evictions",
            "Sum",
            1000,
            "GreaterThanThreshold",
            "more than 1,000 evictions in 5 minutes on a node",
        ),
        ("SwapUsage", "Maximum", 50 * MIB, "GreaterThanThreshold", "a node swapping (over 50 MiB)"),
    ),
    "valkey": (
        ("EngineCPUUtilization", "Maximum", 80, "GreaterThanThreshold", "engine CPU above 80% on a node"),
        (
            "Evictions",
            "Sum",
            1000,
            "GreaterThanThreshold",
            "more than 1,000 evictions in 5 minutes on a node",
        ),
        (
            "DatabaseMemoryUsagePercentage",
            "Maximum",
            85,
            "GreaterThanThreshold",
            "memory above 85% on a node",
        ),
    ),
}


def cache_node_dimensions(engine: str, cluster_id: Parameter, node: int) -> list[MetricDimension]:
    """Dimensions of one node: memcached nodes are 0001.. of the cluster; valkey nodes are member clusters
    <group>-001.. each with node 0001."""
    if engine == "memcached":
        return dimensions(CacheClusterId=Ref(cluster_id), CacheNodeId=f"{node:04d}")
    return dimensions(CacheClusterId=Sub(f"${{Group}}-{node:03d}", Group=Ref(cluster_id)), CacheNodeId="0001")


def cache_alarms(topic: Topic) -> list[Alarm]:
    """For each cluster, the alarms of the engine it runs."""
    alarms = []
    for role in cache.ROLES:
        cluster_id = output_as_parameter(role.output("Id"))
        for engine, specs in CACHE_ALARMS.items():
            condition = role.is_valkey if engine == "valkey" else role.is_memcached
            for metric, statistic, threshold, comparison, what in specs:
                nodes = [
                    stat(
                        f"node{n}",
                        "AWS/ElastiCache",
                        metric,
                        cache_node_dimensions(engine, cluster_id, n),
                        statistic,
                    )
                    for n in range(1, MAX_CACHE_NODES + 1)
                ]
                alarms.append(
                    alarm(f"{role.key}{engine.capitalize()}{metric}", f"{role.purpose} cache: {what}", topic, threshold, comparison,
                          queries=[*nodes, expression("MAX(METRICS())", f"worst node {metric}")], condition=condition)
                )  # fmt: skip
    return alarms


def network_alarms(topic: Topic) -> list[Alarm]:
    """File system I/O limit, and each NAT gateway in use dropping packets or out of ports."""
    alarms = [
        alarm("FileSystemIoLimit", "moodledata at more than 95% of its I/O limit", topic, 95, "GreaterThanThreshold",
              metric=("AWS/EFS", "PercentIOLimit", dimensions(FileSystemId=Ref(output_as_parameter(FILE_SYSTEM_ID)))),
              statistic="Maximum"),
    ]  # fmt: skip
    for slot in AZ_SLOTS:
        gateway = dimensions(NatGatewayId=Select(slot - 1, Ref(NAT_GATEWAYS)))
        condition = NAT_ALARM_CONDITIONS[slot]
        alarms += [
            alarm(f"NatGateway{slot}PortAllocationErrors", f"NAT gateway {slot} cannot allocate source ports", topic,
                  0, "GreaterThanThreshold", metric=("AWS/NATGateway", "ErrorPortAllocation", gateway), statistic="Sum",
                  periods=1, condition=condition),
            alarm(f"NatGateway{slot}DroppedPackets", f"NAT gateway {slot} drops packets", topic, 100,
                  "GreaterThanThreshold", metric=("AWS/NATGateway", "PacketsDropCount", gateway), statistic="Sum",
                  periods=2, condition=condition),
        ]  # fmt: skip
    return alarms


def dashboard_body() -> Sub:
    """The dashboard: requests and errors, latency, nodes, database, file system, caches."""

    def widget(
        title: str, metrics: list[list[object]], x: int, y: int, stat_: str = "Average"
    ) -> dict[str, object]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": "${AWS::Region}",
                "stat": stat_,
                "period": 300,
                "metrics": metrics,
            },
        }

    lb = ["LoadBalancer", "${LoadBalancerFullName}"]
    widgets = [
        widget("Requests and 5xx", [["AWS/ApplicationELB", "RequestCount", *lb],
                                    [".", "HTTPCode_Target_5XX_Count", *lb], [".", "HTTPCode_ELB_5XX_Count", *lb]], 0, 0, "Sum"),
        widget("Response time (p95)", [["AWS/ApplicationELB", "TargetResponseTime", *lb]], 12, 0, "p95"),
        widget("Web nodes", [["AWS/AutoScaling", "GroupInServiceInstances", "AutoScalingGroupName", "${AutoScalingGroupName}"],
                             [".", "GroupDesiredCapacity", ".", "."]], 0, 6),
        widget("Database", [["AWS/RDS", "CPUUtilization", "DBClusterIdentifier", "${DatabaseClusterId}"],
                            [".", "DatabaseConnections", ".", "."]], 12, 6),
        widget("moodledata I/O", [["AWS/EFS", "PercentIOLimit", "FileSystemId", "${FileSystemId}"],
                                  [".", "MeteredIOBytes", ".", "."]], 0, 12),
        widget("Database replica lag (ms)", [["AWS/RDS", "AuroraReplicaLagMaximum", "DBClusterIdentifier", "${DatabaseClusterId}"]], 12, 12, "Maximum"),
    ]  # fmt: skip
    # The release the site runs, as its web nodes publish it (a text widget cannot read the value itself).
    parameter = "moodle-cfn/${SiteName}/moodle-release"
    console = "https://${AWS::Region}.console.aws.amazon.com/systems-manager/parameters"
    widgets.append({
        "type": "text", "x": 0, "y": 18, "width": 24, "height": 2,
        "properties": {"markdown": f"**Moodle release**: the SSM parameter [/{parameter}]({console}/{parameter}/"
                       "description?region=${AWS::Region}), written by the node that installs or upgrades Moodle."},
    })  # fmt: skip
    widgets += moodle_metrics.widgets(top=20)
    return Sub(json.dumps({"widgets": widgets}, sort_keys=True))


def build() -> Template:
    """The monitoring nested template."""
    template = Template(
        Description="moodle-cfn monitoring: alarm topic, CloudWatch alarms on every tier, dashboard"
    )
    declare_parameters(
        template,
        (
            SITE_NAME,
            AVAILABILITY_ZONE_COUNT,
            nat.NAT_GATEWAY_MODE,
            existing_vpc.EXISTING_VPC_ID,
            database.DATABASE_CAPACITY_MODE,
            auto_scaling.WEB_MAX_SIZE,
            *(role.engine for role in cache.ROLES),
            DATA_KMS_KEY_ARN,
            *PARAMETERS,
        ),
    )
    for parameter in (*INPUTS, NAT_GATEWAYS):
        template.add_parameter(parameter)
    add_nat_alarm_conditions(template)
    database.add_conditions(template)
    cache.add_conditions(template)  # with the customer-key condition
    template.add_condition(HAS_ALARM_EMAIL, Not(Equals(Ref(ALARM_EMAIL.parameter), "")))

    topic = template.add_resource(
        Topic(
            "AlarmTopic",
            DisplayName=Sub(f"Moodle ${{{SITE_NAME.name}}} alarms"),
            KmsMasterKeyId=If(HAS_DATA_KMS_KEY, Ref(DATA_KMS_KEY_ARN.parameter), NoValue),
            Metadata=checkov_skips(
                CKV_AWS_26="CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed SNS key; "
                "the topic uses DataKmsKeyArn when given (its key policy must allow CloudWatch), and alarm "
                "messages carry metric names and values, nothing from the site.",
            ),
        )
    )
    template.add_resource(
        SubscriptionResource(
            "AlarmEmailSubscription",
            Condition=HAS_ALARM_EMAIL,
            TopicArn=Ref(topic),
            Protocol="email",
            Endpoint=Ref(ALARM_EMAIL.parameter),
        )
    )
    for resource in (
        *load_balancer_alarms(topic),
        *database_alarms(topic),
        *cache_alarms(topic),
        *network_alarms(topic),
        *moodle_metrics.alarms(topic),
    ):
        template.add_resource(resource)
    dashboard = template.add_resource(
        Dashboard(
            "Dashboard", DashboardName=Sub(f"${{{SITE_NAME.name}}}-moodle"), DashboardBody=dashboard_body()
        )
    )
    template.add_output(
        Output("AlarmTopicArn", Description="SNS topic every alarm notifies", Value=Ref(topic))
    )
    template.add_output(
        Output("DashboardName", Description="CloudWatch dashboard of the site", Value=Ref(dashboard))
    )
    return template
