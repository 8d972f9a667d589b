"""Data layer: Aurora PostgreSQL (layers/database.py) and the EFS file system for moodledata
(layers/file_system.py). Everything here must outlive mistakes.

Data safety decides every default: deletion protection on (switched on by the protection layer once the
whole site exists, so a failed first deploy still rolls back), a snapshot on delete or replacement of the
cluster, the file system, secrets and logs retained, storage encrypted, TLS required to both, and daily
AWS Backup recovery points of both (layers/backup.py).
"""

from __future__ import annotations

from troposphere import GetAtt, Output, Ref, Template

from moodle_cfn.azs import AVAILABILITY_ZONE_COUNT, add_az_condition
from moodle_cfn.common import SITE_NAME, OperatorParameter, declare_parameters
from moodle_cfn.encryption import DATA_KMS_KEY_ARN, add_key_condition
from moodle_cfn.layers import backup, database, database_role, file_system

PARAMETERS: tuple[OperatorParameter, ...] = (
    *database.PARAMETERS,
    *file_system.PARAMETERS,
    *backup.PARAMETERS,
    DATA_KMS_KEY_ARN,
)
CHECKS = database.CHECKS


def build() -> Template:
    """The data nested template."""
    template = Template(
        Description="moodle-cfn data: Aurora PostgreSQL cluster and the EFS file system for moodledata"
    )
    declare_parameters(template, (SITE_NAME, AVAILABILITY_ZONE_COUNT, *PARAMETERS))
    network_inputs = (*database.NETWORK_INPUTS, *database_role.NETWORK_INPUTS, *file_system.NETWORK_INPUTS)
    for parameter in dict.fromkeys(network_inputs):
        template.add_parameter(parameter)
    add_az_condition(template)
    add_key_condition(template)
    database.add_conditions(template)
    file_system.add_conditions(template)
    cluster, app_secret = database.add_database(template)
    database_role.add_database_role(
        template, cluster, database.WRITER_TITLE, app_secret, Ref(database.DATABASE_NAME.parameter)
    )
    efs, access_point, code_access_point = file_system.add_file_system(template)
    backup.add_backup(template, GetAtt(cluster, "DBClusterArn"), GetAtt(efs, "Arn"))
    for name, description, value in (
        *database.outputs(cluster, app_secret),
        *file_system.outputs(efs, access_point, code_access_point),
    ):
        template.add_output(Output(name, Description=description, Value=value))
    return template
