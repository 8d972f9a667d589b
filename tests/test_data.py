"""Targeted properties of the data template: Aurora and EFS, for every capacity mode and AZ count."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from moodle_cfn import master
from moodle_cfn.checks import run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.layers import LAYERS, data, database, file_system
from tests.cfn_eval import active_resources, of_type
from tests.conftest import PARAMS_FILES

# (DeletionPolicy, UpdateReplacePolicy) per stateful type: kept on delete and on replacement, except what a
# failed first create made (RetainExceptOnCreate; tests/test_first_create.py).
KEPT = ("RetainExceptOnCreate", "Retain")
STATEFUL_POLICIES = {
    "AWS::Backup::BackupVault": KEPT,
    "AWS::RDS::DBCluster": ("Snapshot", "Snapshot"),
    "AWS::EFS::FileSystem": KEPT,
    "AWS::SecretsManager::Secret": KEPT,
    "AWS::Logs::LogGroup": KEPT,
}
# What EFS accepts for TransitionToIA.
EFS_IA_VALUES = {f"AFTER_{d}_DAYS" for d in (7, 14, 30, 60, 90, 180, 270, 365)} | {"AFTER_1_DAY"}


@pytest.fixture(scope="module")
def data_template() -> dict[str, Any]:
    return json.loads(data.build().to_json())


def resources_for(template: dict[str, Any], **given: str) -> dict[str, dict[str, Any]]:
    return active_resources(template, given)


def test_cluster_is_aurora_postgresql_with_a_supported_default_version(data_template):
    cluster = data_template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["Engine"] == "aurora-postgresql"
    assert cluster["EngineVersion"] == {"Ref": "DatabaseEngineVersion"}
    default = data_template["Parameters"]["DatabaseEngineVersion"]["Default"]
    assert re.fullmatch(r"1[67]\.\d+", default)


def test_parameter_group_family_follows_the_major_version_and_forces_tls(data_template):
    group = data_template["Resources"]["DatabaseClusterParameterGroup"]["Properties"]
    template, variables = group["Family"]["Fn::Sub"]
    assert template == "aurora-postgresql${Major}"
    assert variables["Major"] == {"Fn::Select": [0, {"Fn::Split": [".", {"Ref": "DatabaseEngineVersion"}]}]}
    assert group["Parameters"]["rds.force_ssl"] == "1"
    cluster = data_template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["DBClusterParameterGroupName"] == {"Ref": "DatabaseClusterParameterGroup"}


def test_master_password_is_managed_by_rds_and_never_a_parameter(data_template):
    cluster = data_template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in cluster


SECRET_WORDS = re.compile("password|secret|token", re.I)
# Property names that would carry a secret value; allowed only as a Secrets Manager dynamic reference.
SECRET_PROPERTIES = {"MasterUserPassword", "Password", "AuthToken", "SecretString"}
DYNAMIC_REFERENCE = re.compile(r"^\{\{resolve:secretsmanager:\$\{\w+\}:SecretString:\w+\}\}$")


def secret_properties(node: Any) -> list[tuple[str, Any]]:
    """Every (name, value) anywhere under `node` whose name is in SECRET_PROPERTIES."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_PROPERTIES:
                found.append((key, value))
            found += secret_properties(value)
    elif isinstance(node, list):
        for value in node:
            found += secret_properties(value)
    return found


