"""Targeted properties of the network template, checked for every AZ-count / NAT-mode combination."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from moodle_cfn.azs import AZ_SLOTS
from moodle_cfn.layers import address_plan, network, security_groups
from tests.cfn_eval import active_resources, of_type

SCENARIOS = [(azs, nat) for azs in ("2", "3") for nat in ("single", "per-az")]
PUBLIC_CIDRS = {"0.0.0.0/0", "::/0"}


def az_index(subnet: dict[str, Any]) -> int:
    """Which of the region's AZs a subnet is in (the Fn::Select index over Fn::GetAZs)."""
    select = subnet["Properties"]["AvailabilityZone"]["Fn::Select"]
    assert select[1] == {"Fn::GetAZs": ""}
    return select[0]


def ref(value: dict[str, Any]) -> str:
    """The logical id a {"Ref": ...} points at."""
    return value["Ref"]


def route_table_of(resources: dict[str, dict[str, Any]], subnet: str) -> str:
    """The route table a subnet is associated with (exactly one)."""
    tables = [
        ref(a["Properties"]["RouteTableId"])
        for a in of_type(resources, "AWS::EC2::SubnetRouteTableAssociation").values()
        if a["Properties"]["SubnetId"] == {"Ref": subnet}
    ]
    assert len(tables) == 1, f"{subnet} has {len(tables)} route table associations"
    return tables[0]


