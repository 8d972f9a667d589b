"""Moodle on the web nodes: the parameters, the admin secret, and the files cfn-init puts on every node.

The files are real files in src/moodle_cfn/bootstrap/ (linted by shellcheck and php -l in the tests),
embedded verbatim in the launch template's AWS::CloudFormation::Init metadata. The site's settings travel
as one JSON object (site.json) from the template to config.php: cfn-init writes a file whose content is
a JSON object as JSON, so every value arrives with its quotes, dollars and backslashes intact.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from troposphere import AWSHelperFn, Parameter, Sub, Template
from troposphere.cloudformation import Init, InitConfig, InitFile
from troposphere.secretsmanager import GenerateSecretString, Secret

from moodle_cfn import bootstrap
from moodle_cfn.checks import CrossCheck
from moodle_cfn.common import GROUP_MOODLE, SITE_NAME, OperatorParameter
from moodle_cfn.encryption import generated_secret

SHARE_DIR = "/usr/share/moodle-cfn"
ETC_DIR = "/etc/moodle-cfn"
# Files copied verbatim to SHARE_DIR: (file, mode).
SHARED_FILES = (
    ("moodle-node-ready.sh", "000755"),
    ("moodle-node-setup.sh", "000755"),
    ("platform-al2023.sh", "000644"),
    ("moodle-node-ready.service", "000644"),
    ("moodle-health.php", "000644"),
    ("config.php", "000644"),
    ("muc-configure.php", "000644"),
    ("moodle-vhost.conf", "000644"),
    ("php-moodle.ini", "000644"),
    ("php-fpm-moodle.conf", "000644"),
    ("moodle-cron.service", "000644"),
    ("moodle-cron.timer", "000644"),
)
# Node logs shipped by the CloudWatch agent: file -> log group suffix (web_tier.LOG_NAMES).
SHIPPED_LOGS = {
    "/var/log/moodle-bootstrap.log": "bootstrap",
    "/var/log/httpd/access_log": "apache-access",
    "/var/log/httpd/error_log": "apache-error",
    "/var/log/php-fpm/www-error.log": "php-fpm",
    "/var/log/moodle-cron.log": "moodle-cron",
}

ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{ATOM}(\.{ATOM})*@{LABEL}(\.{LABEL})+$"

MOODLE_VERSION = OperatorParameter(
    Parameter(
        "MoodleVersion",
        Type="String",
        Default="5.2.2",
        AllowedPattern=r"^(4\.5|5\.[0-9])\.[0-9]{1,2}$",
        ConstraintDescription="A Moodle release from 4.5 LTS upward, such as 5.2.2 (the tag v5.2.2).",
        Description="Moodle release to run (its vX.Y.Z tag). Changing it upgrades the site: the first new node "
        "runs the upgrade in maintenance mode while the others wait.",
    ),
    label="Moodle version",
    group=GROUP_MOODLE,
)
ADMIN_EMAIL = OperatorParameter(
    Parameter(
        "MoodleAdminEmail",
        Type="String",
        Default="admin@example.invalid",
        # What Moodle's install accepts (validate_email: PHPMailer's check, which is PHP's
        # FILTER_VALIDATE_EMAIL): an unquoted local part of RFC 5322 atoms, a dotted host name.
        AllowedPattern=EMAIL_PATTERN,
        ConstraintDescription="An e-mail address such as admin@example.edu.",
        Description="E-mail of Moodle's admin account (its password is generated into Secrets Manager: the "
        "MoodleAdminSecretArn output).",
    ),
    label="Admin e-mail",
    group=GROUP_MOODLE,
)
SITE_FULL_NAME = OperatorParameter(
    Parameter(
        "MoodleSiteFullName",
        Type="String",
        Default="Moodle",
        # Any printable text: it reaches Moodle as JSON and argv, never through a shell.
        AllowedPattern=r"^[^\x00-\x1f\x7f]{1,100}$",
        ConstraintDescription="1-100 characters, no control characters.",
        Description="Full name of the site at installation (change it later in Moodle).",
    ),
    label="Site full name",
    group=GROUP_MOODLE,
)
SITE_SHORT_NAME = OperatorParameter(
    Parameter(
        "MoodleSiteShortName",
        Type="String",
        Default="moodle",
        AllowedPattern=r"^[A-Za-z0-9_-]{1,30}$",
        ConstraintDescription="1-30 letters, digits, hyphens and underscores.",
        Description="Short name of the site at installation.",
    ),
    label="Site short name",
    group=GROUP_MOODLE,
)
CODE_S3_URI = OperatorParameter(
    Parameter(
        "MoodleCodeS3Uri",
        Type="String",
        Default="",
        AllowedPattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\.tar\.gz)?$",
        ConstraintDescription="Empty, or s3://bucket/key.tar.gz.",
        Description="Your own Moodle code bundle (with plugins), a .tar.gz with one top directory. Empty: the "
        "MoodleVersion release from the Moodle project.",
    ),
    label="Code bundle in S3 (optional)",
    group=GROUP_MOODLE,
)
CODE_SHA256 = OperatorParameter(
    Parameter(
        "MoodleCodeSha256",
        Type="String",
        Default="",
        AllowedPattern=r"^([0-9a-f]{64})?$",
        ConstraintDescription="Empty, or a SHA-256 in lower-case hex.",
        Description="SHA-256 of MoodleCodeS3Uri; the nodes refuse a bundle that does not match.",
    ),
    label="Code bundle SHA-256",
    group=GROUP_MOODLE,
)
MEMCACHED_STORE_COMMIT = OperatorParameter(
    Parameter(
        "MemcachedStoreCommit",
        Type="String",
        # The commit of github.com/moodlehq/moodle-cachestore_memcached (master) pinned by a public,
        # Renovate-tracked Moodle image; the nodes check out exactly this commit.
        Default="db68d31ab5856cb55210478fdd452dc0cd6c6d05",
        AllowedPattern=r"^[0-9a-f]{40}$",
        ConstraintDescription="A 40-character git commit id.",
        Description="Commit of the moodlehq memcached cache store plugin installed when the application cache "
        "runs memcached (Moodle core dropped that store in 4.2).",
    ),
    label="memcached store plugin commit",
    group=GROUP_MOODLE,
)
MEMCACHED_STORE_SOURCE = OperatorParameter(
    Parameter(
        "MemcachedStoreSource",
        Type="String",
        Default="https://github.com/moodlehq/moodle-cachestore_memcached.git",
        AllowedPattern=r"^(https://|s3://)[^\s]+$",
        ConstraintDescription="An https git URL, or s3://bucket/key of a git bundle.",
        Description="Where the memcached store plugin comes from: a git URL (a mirror) or an S3 git bundle.",
    ),
    label="memcached store plugin source",
    group=GROUP_MOODLE,
)
PARAMETERS = (
    MOODLE_VERSION,
    ADMIN_EMAIL,
    SITE_FULL_NAME,
    SITE_SHORT_NAME,
    CODE_S3_URI,
    CODE_SHA256,
    MEMCACHED_STORE_COMMIT,
    MEMCACHED_STORE_SOURCE,
)
CHECKS = (
    CrossCheck(
        CODE_SHA256.name,
        "is required with MoodleCodeS3Uri (the nodes verify the bundle against it)",
        lambda v: not v.get(CODE_S3_URI.name) or bool(v.get(CODE_SHA256.name)),
    ),
)


def add_admin_secret(template: Template) -> Secret:
    """The password of Moodle's admin account, generated; kept when the stack goes."""
    return template.add_resource(
        generated_secret(
            "MoodleAdminSecret",
            Sub(f"Moodle admin account of ${{{SITE_NAME.name}}}"),
            GenerateSecretString(
                SecretStringTemplate='{"username": "admin"}',
                GenerateStringKey="password",
                PasswordLength=24,
                # Moodle's password policy wants every kind of character; none that a shell quotes.
                RequireEachIncludedType=True,
                ExcludeCharacters="\"'`$\\/@ ;&|<>(){}[]*?!#~",
            ),
            "moodle-admin",
        )
    )