def test_no_secret_value_anywhere_in_templates_or_params_files():
    templates = {layer.name: layer.build().to_dict() for layer in LAYERS} | {
        "master": master.build().to_dict()
    }
    for name, template in templates.items():
        for key, value in secret_properties(template["Resources"]):
            assert isinstance(value, dict), f"{name}: {key}"
            text, variables = (
                (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
            )
            # A dynamic reference, or what CloudFormation itself writes from a resource it creates (an access
            # key's id and secret, mail.py): never a literal, never a parameter.
            from_the_key = {"Ref": "MailSenderKey"}, {"Fn::GetAtt": ["MailSenderKey", "SecretAccessKey"]}
            generated = bool(variables) and all(v in from_the_key for v in variables.values())
            generated = (
                generated and re.sub(r"\$\{\w+\}", "", text) == '{"username": "", "secret_access_key": ""}'
            )
            assert DYNAMIC_REFERENCE.match(text) or generated, f"{name}: {key}"
        for parameter, spec in template["Parameters"].items():
            # A secret's ARN names where a secret is, which is fine; a secret's value never is a parameter.
            names_a_secret = SECRET_WORDS.search(parameter) and not parameter.endswith("SecretArn")
            assert not names_a_secret and "NoEcho" not in spec, f"{name}: {parameter}"
    for path in PARAMS_FILES:
        keys = {
            line.split(":")[0] for line in path.read_text().splitlines() if line and not line.startswith("#")
        }
        assert not [key for key in keys if SECRET_WORDS.search(key)], path.name


@pytest.mark.parametrize("mode", ["provisioned", "serverless-v2"])
@pytest.mark.parametrize("azs", ["2", "3"])
def test_two_instances_in_different_azs_in_either_mode(data_template, mode, azs):
    resources = resources_for(data_template, DatabaseCapacityMode=mode, AvailabilityZoneCount=azs)
    instances = of_type(resources, "AWS::RDS::DBInstance")
    assert len(instances) == 2
    zones = [i["Properties"]["AvailabilityZone"]["Fn::Select"] for i in instances.values()]
    assert sorted(z[0] for z in zones) == [0, 1] and all(
        z[1] == {"Ref": "AvailabilityZoneNames"} for z in zones
    )
    classes = {json.dumps(i["Properties"]["DBInstanceClass"]) for i in instances.values()}
    expected = '"db.serverless"' if mode == "serverless-v2" else '{"Ref": "DatabaseInstanceClass"}'
    assert classes == {expected}
    scaling = resources["DatabaseCluster"]["Properties"].get("ServerlessV2ScalingConfiguration")
    assert (scaling is not None) == (mode == "serverless-v2")
    for instance in instances.values():
        props = instance["Properties"]
        assert props["PubliclyAccessible"] is False and props["EnablePerformanceInsights"] is True
        assert props["MonitoringInterval"] == 60 and props["DBClusterIdentifier"] == {
            "Ref": "DatabaseCluster"
        }


@pytest.mark.parametrize(
    "key", ["", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"]
)
def test_everything_at_rest_is_encrypted_with_the_chosen_key(data_template, key):
    resources = resources_for(data_template, DataKmsKeyArn=key)
    cluster = resources["DatabaseCluster"]["Properties"]
    efs = resources["FileSystem"]["Properties"]
    assert cluster["StorageEncrypted"] is True and efs["Encrypted"] is True
    expected = {"Ref": "DataKmsKeyArn"} if key else None
    for name in (
        "DatabaseCluster",
        "FileSystem",
        "DatabaseAppUserSecret",
        "DatabaseLogGroup",
        "DatabaseInstance1",
    ):
        props = resources[name]["Properties"]
        found = props.get("KmsKeyId", props.get("PerformanceInsightsKMSKeyId"))
        assert found == expected, name
    assert cluster.get("MasterUserSecret") == ({"KmsKeyId": {"Ref": "DataKmsKeyArn"}} if key else None)


def test_stateful_resources_survive_delete_and_replacement(data_template):
    seen = set()
    for name, resource in data_template["Resources"].items():
        policy = STATEFUL_POLICIES.get(resource["Type"])
        if policy:
            seen.add(resource["Type"])
            assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == policy, name
    assert seen == set(STATEFUL_POLICIES)


def test_cluster_keeps_backups_and_logs_from_parameters(data_template):
    # Deletion protection is set later, by the protection layer (tests/test_first_create.py).
    cluster = data_template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["BackupRetentionPeriod"] == {"Ref": "DatabaseBackupRetentionDays"}
    assert cluster["EnableCloudwatchLogsExports"] == ["postgresql"]
    assert cluster["VpcSecurityGroupIds"] == [{"Ref": "DatabaseSecurityGroupId"}]
    subnet_group = data_template["Resources"]["DatabaseSubnetGroup"]["Properties"]
    assert subnet_group["SubnetIds"] == {"Ref": "DataSubnetIds"}
    log_group = data_template["Resources"]["DatabaseLogGroup"]
    # The log group RDS exports to must exist (with retention) before the cluster starts writing.
    assert log_group["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/rds/cluster/${SiteName}-db/postgresql"
    }
    assert cluster["DBClusterIdentifier"] == {"Fn::Sub": "${SiteName}-db"}
    assert "DatabaseLogGroup" in data_template["Resources"]["DatabaseCluster"]["DependsOn"]


@pytest.mark.parametrize("azs", ["2", "3"])
def test_a_mount_target_per_az_in_distinct_data_subnets(data_template, azs):
    targets = of_type(resources_for(data_template, AvailabilityZoneCount=azs), "AWS::EFS::MountTarget")
    assert len(targets) == int(azs)
    selects = [t["Properties"]["SubnetId"]["Fn::Select"] for t in targets.values()]
    assert sorted(s[0] for s in selects) == list(range(int(azs)))
    assert all(s[1] == {"Ref": "DataSubnetIds"} for s in selects)
    assert all(
        t["Properties"]["SecurityGroups"] == [{"Ref": "FileSystemSecurityGroupId"}] for t in targets.values()
    )


@pytest.mark.parametrize("mode", ["elastic", "bursting", "provisioned"])
def test_throughput_mode_and_provisioned_rate(data_template, mode):
    efs = resources_for(data_template, FileSystemThroughputMode=mode)["FileSystem"]["Properties"]
    assert efs["ThroughputMode"] == {"Ref": "FileSystemThroughputMode"}
    assert ("ProvisionedThroughputInMibps" in efs) == (mode == "provisioned")


def test_every_allowed_ia_transition_is_a_value_efs_accepts(data_template):
    efs = data_template["Resources"]["FileSystem"]["Properties"]
    (transition,) = [p["TransitionToIA"] for p in efs["LifecyclePolicies"] if "TransitionToIA" in p]
    assert transition == {"Fn::Sub": "AFTER_${FileSystemInfrequentAccessAfterDays}_DAYS"}
    for days in data_template["Parameters"]["FileSystemInfrequentAccessAfterDays"]["AllowedValues"]:
        assert f"AFTER_{days}_DAYS" in EFS_IA_VALUES
    assert {"TransitionToPrimaryStorageClass": "AFTER_1_ACCESS"} in efs["LifecyclePolicies"]
    # Backed up by the stack's own AWS Backup plan instead (test_backup_plan_covers_aurora_and_efs).
    assert efs["BackupPolicy"] == {"Status": "DISABLED"}


def test_file_system_policy_denies_transport_without_tls_and_root_access(data_template):
    statements = data_template["Resources"]["FileSystem"]["Properties"]["FileSystemPolicy"]["Statement"]
    deny = next(s for s in statements if s["Effect"] == "Deny")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Action"] == ["elasticfilesystem:*"]
    allowed = {a for s in statements if s["Effect"] == "Allow" for a in s["Action"]}
    assert allowed == {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}


def test_access_point_gives_moodledata_to_the_web_server_user(data_template):
    point = data_template["Resources"]["FileSystemAccessPoint"]["Properties"]
    assert point["PosixUser"] == {"Uid": "48", "Gid": "48"}
    assert point["RootDirectory"]["Path"] == "/moodledata"
    assert point["RootDirectory"]["CreationInfo"] == {
        "OwnerUid": "48",
        "OwnerGid": "48",
        "Permissions": "0770",
    }


def test_the_code_archives_have_an_access_point_the_web_server_user_cannot_reach(data_template):
    """Its identity is neither the web server's (48) nor root (which would need ClientRootAccess), and its
    directory is outside /moodledata, above the moodledata access point's root."""
    point = data_template["Resources"]["FileSystemCodeAccessPoint"]["Properties"]
    uid = point["PosixUser"]["Uid"]
    assert point["PosixUser"] == {"Uid": uid, "Gid": uid} and uid not in ("0", file_system.WEB_SERVER_UID)
    path = point["RootDirectory"]["Path"]
    assert not path.startswith(file_system.MOODLEDATA_PATH + "/") and path != file_system.MOODLEDATA_PATH
    assert point["RootDirectory"]["CreationInfo"] == {"OwnerUid": uid, "OwnerGid": uid, "Permissions": "0700"}


def test_outputs_give_endpoints_and_secret_arns_but_no_password(data_template):
    outputs = data_template["Outputs"]
    assert set(outputs) == {
        database.DATABASE_ENDPOINT,
        database.DATABASE_READER_ENDPOINT,
        database.DATABASE_PORT,
        database.DATABASE_NAME_OUTPUT,
        database.DATABASE_CLUSTER_ID,
        database.DATABASE_MASTER_SECRET_ARN,
        database.DATABASE_APP_SECRET_ARN,
        file_system.FILE_SYSTEM_ID,
        file_system.FILE_SYSTEM_ARN,
        file_system.ACCESS_POINT_ID,
        file_system.ACCESS_POINT_ARN,
        file_system.CODE_ACCESS_POINT_ID,
        file_system.CODE_ACCESS_POINT_ARN,
    }
    assert outputs["DatabaseMasterSecretArn"]["Value"] == {
        "Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]
    }
    assert outputs["DatabaseAppUserSecretArn"]["Value"] == {"Ref": "DatabaseAppUserSecret"}
    assert not [name for name in outputs if "password" in name.lower()]


def test_app_user_secret_is_generated_without_characters_that_need_quoting(data_template):
    generate = data_template["Resources"]["DatabaseAppUserSecret"]["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {"username": "moodle"}
    assert generate["GenerateStringKey"] == "password" and generate["ExcludePunctuation"] is True
    assert generate["PasswordLength"] >= 32


VALID = {"DatabaseMinCapacity": "0.5", "DatabaseMaxCapacity": "16"}


@pytest.mark.parametrize(
    ("values", "key", "reason"),
    [
        ({"DatabaseMinCapacity": "8", "DatabaseMaxCapacity": "4"}, "DatabaseMinCapacity", "must not exceed"),
        ({"DatabaseMinCapacity": "0.75", "DatabaseMaxCapacity": "4"}, "DatabaseMinCapacity", "steps of 0.5"),
        ({"DatabaseMinCapacity": "1", "DatabaseMaxCapacity": "4.2"}, "DatabaseMaxCapacity", "steps of 0.5"),
    ],
)
def test_capacity_cross_checks(values, key, reason):
    run_checks(data.CHECKS, VALID, "p.yaml")
    with pytest.raises(InputError, match=f"p.yaml: {key}: .*{reason}"):
        run_checks(data.CHECKS, values, "p.yaml")


def test_backup_plan_covers_aurora_and_efs_into_a_kept_vault(data_template):
    resources = data_template["Resources"]
    vault = resources["BackupVault"]
    assert (vault["DeletionPolicy"], vault["UpdateReplacePolicy"]) == KEPT
    assert vault["Properties"]["EncryptionKeyArn"] == {
        "Fn::If": ["HasDataKmsKey", {"Ref": "DataKmsKeyArn"}, {"Ref": "AWS::NoValue"}]
    }
    (rule,) = resources["BackupPlan"]["Properties"]["BackupPlan"]["BackupPlanRule"]
    assert rule["TargetBackupVault"] == {"Ref": "BackupVault"}
    assert rule["Lifecycle"] == {"DeleteAfterDays": {"Ref": "BackupRetentionDays"}}
    selection = resources["BackupSelection"]["Properties"]["BackupSelection"]
    assert selection["Resources"] == [
        {"Fn::GetAtt": ["DatabaseCluster", "DBClusterArn"]},
        {"Fn::GetAtt": ["FileSystem", "Arn"]},
    ]
