"""Amazon EFS for moodledata: encrypted, backed up, TLS-only, a mount target per AZ, owned by the web server user."""

from __future__ import annotations

import json

from awacs import elasticfilesystem as efs_actions
from awacs.aws import Allow, Bool, Condition, Deny, PolicyDocument, Principal, Statement
from troposphere import Equals, GetAtt, If, NoValue, Parameter, Ref, Select, Sub, Template
from troposphere.efs import (
    AccessPoint,
    BackupPolicy,
    CreationInfo,
    FileSystem,
    LifecyclePolicy,
    MountTarget,
    PosixUser,
    RootDirectory,
)

from moodle_cfn.azs import AZ_SLOTS, slot_condition
from moodle_cfn.common import (
    GROUP_FILE_SYSTEM,
    RETAIN_EXCEPT_ON_CREATE,
    OperatorParameter,
    number_parameter,
    tags,
)
from moodle_cfn.encryption import customer_key
from moodle_cfn.layers.address_plan import DATA
from moodle_cfn.layers.network import as_parameter
from moodle_cfn.layers.security_groups import FILE_SYSTEM_SG
from moodle_cfn.policies import POLICY_VERSION

IS_PROVISIONED_THROUGHPUT = "FileSystemThroughputIsProvisioned"
# Apache and php-fpm run as "apache" on Amazon Linux 2023, a system account with the fixed uid/gid 48.
WEB_SERVER_UID = "48"
MOODLEDATA_PATH = "/moodledata"
# The Moodle code archives the nodes build and unpack, beside moodledata and out of its reach: a client of
# the moodledata access point cannot see above /moodledata, and this one's identity is not the web
# server's. A uid that no local account has (it is only the access point's identity; nodes mount it under a
# root-only directory) and not 0, which would need elasticfilesystem:ClientRootAccess ("Enforcing a user
# identity using an access point", https://docs.aws.amazon.com/efs/latest/ug/enforce-identity-access-points.html).
CODE_OWNER_UID = "60048"
CODE_PATH = "/moodle-code"
IA_TRANSITION_DAYS = [7, 14, 30, 60, 90, 180, 270, 365]

FILE_SYSTEM_ID = "FileSystemId"
FILE_SYSTEM_ARN = "FileSystemArn"
ACCESS_POINT_ID = "FileSystemAccessPointId"
ACCESS_POINT_ARN = "FileSystemAccessPointArn"
CODE_ACCESS_POINT_ID = "FileSystemCodeAccessPointId"
CODE_ACCESS_POINT_ARN = "FileSystemCodeAccessPointArn"

FILE_SYSTEM_THROUGHPUT_MODE = OperatorParameter(
    Parameter(
        "FileSystemThroughputMode",
        Type="String",
        Default="elastic",
        AllowedValues=["elastic", "bursting", "provisioned"],
        Description="elastic: throughput follows demand, billed per GB transferred (best for spiky Moodle "
        "traffic). bursting: scales with stored data. provisioned: FileSystemProvisionedThroughput MiB/s.",
    ),
    label="Throughput mode",
    group=GROUP_FILE_SYSTEM,
)
FILE_SYSTEM_PROVISIONED_THROUGHPUT = number_parameter(
    "FileSystemProvisionedThroughput",
    128,
    1,
    3414,
    "MiB/s of throughput when FileSystemThroughputMode is provisioned (ignored otherwise).",
    label="Provisioned throughput (MiB/s)",
    group=GROUP_FILE_SYSTEM,
)
FILE_SYSTEM_IA_AFTER_DAYS = OperatorParameter(
    Parameter(
        "FileSystemInfrequentAccessAfterDays",
        Type="Number",
        Default=30,
        AllowedValues=IA_TRANSITION_DAYS,
        Description="Move files not read for this many days to EFS Infrequent Access (about 1/12 the storage "
        "price); a file moves back on its first read.",
    ),
    label="Infrequent Access after (days)",
    group=GROUP_FILE_SYSTEM,
)

PARAMETERS: tuple[OperatorParameter, ...] = (
    FILE_SYSTEM_THROUGHPUT_MODE,
    FILE_SYSTEM_PROVISIONED_THROUGHPUT,
    FILE_SYSTEM_IA_AFTER_DAYS,
)

# Values taken from the network layer.
DATA_SUBNET_IDS = as_parameter(DATA.ids_output)
FILE_SYSTEM_SECURITY_GROUP = as_parameter(FILE_SYSTEM_SG.id_output)
NETWORK_INPUTS = (DATA_SUBNET_IDS, FILE_SYSTEM_SECURITY_GROUP)


def add_conditions(template: Template) -> None:
    """Declare the provisioned-throughput switch."""
    template.add_condition(
        IS_PROVISIONED_THROUGHPUT, Equals(Ref(FILE_SYSTEM_THROUGHPUT_MODE.parameter), "provisioned")
    )