def site_settings(values: Mapping[str, AWSHelperFn | str]) -> dict[str, AWSHelperFn | str]:
    """/etc/moodle-cfn/site.json: one key per setting. cfn-init writes an object content as JSON, every
    value a string (aws/aws-cdk#28561 shows the behaviour), which moodle-node-setup.sh reads with jq."""
    return dict(sorted(values.items()))


def agent_config() -> Sub:
    """CloudWatch agent: the node logs into the site's log groups, memory and disk into CWAgent metrics."""
    config = {
        "agent": {"run_as_user": "root"},
        "logs": {
            "logs_collected": {
                "files": {
                    "collect_list": [
                        {
                            "file_path": path,
                            "log_group_name": f"/moodle/${{{SITE_NAME.name}}}/{group}",
                            "log_stream_name": "{instance_id}",
                        }
                        for path, group in SHIPPED_LOGS.items()
                    ]
                }
            }
        },
        "metrics": {
            "namespace": "CWAgent",
            # ${!x} is Fn::Sub's escape for the agent's own ${x} placeholder.
            "append_dimensions": {"AutoScalingGroupName": "${!aws:AutoScalingGroupName}"},
            "metrics_collected": {
                "mem": {"measurement": ["mem_used_percent"]},
                "disk": {"measurement": ["used_percent"], "resources": ["/"]},
            },
        },
    }
    return Sub(json.dumps(config, indent=2, sort_keys=True) + "\n")


