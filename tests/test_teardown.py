"""`moodle-cfn delete --dry-run`: what a stack delete keeps (read from the templates' DeletionPolicy), named
by physical id in the deployed stack, each with the command that removes it; nothing is deleted."""

from __future__ import annotations

from typing import ClassVar

import pytest

from moodle_cfn import cli_stack, deploy, teardown
from moodle_cfn.cli import main, parser
from moodle_cfn.layers import LAYERS

ROOT = "arn:aws:cloudformation:eu-west-1:123456789012:stack/moodle/1"
DATA = "arn:aws:cloudformation:eu-west-1:123456789012:stack/moodle-DataStack-X/2"
APP = "arn:aws:cloudformation:eu-west-1:123456789012:stack/moodle-AppStack-Y/3"


def kept() -> list[teardown.Kept]:
    return teardown.kept_resources((layer.stack_title, layer.build().to_dict()) for layer in LAYERS)


def test_every_kept_resource_has_a_way_to_remove_it():
    found = {(k.stack, k.logical_id): k for k in kept()}
    assert found[("DataStack", "DatabaseCluster")].policy == "Snapshot"
    assert {("DataStack", "FileSystem"), ("DataStack", "BackupVault"), ("AppStack", "AccessLogBucket"),
            ("AppStack", "MoodleAdminSecret"), ("DataStack", "DatabaseAppUserSecret")} <= set(found)  # fmt: skip
    assert sum(k.resource_type == "AWS::Logs::LogGroup" for k in found.values()) >= 8
    assert {k.resource_type for k in found.values()} <= set(teardown.REMOVAL)


class CannedStacks:
    """A CloudFormation client answering ListStackResources for a deployed site (data and app stacks)."""

    resources: ClassVar[dict[str, list[tuple[str, str, str]]]] = {
        "moodle": [("DataStack", DATA, "AWS::CloudFormation::Stack"), ("AppStack", APP, "AWS::CloudFormation::Stack")],
        DATA: [("DatabaseCluster", "moodle-db", "AWS::RDS::DBCluster"), ("FileSystem", "fs-0abc", "AWS::EFS::FileSystem"),
               ("DatabaseSecurityGroup", "sg-1", "AWS::EC2::SecurityGroup")],
        APP: [("AccessLogBucket", "moodle-app-accesslogbucket-1x2y", "AWS::S3::Bucket"),
              ("BootstrapLogGroup", "/moodle/moodle/bootstrap", "AWS::Logs::LogGroup")],
    }  # fmt: skip

    def list_stack_resources(self, StackName: str) -> dict:
        return {"StackResourceSummaries": [
            {"LogicalResourceId": logical, "PhysicalResourceId": physical, "ResourceType": kind}
            for logical, physical, kind in self.resources[StackName]]}  # fmt: skip

    def __getattr__(self, name: str):
        raise AssertionError(f"a dry run called {name}")


def test_the_dry_run_names_each_kept_resource_and_deletes_nothing(monkeypatch, capsys):
    monkeypatch.setattr(cli_stack, "site_of", lambda args: deploy.Site(CannedStacks(), "moodle"))
    assert main(["delete", "--stack", "moodle", "--region", "eu-west-1", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("A delete of moodle would keep 4 resources. Nothing was deleted (dry run).")
    assert out[1:] == [
        "  DataStack/DatabaseCluster (AWS::RDS::DBCluster, moodle-db): final snapshot; remove: aws rds "
        "describe-db-cluster-snapshots --db-cluster-identifier moodle-db --snapshot-type manual, then aws rds "
        "delete-db-cluster-snapshot --db-cluster-snapshot-identifier <its name>",
        "  DataStack/FileSystem (AWS::EFS::FileSystem, fs-0abc): kept; remove: aws efs describe-mount-targets "
        "--file-system-id fs-0abc (delete each with aws efs delete-mount-target), then aws efs delete-file-system "
        "--file-system-id fs-0abc",
        "  AppStack/AccessLogBucket (AWS::S3::Bucket, moodle-app-accesslogbucket-1x2y): kept; remove: aws s3 rb "
        "s3://moodle-app-accesslogbucket-1x2y --force",
        "  AppStack/BootstrapLogGroup (AWS::Logs::LogGroup, /moodle/moodle/bootstrap): kept; remove: aws logs "
        "delete-log-group --log-group-name /moodle/moodle/bootstrap",
    ]


def test_without_dry_run_nothing_is_done(capsys):
    assert main(["delete", "--stack", "moodle", "--region", "eu-west-1"]) == 2
    assert capsys.readouterr().err == (
        "moodle-cfn: error: moodle: delete: moodle-cfn does not delete sites; --dry-run reports what a delete keeps\n"
    )


@pytest.mark.parametrize("flag", ["--stack", "--stack-name"])
def test_delete_takes_both_spellings_of_the_stack_flag(flag):
    assert parser().parse_args(["delete", flag, "s", "--dry-run"]).stack == "s"
