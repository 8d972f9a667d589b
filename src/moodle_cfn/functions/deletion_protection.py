"""Custom resource: the Aurora cluster's deletion protection, switched on only once the whole site exists.

The cluster is created unprotected, so a first deploy that fails anywhere rolls back cleanly (CloudFormation
cannot delete a protected cluster). This resource is created after every other one: on Create and Update it
sets the protection to the DatabaseDeletionProtection parameter ("true" or "false"); on Delete it does
nothing, so a protected cluster keeps refusing a stack delete until an update switches the parameter off.
RDS applies deletion protection at once, whatever ApplyImmediately says, so it is not sent: an operator's
changes pending for the maintenance window stay pending.
"""

import time

import boto3

ATTEMPTS = 20
PAUSE_SECONDS = 15


def set_protection(rds, cluster, protect, sleep=time.sleep):
    """Switch the cluster's deletion protection, waiting while the cluster is busy (modifying, upgrading)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            rds.modify_db_cluster(DBClusterIdentifier=cluster, DeletionProtection=protect)
            return
        except rds.exceptions.InvalidDBClusterStateFault:
            if attempt == ATTEMPTS:
                raise
            sleep(PAUSE_SECONDS)


def wanted(value):
    """The parameter's value as a boolean; anything but "true" or "false" is an error, never a guess."""
    if value not in ("true", "false"):
        raise ValueError(f"DeletionProtection must be 'true' or 'false', not {value!r}")
    return value == "true"


def handler(event, context):
    import cfnresponse  # provided by CloudFormation for inline (ZipFile) code

    props = event["ResourceProperties"]
    status, reason = cfnresponse.SUCCESS, None
    try:
        if event["RequestType"] in ("Create", "Update"):
            set_protection(boto3.client("rds"), props["ClusterId"], wanted(props["DeletionProtection"]))
    except Exception as error:
        status, reason = cfnresponse.FAILED, f"{type(error).__name__}: {error}"[:1000]
    # The cluster names the resource, so an Update is never taken for a replacement.
    cfnresponse.send(event, context, status, {}, props.get("ClusterId", "deletion-protection"), reason=reason)