def default_routes(resources: dict[str, dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """The 0.0.0.0/0 routes of a route table."""
    return [
        r["Properties"]
        for r in of_type(resources, "AWS::EC2::Route").values()
        if r["Properties"]["RouteTableId"] == {"Ref": table}
        and r["Properties"]["DestinationCidrBlock"] == "0.0.0.0/0"
    ]


@pytest.mark.parametrize(("azs", "nat_mode"), SCENARIOS)
def test_each_tier_has_one_subnet_per_az_in_distinct_azs(network_template, azs, nat_mode):
    resources = active_resources(network_template, {"AvailabilityZoneCount": azs, "NatGatewayMode": nat_mode})
    subnets = of_type(resources, "AWS::EC2::Subnet")
    assert len(subnets) == 3 * int(azs)
    for tier in address_plan.TIERS:
        tier_subnets = [s for name, s in subnets.items() if name.startswith(tier.key)]
        assert sorted(az_index(s) for s in tier_subnets) == list(range(int(azs)))
        assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in tier_subnets)


@pytest.mark.parametrize(("azs", "nat_mode"), SCENARIOS)
def test_nat_gateways_per_mode_and_app_subnets_route_through_their_own_az(network_template, azs, nat_mode):
    resources = active_resources(network_template, {"AvailabilityZoneCount": azs, "NatGatewayMode": nat_mode})
    nats = of_type(resources, "AWS::EC2::NatGateway")
    assert len(nats) == (int(azs) if nat_mode == "per-az" else 1)
    assert len(of_type(resources, "AWS::EC2::EIP")) == len(nats)
    for name, nat in nats.items():
        assert ref(nat["Properties"]["SubnetId"]).startswith("PublicSubnet"), name

    for slot in range(1, int(azs) + 1):
        app_subnet = f"AppSubnet{slot}"
        routes = default_routes(resources, route_table_of(resources, app_subnet))
        assert len(routes) == 1
        nat = resources[ref(routes[0]["NatGatewayId"])]
        nat_az = az_index(resources[ref(nat["Properties"]["SubnetId"])])
        if nat_mode == "per-az":
            assert nat_az == az_index(resources[app_subnet]), f"{app_subnet} leaves its AZ for NAT"
        else:
            assert nat_az == 0


@pytest.mark.parametrize(("azs", "nat_mode"), SCENARIOS)
def test_public_subnets_route_to_the_internet_gateway_and_data_subnets_nowhere(
    network_template, azs, nat_mode
):
    resources = active_resources(network_template, {"AvailabilityZoneCount": azs, "NatGatewayMode": nat_mode})
    for slot in range(1, int(azs) + 1):
        public_routes = default_routes(resources, route_table_of(resources, f"PublicSubnet{slot}"))
        assert [r["GatewayId"] for r in public_routes] == [{"Ref": "InternetGateway"}]
        assert default_routes(resources, route_table_of(resources, f"DataSubnet{slot}")) == []


@pytest.mark.parametrize(("azs", "nat_mode"), SCENARIOS)
def test_s3_endpoint_serves_every_private_route_table(network_template, azs, nat_mode):
    resources = active_resources(network_template, {"AvailabilityZoneCount": azs, "NatGatewayMode": nat_mode})
    endpoint = resources["S3GatewayEndpoint"]["Properties"]
    private_tables = {
        route_table_of(resources, f"{tier}Subnet{slot}")
        for tier in ("App", "Data")
        for slot in range(1, int(azs) + 1)
    }
    assert {ref(t) for t in endpoint["RouteTableIds"]} == private_tables
    assert endpoint["VpcEndpointType"] == "Gateway"


def all_ingress(template: dict[str, Any]) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(destination group, source, port, rule) for inline and standalone ingress rules."""
    rules = []
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in resource["Properties"].get("SecurityGroupIngress", []):
                rules.append((name, rule.get("CidrIp", ""), rule["FromPort"], rule))
        if resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            props = resource["Properties"]
            rules.append(
                (ref(props["GroupId"]), ref(props["SourceSecurityGroupId"]), props["FromPort"], props)
            )
    return rules


def test_nothing_is_open_to_the_internet_here(network_template):
    # Viewer or CloudFront access to the load balancer depends on app-layer choices: the app layer adds it.
    public = [
        (group, port) for group, source, port, _ in all_ingress(network_template) if source in PUBLIC_CIDRS
    ]
    assert public == []


def test_east_west_ingress_is_exactly_the_tier_policy(network_template):
    between_tiers = {
        (group, source, port)
        for group, source, port, _ in all_ingress(network_template)
        if source not in PUBLIC_CIDRS
    }
    assert between_tiers == {
        ("WebSecurityGroup", "AlbSecurityGroup", 80),
        ("DatabaseSecurityGroup", "WebSecurityGroup", 5432),
        ("DatabaseSecurityGroup", "DatabaseRoleFunctionSecurityGroup", 5432),
        ("CacheSecurityGroup", "WebSecurityGroup", 11211),
        ("CacheSecurityGroup", "WebSecurityGroup", 6379),
        ("FileSystemSecurityGroup", "WebSecurityGroup", 2049),
    }
    for *_, rule in all_ingress(network_template):
        assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"]


def test_egress_is_narrowed_per_tier(network_template):
    def egress(group: str) -> set[tuple[str, int]]:
        rules = network_template["Resources"][group]["Properties"]["SecurityGroupEgress"]
        return {(r.get("CidrIp") or ref(r["DestinationSecurityGroupId"]), r["FromPort"]) for r in rules}

    assert egress("AlbSecurityGroup") == {("WebSecurityGroup", 80)}
    assert egress("WebSecurityGroup") == {
        ("DatabaseSecurityGroup", 5432),
        ("CacheSecurityGroup", 11211),
        ("CacheSecurityGroup", 6379),
        ("FileSystemSecurityGroup", 2049),
        ("0.0.0.0/0", 443),
        ("0.0.0.0/0", 80),
        ("0.0.0.0/0", 587),
    }
    assert egress("DatabaseRoleFunctionSecurityGroup") == {
        ("DatabaseSecurityGroup", 5432),
        ("0.0.0.0/0", 443),
    }
    for data_group in ("DatabaseSecurityGroup", "CacheSecurityGroup", "FileSystemSecurityGroup"):
        assert egress(data_group) == {("127.0.0.1/32", -1)}, f"{data_group} may send traffic"


def test_every_security_group_rule_says_what_it_is_for(network_template):
    for name, resource in network_template["Resources"].items():
        props = resource["Properties"]
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in props.get("SecurityGroupIngress", []) + props["SecurityGroupEgress"]:
                assert len(rule["Description"]) > 10, name
        elif resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            assert len(props["Description"]) > 10, name


def test_flow_logs_go_to_a_retained_log_group_through_a_role_scoped_to_it(network_template):
    resources = network_template["Resources"]
    flow_log = resources["VpcFlowLog"]["Properties"]
    assert flow_log["ResourceId"] == {"Ref": "Vpc"} and flow_log["TrafficType"] == "ALL"
    assert flow_log["LogGroupName"] == {"Ref": "FlowLogGroup"}
    assert flow_log["DeliverLogsPermissionArn"] == {"Fn::GetAtt": ["FlowLogRole", "Arn"]}

    group = resources["FlowLogGroup"]
    assert group["Properties"]["RetentionInDays"] == {"Ref": "FlowLogRetentionDays"}
    # Kept, unless the create that made it rolls back (tests/test_first_create.py).
    assert (group["DeletionPolicy"], group["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")

    role = resources["FlowLogRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    write = next(s for s in statements if "logs:PutLogEvents" in s["Action"])
    assert write["Resource"] == [{"Fn::GetAtt": ["FlowLogGroup", "Arn"]}]
    # Only DescribeLogGroups on "*": it has no resource-level permissions (scoped, it never matched).
    unscoped = [s for s in statements if s["Resource"] == "*" or "*" in s["Resource"]]
    assert [s["Action"] for s in unscoped] == [["logs:DescribeLogGroups"]]


def test_outputs_cover_what_later_layers_need(network_template):
    expected = {
        network.VPC_ID,
        network.VPC_CIDR_OUTPUT,
        network.AVAILABILITY_ZONE_NAMES,
        network.NAT_GATEWAY_IDS,
        *(tier.ids_output for tier in address_plan.TIERS),
        *(group.id_output for group in security_groups.SECURITY_GROUPS),
    }
    assert set(network_template["Outputs"]) == expected


@pytest.mark.parametrize("azs", ["2", "3"])
def test_subnet_list_outputs_follow_the_az_count(network_template, azs):
    from tests.cfn_eval import evaluate_conditions, resolve_ifs

    conditions = evaluate_conditions(network_template, {"AvailabilityZoneCount": azs})
    value = resolve_ifs(network_template["Outputs"]["AppSubnetIds"]["Value"], conditions)
    assert value == {"Fn::Join": [",", [{"Ref": f"AppSubnet{slot}"} for slot in range(1, int(azs) + 1)]]}


def test_third_az_parameters_are_labelled_as_such():
    descriptions = [p.parameter.Description for p in network.PARAMETERS if p.name.endswith("3Cidr")]
    assert len(descriptions) == 3 and all("only with 3 AZs" in d for d in descriptions)


SUBNET_CIDRS = [tier.cidr_parameter(slot).name for tier in address_plan.TIERS for slot in AZ_SLOTS]


def cidr_values(**overrides: str) -> dict[str, str]:
    values = {p.name: str(p.parameter.Default) for p in network.PARAMETERS}
    return values | overrides


def test_default_cidrs_pass_the_subnet_check():
    assert address_plan.subnet_cidr_problem(cidr_values(AvailabilityZoneCount="3")) is None


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(SUBNET_CIDRS, 2)))
def test_any_two_overlapping_subnets_are_named(first, second):
    values = cidr_values(AvailabilityZoneCount="3", **{first: "10.0.200.0/24", second: "10.0.200.128/25"})
    assert address_plan.subnet_cidr_problem(values) == (
        second,
        f"10.0.200.128/25 overlaps {first} (10.0.200.0/24)",
    )


def test_third_az_subnets_are_ignored_with_two_azs():
    assert address_plan.subnet_cidr_problem(cidr_values(AppSubnet3Cidr="192.168.0.0/24")) is None
    problem = address_plan.subnet_cidr_problem(
        cidr_values(AvailabilityZoneCount="3", AppSubnet3Cidr="192.168.0.0/24")
    )
    assert problem == ("AppSubnet3Cidr", "192.168.0.0/24 is not inside VpcCidr 10.0.0.0/16")


def test_host_bits_are_refused():
    assert address_plan.subnet_cidr_problem(cidr_values(PublicSubnet1Cidr="10.0.0.5/24")) == (
        "PublicSubnet1Cidr",
        "10.0.0.5/24 has host bits set; the block is 10.0.0.0/24",
    )
