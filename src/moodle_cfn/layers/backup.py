"""AWS Backup for the site's data: an encrypted vault and a daily plan covering Aurora and EFS.

Aurora's own automated backups give point-in-time recovery for DatabaseBackupRetentionDays; this plan keeps
daily recovery points of the cluster and of moodledata for BackupRetentionDays, in a vault that outlives the
stack. EFS's own "automatic backups" are switched off on the file system because this plan covers it (two
plans would store every recovery point twice).
"""

from __future__ import annotations

from troposphere import GetAtt, Ref, Sub, Template
from troposphere.backup import (
    BackupPlan,
    BackupPlanResourceType,
    BackupRuleResourceType,
    BackupSelection,
    BackupSelectionResourceType,
    BackupVault,
    LifecycleResourceType,
)
from troposphere.iam import Role

from moodle_cfn.common import GROUP_DATABASE, RETAIN_EXCEPT_ON_CREATE, SITE_NAME, number_parameter, tags
from moodle_cfn.encryption import customer_key
from moodle_cfn.policies import service_trust_policy

# 05:00 UTC: after the Aurora backup window (default 01:00-02:00) and the maintenance windows.
DAILY_AT = "cron(0 5 * * ? *)"

BACKUP_RETENTION_DAYS = number_parameter(
    "BackupRetentionDays",
    35,
    1,
    3650,
    "Days AWS Backup keeps the daily recovery points of the database and of moodledata.",
    label="AWS Backup retention (days)",
    group=GROUP_DATABASE,
)
PARAMETERS = (BACKUP_RETENTION_DAYS,)


def add_backup(template: Template, cluster_arn: GetAtt, file_system_arn: GetAtt) -> BackupVault:
    """The vault (kept when the stack goes), the daily plan, and the selection of the two data stores."""
    vault = template.add_resource(
        BackupVault(
            "BackupVault",
            # Vault names are unique per account and region, like SiteName.
            BackupVaultName=Sub(f"${{{SITE_NAME.name}}}-backups"),
            # Without a key AWS Backup uses its AWS-managed key; DataKmsKeyArn makes it the site's key.
            EncryptionKeyArn=customer_key(),
            BackupVaultTags={"Application": "moodle-cfn"},
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )
    plan = template.add_resource(
        BackupPlan(
            "BackupPlan",
            BackupPlan=BackupPlanResourceType(
                BackupPlanName=Sub(f"${{{SITE_NAME.name}}}-daily"),
                BackupPlanRule=[
                    BackupRuleResourceType(
                        RuleName="daily",
                        TargetBackupVault=Ref(vault),
                        ScheduleExpression=DAILY_AT,
                        StartWindowMinutes=60,
                        CompletionWindowMinutes=480,
                        Lifecycle=LifecycleResourceType(DeleteAfterDays=Ref(BACKUP_RETENTION_DAYS.parameter)),
                    )
                ],
            ),
            BackupPlanTags={"Application": "moodle-cfn"},
        )
    )
    role = template.add_resource(
        Role(
            "BackupRole",
            AssumeRolePolicyDocument=service_trust_policy("backup.amazonaws.com", None),
            ManagedPolicyArns=[
                Sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"),
                Sub(
                    "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores"
                ),
            ],
            Tags=tags("backup"),
        )
    )
    template.add_resource(
        BackupSelection(
            "BackupSelection",
            BackupPlanId=Ref(plan),
            BackupSelection=BackupSelectionResourceType(
                SelectionName="moodle-data",
                IamRoleArn=GetAtt(role, "Arn"),
                Resources=[cluster_arn, file_system_arn],
            ),
        )
    )
    return vault
