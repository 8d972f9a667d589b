"""What a stack delete keeps, and how to remove each kept resource once that is really meant.

The templates decide it: a resource whose DeletionPolicy is Retain or RetainExceptOnCreate outlives a stack
delete, one with Snapshot leaves a final snapshot. `moodle-cfn delete --dry-run` reads those from the
templates and names each one as it exists in the deployed stack (its physical id), with the command that
removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KEEPING_POLICIES = frozenset({"Retain", "RetainExceptOnCreate", "Snapshot"})
# How to remove what a delete left behind, by resource type ({id} is the physical id).
REMOVAL = {
    "AWS::RDS::DBCluster": (
        "aws rds describe-db-cluster-snapshots --db-cluster-identifier {id} --snapshot-type manual, "
        "then aws rds delete-db-cluster-snapshot --db-cluster-snapshot-identifier <its name>"
    ),
    "AWS::EFS::FileSystem": (
        "aws efs describe-mount-targets --file-system-id {id} (delete each with aws efs delete-mount-target), "
        "then aws efs delete-file-system --file-system-id {id}"
    ),
    "AWS::SecretsManager::Secret": "aws secretsmanager delete-secret --secret-id {id}",
    "AWS::Logs::LogGroup": "aws logs delete-log-group --log-group-name {id}",
    "AWS::Backup::BackupVault": (
        "delete its recovery points (aws backup list-recovery-points-by-backup-vault --backup-vault-name {id}), "
        "then aws backup delete-backup-vault --backup-vault-name {id}"
    ),
    "AWS::S3::Bucket": "aws s3 rb s3://{id} --force",
}


@dataclass(frozen=True)
class Kept:
    """A resource a stack delete leaves behind (or, for Snapshot, leaves a final snapshot of)."""

    stack: str
    logical_id: str
    resource_type: str
    policy: str

    def line(self, physical_id: str) -> str:
        """One line of the report: where it is, what stays, how to remove it."""
        what = "final snapshot" if self.policy == "Snapshot" else "kept"
        how = REMOVAL[self.resource_type].format(id=physical_id)
        return f"{self.stack}/{self.logical_id} ({self.resource_type}, {physical_id}): {what}; remove: {how}"


def kept_resources(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Kept]:
    """Every resource of the layers' templates ((nested stack title, template) pairs) a delete keeps."""
    return [
        Kept(stack, name, resource["Type"], resource["DeletionPolicy"])
        for stack, template in layers
        for name, resource in sorted(template["Resources"].items())
        if resource.get("DeletionPolicy") in KEEPING_POLICIES
    ]


def report(kept: list[Kept], deployed: Mapping[str, Mapping[str, str]], stack: str) -> str:
    """The dry-run report: the kept resources that exist in the deployed nested stacks
    (`deployed`: nested stack title -> {logical id: physical id})."""
    lines = [
        k.line(deployed[k.stack][k.logical_id])
        for k in kept
        if k.logical_id in deployed.get(k.stack, {}) and deployed[k.stack][k.logical_id]
    ]
    head = (
        f"A delete of {stack} would keep {len(lines)} resources. Nothing was deleted (dry run). "
        "First set DatabaseDeletionProtection to false and deploy, and turn termination protection off, "
        "or the delete stops.\n"
    )
    return head + "".join(f"  {line}\n" for line in lines)