def init_metadata(values: Mapping[str, AWSHelperFn | str]) -> Init:
    """cfn-init's files: the settings, the agent config, and the bootstrap files verbatim."""
    files: dict[str, object] = {
        # A plain mapping: troposphere's InitFile types content as a string only.
        f"{ETC_DIR}/site.json": {
            "content": site_settings(values),
            "mode": "000600",
            "owner": "root",
            "group": "root",
        },
        f"{ETC_DIR}/cloudwatch-agent.json": InitFile(
            content=agent_config(), mode="000644", owner="root", group="root"
        ),
    }
    for name, mode in SHARED_FILES:
        files[f"{SHARE_DIR}/{name}"] = InitFile(
            content=bootstrap.read(name), mode=mode, owner="root", group="root"
        )
    return Init({"config": InitConfig(files=files)})


# Upper-case names the script uses that are not site settings: libpq's, bash's, the platform switch, and the
# runtime.env it writes itself.
NOT_SITE_SETTINGS = frozenset(
    {
        "PGPASSWORD",
        "PGSSLMODE",
        "PGCONNECT_TIMEOUT",
        "MOODLE_CFN_PLATFORM",
        "MOODLE_DIR",
        "MOODLE_PUBLIC",
        "BASH_COMMAND",
    }
)


def settings_names() -> set[str]:
    """The site.json keys the node scripts read (so the template and the scripts cannot drift): shell
    variables in moodle-node-setup.sh, `site KEY` lookups in moodle-node-ready.sh."""
    setup = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", bootstrap.read("moodle-node-setup.sh")))
    ready = set(re.findall(r"\bsite ([A-Z][A-Z0-9_]+)", bootstrap.read("moodle-node-ready.sh")))
    return (setup - NOT_SITE_SETTINGS) | ready


def node_files_digest() -> str:
    """SHA-256 over every file cfn-init puts on a node verbatim: a new moodle-cfn release that changes one
    changes the launch template's data (user-data.sh carries it), and so rolls the fleet."""
    digest = hashlib.sha256()
    for name, mode in SHARED_FILES:
        digest.update(f"{name} {mode}\n".encode())
        digest.update(bootstrap.read(name).encode())
    return digest.hexdigest()
