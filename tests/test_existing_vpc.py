"""Deploying into an existing VPC: the master's condition, Fn::Ifs and Rules, the stand-in security stack,
what `validate` refuses (one line each), the monitoring layer's NAT alarms and the cost's NAT line.

The deploy itself, with no network stack, is rehearsed in moto by tests/test_rehearsal_existing_vpc.py.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import yaml

from moodle_cfn import cost, deploy, master, rules
from moodle_cfn.errors import InputError
from moodle_cfn.layers import LAYERS, address_plan, existing_vpc, monitoring, security_groups
from moodle_cfn.rules import effective_values
from tests.cfn_eval import active_resources, evaluate_conditions, of_type, resolve_ifs
from tests.conftest import PARAMS_DIR
from tests.test_cost import HOURS_100, PRICES, SITE, by_name
from tests.test_validate_like_aws import error_of
from tests.variants import DOMAIN, REGIONAL_CERTIFICATE

EXISTING = {
    "ExistingVpcId": "vpc-0a1b2c3d4e5f60718",
    "ExistingPublicSubnetIds": "subnet-0a1b2c3d4e5f60001,subnet-0a1b2c3d4e5f60002",
    "ExistingAppSubnetIds": "subnet-0a1b2c3d4e5f60011,subnet-0a1b2c3d4e5f60012",
    "ExistingDataSubnetIds": "subnet-0a1b2c3d4e5f60021,subnet-0a1b2c3d4e5f60022",
    "ExistingAvailabilityZoneNames": "eu-west-1a,eu-west-1b",
}


def stack_references(value: Any) -> set[str]:
    """Every logical id that `value` refers to with GetAtt (or a Ref to a resource-like title)."""
    text = json.dumps(value)
    return {title for layer in LAYERS if (title := layer.stack_title) in text}


def test_the_network_stack_exists_only_without_an_existing_vpc(master_template):
    default = active_resources(master_template, {})
    existing = active_resources(master_template, EXISTING)
    assert "NetworkStack" in default and "SecurityStack" not in default
    assert "SecurityStack" in existing and "NetworkStack" not in existing
    # Nothing that exists refers to the stack that does not, in either mode (resources and outputs).
    conditions = evaluate_conditions(master_template, EXISTING)
    outputs = resolve_ifs(master_template["Outputs"], conditions)
    assert "NetworkStack" not in stack_references([existing, outputs])
    default_outputs = resolve_ifs(master_template["Outputs"], evaluate_conditions(master_template, {}))
    assert "SecurityStack" not in stack_references([default, default_outputs])


def test_every_layer_receives_the_existing_ids_by_the_network_outputs_names(master_template):
    existing = active_resources(master_template, EXISTING)
    received = {
        name: value
        for title in ("DataStack", "CacheStack", "AppStack", "MonitoringStack")
        for name, value in existing[title]["Properties"]["Parameters"].items()
    }
    assert received["VpcId"] == {"Ref": "ExistingVpcId"}
    for tier in address_plan.TIERS:
        expected = {"Fn::Join": [",", {"Ref": f"Existing{tier.key}SubnetIds"}]}
        assert received[tier.ids_output] == expected
    assert received["AvailabilityZoneNames"] == {"Fn::Join": [",", {"Ref": "ExistingAvailabilityZoneNames"}]}
    for group in security_groups.SECURITY_GROUPS:
        if group.id_output in received:
            assert received[group.id_output] == {
                "Fn::GetAtt": ["SecurityStack", f"Outputs.{group.id_output}"]
            }
    assert received["NatGatewayIds"] == ""
    # With no existing VPC, exactly what the network stack outputs.
    default = active_resources(master_template, {})
    assert default["DataStack"]["Properties"]["Parameters"]["DataSubnetIds"] == {
        "Fn::GetAtt": ["NetworkStack", "Outputs.DataSubnetIds"]
    }


def test_the_security_stack_builds_the_network_layers_groups_in_the_existing_vpc(network_template):
    security = existing_vpc.build().to_dict()
    kinds = ("AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress")

    def groups(template: dict[str, Any], vpc: dict[str, str]) -> dict[str, Any]:
        copied = json.loads(json.dumps(template["Resources"]))  # the fixture is shared: never edit it
        found = {n: r for n, r in copied.items() if r["Type"] in kinds}
        for resource in found.values():
            if resource["Properties"].get("VpcId") is not None:
                assert resource["Properties"]["VpcId"] == vpc
                resource["Properties"]["VpcId"] = "the VPC"
        return found

    assert groups(security, {"Ref": "ExistingVpcId"}) == groups(network_template, {"Ref": "Vpc"})
    assert set(security["Resources"]) == set(groups(security, {"Ref": "ExistingVpcId"}))
    assert {name: spec["Type"] for name, spec in security["Parameters"].items() if name != "SiteName"} == {
        "ExistingVpcId": "AWS::EC2::VPC::Id",
        "ExistingPublicSubnetIds": "List<AWS::EC2::Subnet::Id>",
        "ExistingAppSubnetIds": "List<AWS::EC2::Subnet::Id>",
        "ExistingDataSubnetIds": "List<AWS::EC2::Subnet::Id>",
        "ExistingAvailabilityZoneNames": "List<AWS::EC2::AvailabilityZone::Name>",
    }
    assert set(security["Outputs"]) == {g.id_output for g in security_groups.SECURITY_GROUPS}


RULE_CASES = {
    "vpc without subnets": ({"ExistingVpcId": EXISTING["ExistingVpcId"]}, "ExistingVpcNeedsItsSubnets", "ExistingPublicSubnetIds is empty"),
    "vpc without data subnets": ({**EXISTING, "ExistingDataSubnetIds": ""}, "ExistingVpcNeedsItsSubnets", "ExistingDataSubnetIds is empty"),
    "vpc without zones": ({**EXISTING, "ExistingAvailabilityZoneNames": ""}, "ExistingVpcNeedsItsSubnets", "ExistingAvailabilityZoneNames is empty"),
    "subnets without vpc": ({**EXISTING, "ExistingVpcId": ""}, "ExistingSubnetsNeedExistingVpc", "ExistingPublicSubnetIds applies only with ExistingVpcId: give the VPC id"),
    "one list without vpc": ({"ExistingAppSubnetIds": EXISTING["ExistingAppSubnetIds"]}, "ExistingSubnetsNeedExistingVpc", "ExistingAppSubnetIds applies only"),
}  # fmt: skip


@pytest.mark.parametrize(("given", "rule", "reason"), list(RULE_CASES.values()), ids=list(RULE_CASES))
def test_rules_want_all_of_the_existing_ids_or_none(master_template, given, rule, reason):
    with pytest.raises(InputError, match=re.escape(f"rule {rule}: {reason}")):
        rules.check_rules(master_template, {"TemplatesBucketName": "b", **given}, "p.yaml")


def test_rules_accept_a_complete_existing_vpc_and_none(master_template):
    rules.check_rules(master_template, {"TemplatesBucketName": "b", **EXISTING}, "p.yaml")
    rules.check_rules(master_template, {"TemplatesBucketName": "b"}, "p.yaml")


def existing_vpc_file(tmp_path, **edits: Any) -> str:
    """params/existing-vpc.yaml as a development copy (no production placeholders check), with `edits`."""
    document = yaml.safe_load((PARAMS_DIR / "existing-vpc.yaml").read_text())
    document.update(Environment="development", **edits)
    path = tmp_path / "campus.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


SUBNETS = ["subnet-0a1b2c3d4e5f60011", "subnet-0a1b2c3d4e5f60012", "subnet-0a1b2c3d4e5f60013"]
VALIDATE_CASES = {
    "fewer subnets than AZs": (
        {"ExistingAppSubnetIds": SUBNETS[:2]},
        "ExistingAppSubnetIds: has 2 item(s); AvailabilityZoneCount is 3: give one per Availability Zone",
    ),
    "more subnets than AZs": (
        {"AvailabilityZoneCount": "2"},
        "ExistingPublicSubnetIds: has 3 item(s); AvailabilityZoneCount is 2: give one per Availability Zone",
    ),
    "not a subnet id": (
        {"ExistingDataSubnetIds": ["subnet-0a1b2c3d4e5f60021", "sg-0a1b2c3d4e5f60022", "subnet-0a1b2c3d4e5f60023"]},
        "ExistingDataSubnetIds: 'sg-0a1b2c3d4e5f60022' is not a subnet id",
    ),
    "not a zone": (
        {"ExistingAvailabilityZoneNames": ["eu-west-1a", "eu-west-1", "eu-west-1c"]},
        "ExistingAvailabilityZoneNames: 'eu-west-1' is not an Availability Zone name",
    ),
    "a subnet in two tiers": (
        {"ExistingDataSubnetIds": [SUBNETS[0], "subnet-0a1b2c3d4e5f60022", "subnet-0a1b2c3d4e5f60023"]},
        "ExistingDataSubnetIds: subnet-0a1b2c3d4e5f60011 is also in ExistingAppSubnetIds: one subnet per tier and AZ",
    ),
    "public repeats app without CloudFront": (
        {"ExistingPublicSubnetIds": SUBNETS, "EnableCloudFront": "false", "DomainName": DOMAIN,
         "CertificateArn": REGIONAL_CERTIFICATE},
        "ExistingAppSubnetIds: subnet-0a1b2c3d4e5f60011 is also in ExistingPublicSubnetIds: one subnet per tier and AZ",
    ),
    "a bad vpc id": ({"ExistingVpcId": "vpc-123"}, "ExistingVpcId: 'vpc-123' is not valid: Empty, or a VPC id"),
}  # fmt: skip


@pytest.mark.parametrize(("edits", "line"), list(VALIDATE_CASES.values()), ids=list(VALIDATE_CASES))
def test_validate_refuses_existing_ids_that_cannot_work_in_one_line(tmp_path, capsys, edits, line):
    path = existing_vpc_file(tmp_path, **edits)
    assert error_of(["validate", path], capsys).startswith(f"{path}: {line}")


def test_a_vpc_without_public_subnets_repeats_the_app_subnets_behind_cloudfront(tmp_path, capsys):
    from moodle_cfn.cli import main

    assert main(["validate", existing_vpc_file(tmp_path, ExistingPublicSubnetIds=SUBNETS)]) == 0
    assert main(["validate", existing_vpc_file(tmp_path)]) == 0


def test_no_nat_alarms_for_a_vpc_the_stack_does_not_own():
    template = monitoring.build().to_dict()
    nat = {"NatGatewayMode": "per-az", "AvailabilityZoneCount": "3"}
    owned = of_type(active_resources(template, nat), "AWS::CloudWatch::Alarm")
    assert len([name for name in owned if name.startswith("NatGateway")]) == 6
    existing = of_type(active_resources(template, {**nat, **EXISTING}), "AWS::CloudWatch::Alarm")
    assert not [name for name in existing if name.startswith("NatGateway")]
    assert len(owned) - len(existing) == 6


def test_the_cost_has_no_nat_gateway_in_an_existing_vpc():
    lines = by_name(cost.network({**SITE, "ExistingVpcId": EXISTING["ExistingVpcId"]}, PRICES, HOURS_100))
    assert lines["NAT gateways"].monthly == 0
    assert "ExistingVpcId" in lines["NAT gateways"].assumes
    assert lines["Load balancer"].monthly == 3.0  # unchanged
    defaults = effective_values(master.build().to_dict()["Parameters"], {"AWS::Region": "us-east-1"})
    alarms = cost.count_resources("AWS::CloudWatch::Alarm", defaults)
    in_existing = cost.count_resources("AWS::CloudWatch::Alarm", {**defaults, **EXISTING})
    assert alarms - in_existing == 4  # two NAT gateways (per-az, 2 AZs) x 2 alarms


def test_the_shipped_existing_vpc_file_deploys_no_network_of_its_own(master_template):
    from moodle_cfn import params
    from moodle_cfn.layers import all_checks, all_expanders

    values = params.load(PARAMS_DIR / "existing-vpc.yaml", master_template, all_checks(), all_expanders())
    assert values["ExistingVpcId"].startswith("vpc-")
    assert len(values["ExistingAppSubnetIds"].split(",")) == int(values["AvailabilityZoneCount"]) == 3
    assert not {"VpcCidr", "NatGatewayMode", "FlowLogRetentionDays"} & set(values)
    created = active_resources(master_template, values)
    assert "NetworkStack" not in created and "SecurityStack" in created


def test_the_security_stack_checks_each_subnet_is_in_the_vpc_and_a_listed_zone():
    # Fn::ValueOf needs the account, so only CloudFormation evaluates these (rules.py leaves them alone);
    # here: one rule per subnet list, asserting both attributes against the right parameters.
    security = existing_vpc.build().to_dict()
    for tier in address_plan.TIERS:
        name = f"Existing{tier.key}SubnetIds"
        rule = security["Rules"][f"{name}InTheVpc"]
        (vpc, zones) = (a["Assert"] for a in rule["Assertions"])
        assert vpc == {"Fn::EachMemberEquals": [{"Fn::ValueOf": [name, "VpcId"]}, {"Ref": "ExistingVpcId"}]}
        assert zones == {
            "Fn::EachMemberIn": [
                {"Fn::ValueOf": [name, "AvailabilityZone"]},
                {"Ref": "ExistingAvailabilityZoneNames"},
            ]
        }
    assert len(security["Rules"]) == 3


class SwitchingSite:
    """A deployed site whose change set removes its network stack: ExistingVpcId given after a first deploy
    without it (the stand-in records the calls run_deploy makes; the change set is what CloudFormation
    would list at the root for that switch)."""

    stack = "moodle"
    creating = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    def prepare(self) -> list[str]:
        return []

    def change_set(self, *args: Any) -> tuple[str, list[deploy.Change]]:
        nested = "AWS::CloudFormation::Stack"
        return "change-set-1", [
            deploy.Change(deploy.ROOT_LABEL, "Remove", "NetworkStack", nested, "", ""),
            deploy.Change(deploy.ROOT_LABEL, "Add", "SecurityStack", nested, "", ""),
            deploy.Change(
                "DataStack", "Modify", "DatabaseSubnetGroup", "AWS::RDS::DBSubnetGroup", "False", ""
            ),
        ]

    def call(self, method: str, **kwargs: Any) -> None:
        self.calls.append(method)


def test_deploy_refuses_to_switch_a_running_site_to_another_network():
    site, out = SwitchingSite(), io.StringIO()
    code = deploy.run_deploy(
        site, "https://b.s3.amazonaws.com/master.yaml", {}, deploy.DeployOptions(assume_yes=True), out
    )
    assert code == deploy.EXIT_REFUSED
    assert site.calls == ["delete_change_set"]  # never executed
    assert (
        "refused: this change removes NetworkStack: ExistingVpcId changed since the first deploy"
        in out.getvalue()
    )
    # A first deploy adds stacks and removes none: not refused by this.
    adding = [c for c in SwitchingSite().change_set()[1] if c.action != "Remove"]
    assert deploy.removed_layers(adding) == []
