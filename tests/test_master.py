"""The master template: console form, Rules, nested-stack wiring and size limits."""

from __future__ import annotations

import pytest

from moodle_cfn import master, rules
from moodle_cfn.common import GROUP_SITE, GROUP_TEMPLATES
from moodle_cfn.errors import InputError
from moodle_cfn.layers import LAYERS, existing_vpc
from tests.conftest import TEMPLATES_DIR

# "Template body size in an Amazon S3 object: 1 MB" (AWS CloudFormation quotas,
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html), for a
# CreateStack/UpdateStack/CreateChangeSet request with a TemplateURL. The API reference still gives 460,800
# bytes for TemplateURL (ValidateTemplate, CreateStack), so the tests hold the smaller value: it holds either
# way. The 51,200-byte quota applies only to a template body passed inline, and no way of deploying this site
# passes the master inline: its nested templates must be in S3 anyway, `moodle-cfn deploy` creates its change
# set with TemplateURL (tests/test_deploy.py checks the request), the quick-create link carries templateURL,
# and the README's AWS CLI and StackSets commands use --template-url. So descriptions say what an operator
# needs; none is cut to fit the inline limit.
CLOUDFORMATION_TEMPLATE_URL_LIMIT = 460_800


@pytest.mark.parametrize("name", ["master.yaml", *(layer.file_name for layer in LAYERS)])
def test_every_template_fits_the_template_url_limit(name):
    assert (TEMPLATES_DIR / name).stat().st_size < CLOUDFORMATION_TEMPLATE_URL_LIMIT


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


# What each network output becomes in an existing VPC: the operator's id, the security stack's group, or
# nothing (the stack owns no NAT gateway there; the monitoring layer's NAT alarms are off).
EXISTING_VPC_SOURCES = {
    "VpcId": [{"Ref": "ExistingVpcId"}],
    "AvailabilityZoneNames": [{"Fn::Join": [",", {"Ref": "ExistingAvailabilityZoneNames"}]}],
    **{
        f"{t}SubnetIds": [{"Fn::Join": [",", {"Ref": f"Existing{t}SubnetIds"}]}]
        for t in ("Public", "App", "Data")
    },
    **{o: [{"Fn::GetAtt": ["SecurityStack", f"Outputs.{o}"]}] for o in existing_vpc.build().outputs},
    "NatGatewayIds": [""],
}


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_each_nested_stack_receives_exactly_its_childs_parameters(master_template, layer):
    child = layer.build().to_dict()
    stack = master_template["Resources"][layer.stack_title]
    passed = stack["Properties"]["Parameters"]
    assert set(passed) == set(child["Parameters"])
    for name, value in passed.items():
        if "Ref" in value:
            assert value["Ref"] == name and name in master_template["Parameters"]
            continue
        if "Fn::Join" in value:  # a list parameter, passed as the string a nested stack takes
            assert value == {"Fn::Join": [",", {"Ref": name}]}
            assert master_template["Parameters"][name]["Type"] == "CommaDelimitedList"
            continue
        if "Fn::If" in value:
            # A network output: the network stack's, or in an existing VPC what stands in for it.
            condition, existing, value = value["Fn::If"]
            assert condition == "UsesExistingVpc"
            assert existing in EXISTING_VPC_SOURCES[name]
        producer, attribute = value["Fn::GetAtt"]
        assert attribute == f"Outputs.{name}"
        assert LAYERS.index(layer) > [x.stack_title for x in LAYERS].index(producer)


def test_every_output_the_master_reads_exists_in_that_child(master_template):
    outputs = {layer.stack_title: set(layer.build().outputs) for layer in LAYERS}
    values = [v["Value"] for v in master_template["Outputs"].values()]
    read = [v["Fn::If"][2]["Fn::GetAtt"] if "Fn::If" in v else v["Fn::GetAtt"] for v in values]
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


RULE_CASES = {
    "certificate without domain": ({"CertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/ab-12"}, "CertificatesNeedDomain"),
    "zone without domain": ({"HostedZoneId": "Z0123456789"}, "CertificatesNeedDomain"),
    "domain without certificate": ({"DomainName": "moodle.example.edu"}, "DomainNeedsCertificate"),
    "no cloudfront without domain": ({"EnableCloudFront": "false"}, "HttpsWithoutCloudFrontNeedsDomain"),
}  # fmt: skip


def test_defaults_satisfy_the_rules(master_template):
    rules.check_rules(master_template, {"TemplatesBucketName": "bucket"}, "defaults")


@pytest.mark.parametrize(("given", "rule"), list(RULE_CASES.values()), ids=list(RULE_CASES))
def test_rules_reject_impossible_site_settings(master_template, given, rule):
    with pytest.raises(InputError, match=f"rule {rule}"):
        rules.check_rules(master_template, given, "p.yaml")


def test_cloudfront_certificate_rule_is_left_to_cloudformation_offline(master_template):
    # It depends on AWS::Region, which only CloudFormation knows; offline evaluation skips it.
    given = {"DomainName": "moodle.example.edu", "HostedZoneId": "Z0123456789"}
    rules.check_rules(master_template, given, "p.yaml")
    assert "CloudFrontCertificateInUsEast1" in master_template["Rules"]


def test_the_local_rendering_differs_only_in_template_location():
    published = master.build().to_dict()
    local = master.build(master.LOCAL_LOCATION).to_dict()
    location = {p.name for p in master.LOCATION_PARAMETERS}
    assert set(published["Parameters"]) - set(local["Parameters"]) == location
    for layer in LAYERS:
        assert local["Resources"][layer.stack_title]["Properties"]["TemplateURL"] == layer.file_name


def test_the_master_outputs_the_admin_secret_its_parameters_promise(master_template):
    # MoodleAdminEmail's description sends the operator to this output.
    assert "MoodleAdminSecretArn output" in master_template["Parameters"]["MoodleAdminEmail"]["Description"]
    assert master_template["Outputs"]["MoodleAdminSecretArn"]["Value"] == {
        "Fn::GetAtt": ["AppStack", "Outputs.MoodleAdminSecretArn"]
    }


def test_the_scaling_windows_are_a_console_form_of_their_own(master_template):
    """Console users never see the params file's ScheduledScaling list: the twelve window fields are grouped
    together, labelled by window, and each description says how to use it without pointing elsewhere."""
    interface = master_template["Metadata"]["AWS::CloudFormation::Interface"]
    (group,) = [
        g for g in interface["ParameterGroups"] if g["Label"]["default"].startswith("Exam-time scaling")
    ]
    windows = [name for name in master_template["Parameters"] if name.startswith("ScalingWindow")]
    assert len(windows) == 12 and sorted(group["Parameters"]) == sorted([*windows, "ScalingTimeZone"])
    for name in windows:
        description = master_template["Parameters"][name]["Description"]
        assert "ScheduledScaling" not in description and "see " not in description.lower(), name
        assert interface["ParameterLabels"][name]["default"].startswith(
            f"Window {name[len('ScalingWindow')]}:"
        )
    assert "'30 7 * * 1-5'" in master_template["Parameters"]["ScalingWindow1Start"]["Description"]


def test_no_description_points_at_a_params_file_only_key(master_template):
    for name, spec in master_template["Parameters"].items():
        for key in ("ScheduledScaling", "Environment:"):
            assert key not in spec["Description"], name