def file_system_policy() -> PolicyDocument:
    """Clients mount and write only through the mount targets, and only over TLS.

    A file system policy applies to its own file system, so "*" as the resource means this one. No
    ClientRootAccess: the access point maps every client to the web server's user.
    """
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Sid="MountAndWriteThroughMountTargets",
                Effect=Allow,
                Principal=Principal("AWS", "*"),
                Action=[efs_actions.ClientMount, efs_actions.ClientWrite],
                Resource=["*"],
                Condition=Condition(Bool("elasticfilesystem:AccessedViaMountTarget", "true")),
            ),
            Statement(
                Sid="DenyUnencryptedTransport",
                Effect=Deny,
                Principal=Principal("AWS", "*"),
                Action=[efs_actions.Action("*")],
                Resource=["*"],
                Condition=Condition(Bool("aws:SecureTransport", "false")),
            ),
        ],
    )


def add_file_system(template: Template) -> tuple[FileSystem, AccessPoint, AccessPoint]:
    """Encrypted, backed-up EFS with a mount target per AZ, an access point owned by the web server user
    (moodledata) and one it cannot reach (the code archives)."""
    file_system = template.add_resource(
        FileSystem(
            "FileSystem",
            Encrypted=True,
            KmsKeyId=customer_key(),
            PerformanceMode="generalPurpose",
            ThroughputMode=Ref(FILE_SYSTEM_THROUGHPUT_MODE.parameter),
            ProvisionedThroughputInMibps=If(
                IS_PROVISIONED_THROUGHPUT, Ref(FILE_SYSTEM_PROVISIONED_THROUGHPUT.parameter), NoValue
            ),
            LifecyclePolicies=[
                LifecyclePolicy(TransitionToIA=Sub(f"AFTER_${{{FILE_SYSTEM_IA_AFTER_DAYS.name}}}_DAYS")),
                LifecyclePolicy(TransitionToPrimaryStorageClass="AFTER_1_ACCESS"),
            ],
            # Backed up by the stack's AWS Backup plan (layers/backup.py), not by a second default plan.
            BackupPolicy=BackupPolicy(Status="DISABLED"),
            # troposphere wants a plain dict here; the policy has no intrinsic functions in it.
            FileSystemPolicy=json.loads(file_system_policy().to_json()),
            FileSystemTags=tags("moodledata"),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    for slot in AZ_SLOTS:
        mount_target = MountTarget(
            f"FileSystemMountTarget{slot}",
            FileSystemId=Ref(file_system),
            SubnetId=Select(slot - 1, Ref(DATA_SUBNET_IDS)),
            SecurityGroups=[Ref(FILE_SYSTEM_SECURITY_GROUP)],
        )
        if slot_condition(slot):
            mount_target.Condition = slot_condition(slot)
        template.add_resource(mount_target)
    access_point = add_access_point(
        template, "FileSystemAccessPoint", file_system, WEB_SERVER_UID, MOODLEDATA_PATH, "0770", "moodledata"
    )
    code_access_point = add_access_point(
        template, "FileSystemCodeAccessPoint", file_system, CODE_OWNER_UID, CODE_PATH, "0700", "moodle-code"
    )
    return file_system, access_point, code_access_point


def add_access_point(
    template: Template, title: str, file_system: FileSystem, uid: str, path: str, permissions: str, tag: str
) -> AccessPoint:
    """An access point that acts as `uid` for every client, rooted at `path` (made with `permissions`)."""
    return template.add_resource(
        AccessPoint(
            title,
            FileSystemId=Ref(file_system),
            PosixUser=PosixUser(Uid=uid, Gid=uid),
            RootDirectory=RootDirectory(
                Path=path,
                CreationInfo=CreationInfo(OwnerUid=uid, OwnerGid=uid, Permissions=permissions),
            ),
            AccessPointTags=tags(tag),
        )
    )


def outputs(
    file_system: FileSystem, access_point: AccessPoint, code_access_point: AccessPoint
) -> list[tuple[str, str, object]]:
    """(name, description, value) of every file system output."""
    return [
        (FILE_SYSTEM_ID, "EFS file system id (moodledata)", Ref(file_system)),
        (FILE_SYSTEM_ARN, "EFS file system ARN", GetAtt(file_system, "Arn")),
        (
            ACCESS_POINT_ID,
            f"EFS access point for {MOODLEDATA_PATH}, as uid/gid {WEB_SERVER_UID}",
            Ref(access_point),
        ),
        (ACCESS_POINT_ARN, "EFS access point ARN", GetAtt(access_point, "Arn")),
        (
            CODE_ACCESS_POINT_ID,
            f"EFS access point for {CODE_PATH} (the Moodle code archives), as uid/gid {CODE_OWNER_UID}",
            Ref(code_access_point),
        ),
        (CODE_ACCESS_POINT_ARN, "EFS access point ARN (code archives)", GetAtt(code_access_point, "Arn")),
    ]
