"""The master template: console form, Rules, nested-stack wiring and size limits."""

from __future__ import annotations

import itertools

import pytest

from moodle_cfn import master, rules
from moodle_cfn.azs import AZ_SLOTS
from moodle_cfn.common import GROUP_SITE, GROUP_TEMPLATES
from moodle_cfn.errors import InputError
from moodle_cfn.layers import LAYERS, network
from tests.conftest import TEMPLATES_DIR

CLOUDFORMATION_DIRECT_BODY_LIMIT = 51_200
SUBNET_CIDRS = [tier.cidr_parameter(slot).name for tier in network.TIERS for slot in AZ_SLOTS]


def test_master_fits_the_direct_template_body_limit():
    assert (TEMPLATES_DIR / "master.yaml").stat().st_size < CLOUDFORMATION_DIRECT_BODY_LIMIT


def test_every_parameter_has_a_label_and_exactly_one_group(master_template):
    interface = master_template["Metadata"]["AWS::CloudFormation::Interface"]
    grouped = [name for group in interface["ParameterGroups"] for name in group["Parameters"]]
    assert sorted(grouped) == sorted(master_template["Parameters"])
    assert len(grouped) == len(set(grouped))
    assert set(interface["ParameterLabels"]) == set(master_template["Parameters"])
    labels = [g["Label"]["default"] for g in interface["ParameterGroups"]]
    assert (labels[0], labels[-1]) == (GROUP_SITE, GROUP_TEMPLATES)


def test_every_parameter_is_described_and_constrained(master_template):
    for name, spec in master_template["Parameters"].items():
        assert len(spec.get("Description", "")) > 20, name
        if spec["Type"] == "String":
            assert "AllowedValues" in spec or "AllowedPattern" in spec, f"{name} accepts anything"


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_each_nested_stack_receives_exactly_its_childs_parameters(master_template, layer):
    child = layer.build().to_dict()
    stack = master_template["Resources"][layer.stack_title]
    passed = stack["Properties"]["Parameters"]
    assert set(passed) == set(child["Parameters"])
    for name, value in passed.items():
        if "Ref" in value:
            assert value["Ref"] == name and name in master_template["Parameters"]
        else:
            producer, attribute = value["Fn::GetAtt"]
            assert attribute == f"Outputs.{name}"
            assert LAYERS.index(layer) > [x.stack_title for x in LAYERS].index(producer)


def test_every_output_the_master_reads_exists_in_that_child(master_template):
    outputs = {layer.stack_title: set(layer.build().outputs) for layer in LAYERS}
    read = [v["Value"]["Fn::GetAtt"] for v in master_template["Outputs"].values()]
    assert read
    for stack, attribute in read:
        assert attribute.removeprefix("Outputs.") in outputs[stack]


def test_nested_template_urls_point_at_the_bucket_in_its_region(master_template):
    for layer in LAYERS:
        sub = master_template["Resources"][layer.stack_title]["Properties"]["TemplateURL"]["Fn::Sub"]
        assert sub[0].endswith("/${TemplatesKeyPrefix}" + layer.file_name)
        assert sub[0].startswith("https://${TemplatesBucketName}.s3.${BucketRegion}.${AWS::URLSuffix}/")
        assert sub[1]["BucketRegion"]["Fn::If"][0] == master.BUCKET_REGION_IS_STACK_REGION


def test_nested_stacks_state_their_deletion_policy(master_template):
    for layer in LAYERS:
        stack = master_template["Resources"][layer.stack_title]
        assert stack["DeletionPolicy"] == stack["UpdateReplacePolicy"] == "Delete"


def test_default_subnet_cidrs_satisfy_the_rules(master_template):
    rules.check_rules(master_template, {"TemplatesBucketName": "b"}, "defaults")


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(SUBNET_CIDRS, 2)))
def test_any_two_equal_subnet_cidrs_break_the_rule(master_template, first, second):
    given = {first: "10.9.9.0/24", second: "10.9.9.0/24"}
    with pytest.raises(InputError, match="rule DistinctSubnetCidrs"):
        rules.check_rules(master_template, given, "p.yaml")


def test_the_local_rendering_differs_only_in_template_location():
    published = master.build().to_dict()
    local = master.build(master.LOCAL_LOCATION).to_dict()
    location = {p.name for p in master.LOCATION_PARAMETERS}
    assert set(published["Parameters"]) - set(local["Parameters"]) == location
    for layer in LAYERS:
        assert local["Resources"][layer.stack_title]["Properties"]["TemplateURL"] == layer.file_name
