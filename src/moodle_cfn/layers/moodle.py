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
from troposphere.ssm import Parameter as SsmParameter

from moodle_cfn import bootstrap, releases
from moodle_cfn.checks import CrossCheck, FindingCheck
from moodle_cfn.common import GROUP_MOODLE, SITE_NAME, OperatorParameter
from moodle_cfn.encryption import generated_secret

SHARE_DIR = "/usr/share/moodle-cfn"
ETC_DIR = "/etc/moodle-cfn"
# Files copied verbatim to SHARE_DIR: (file, mode).
SHARED_FILES = (
    ("moodle-node-ready.sh", "000755"),
    ("moodle-node-drain.sh", "000755"),
    ("moodle-lifecycle.sh", "000644"),
    ("moodle-node-drain.service", "000644"),
    ("moodle-node-setup.sh", "000755"),
    ("moodle-release.sh", "000644"),
    ("moodle-plugins.sh", "000644"),
    (releases.LINES_FILE, "000644"),
    ("platform-al2023.sh", "000644"),
    ("moodle-node-ready.service", "000644"),
    ("moodle-health.php", "000644"),
    ("moodle-downgrades.php", "000644"),
    ("moodle-install.php", "000644"),
    ("moodle-metadata.nft", "000644"),
    ("config.php", "000644"),
    ("muc-configure.php", "000644"),
    ("moodle-vhost.conf", "000644"),
    ("php-moodle.ini", "000644"),
    ("opcache-moodledata.blacklist", "000644"),
    ("php-fpm-moodle.conf", "000644"),
    ("moodle-queue-limit.php", "000644"),
    ("moodle-pg-service.conf", "000644"),
    ("moodle-logrotate.conf", "000644"),
    ("php-fpm-size.sh", "000644"),
    ("php-fpm-sizing.json", "000644"),
    ("moodle-cron.service", "000644"),
    ("moodle-cron.timer", "000644"),
    ("moodle-settings-refresh.service", "000644"),
    ("moodle-settings-refresh.timer", "000644"),
    ("moodle-metrics.php", "000644"),
    ("moodle-metrics.sh", "000755"),
    ("moodle-metrics.service", "000644"),
    ("moodle-metrics.timer", "000644"),
    ("ses-smtp-password.php", "000644"),
)
# Node logs shipped by the CloudWatch agent: file -> log group suffix (web_node.LOG_NAMES).
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
        Default=releases.LATEST,
        AllowedPattern=r"^(latest|(4\.5|5\.[0-9])\.[0-9]{1,2})$",
        ConstraintDescription="latest, or a Moodle release from 4.5 LTS upward such as 5.2.2 (the tag v5.2.2).",
        Description="latest (the newest stable release at the first install, then kept) or a release such as "
        "5.2.2. Setting a newer release upgrades the site; an older one is refused.",
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
MEMCACHED_STORE = {
    "component": "cachestore_memcached",
    "git": "https://github.com/moodlehq/moodle-cachestore_memcached.git",
    # The commit (master) pinned by a public, Renovate-tracked Moodle image; Moodle core dropped its
    # memcached store in 4.2 (MDL-77161), so the application cache on memcached needs this plugin.
    "commit": "db68d31ab5856cb55210478fdd452dc0cd6c6d05",
}
PLUGINS_KEY = "MoodlePlugins"
PLUGIN_FIELDS = frozenset({"component", "git", "commit", "s3", "sha256", "path"})
COMPONENT = re.compile(r"[a-z][a-z0-9]*_[a-z0-9_]+")
PLUGIN_PATH = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+)*")
S3_OBJECT = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+")


def plugins_json(entries: object) -> str:
    """The MoodlePlugins parameter value: the list as compact JSON, keys sorted (one text per list)."""
    return json.dumps(entries, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


MOODLE_PLUGINS = OperatorParameter(
    Parameter(
        PLUGINS_KEY,
        Type="String",
        Default=plugins_json([MEMCACHED_STORE]),
        AllowedPattern=r"^\[.*\]$",
        MaxLength=4096,
        ConstraintDescription="A JSON list of plugins (README: Plugins).",
        Description="Plugins every node installs: a JSON list of {component, git + commit | s3 + sha256}. The "
        "default is the memcached store the memcached application cache needs.",
    ),
    label="Plugins",
    group=GROUP_MOODLE,
)
PLUGINS_S3_PREFIX = OperatorParameter(
    Parameter(
        "MoodlePluginsS3Prefix",
        Type="String",
        Default="",
        AllowedPattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(\S*/)?)?$",
        ConstraintDescription="Empty, or s3://bucket/ or s3://bucket/prefix/.",
        Description="Where the plugins' S3 archives and git bundles are; the nodes may read only there.",
    ),
    label="Plugins S3 location",
    group=GROUP_MOODLE,
)
PARAMETERS = (
    MOODLE_VERSION,
    ADMIN_EMAIL,
    SITE_FULL_NAME,
    SITE_SHORT_NAME,
    CODE_S3_URI,
    CODE_SHA256,
    MOODLE_PLUGINS,
    PLUGINS_S3_PREFIX,
)


def plugin_entry_problem(entry: object, where: str, s3_prefix: str) -> tuple[str, str] | None:
    """(key, reason) when one MoodlePlugins entry is not a pinned plugin the nodes can install, else None."""
    if not isinstance(entry, dict):
        return where, "must be a mapping: component, then git + commit or s3 + sha256"
    unknown = sorted(set(entry) - PLUGIN_FIELDS)
    if unknown:
        return f"{where}.{unknown[0]}", f"unknown field (a plugin has {', '.join(sorted(PLUGIN_FIELDS))})"
    if not all(isinstance(value, str) for value in entry.values()):
        return where, "every field must be a string"
    if not COMPONENT.fullmatch(entry.get("component", "")):
        return f"{where}.component", "must be a Moodle component name such as mod_attendance"
    if ("git" in entry) == ("s3" in entry):
        return where, "give exactly one source: git (with commit) or s3 (with sha256)"
    if "git" in entry:
        if not re.fullmatch(r"[0-9a-f]{40}", entry.get("commit", "")):
            return f"{where}.commit", "a git source must be pinned to a 40-character commit id"
        if "sha256" in entry:
            return f"{where}.sha256", "belongs to an s3 archive; a git source is pinned by its commit"
        source, source_key = entry["git"], "git"
        if not re.fullmatch(r"(https://|s3://)\S+", source):
            return f"{where}.git", "must be an https git URL or s3:// of a git bundle"
    else:
        if not re.fullmatch(r"[0-9a-f]{64}", entry.get("sha256", "")):
            return f"{where}.sha256", "an s3 archive must be pinned by its SHA-256 (64 lower-case hex digits)"
        if "commit" in entry:
            return f"{where}.commit", "belongs to a git source; an s3 archive is pinned by its sha256"
        source, source_key = entry["s3"], "s3"
        if not (S3_OBJECT.fullmatch(source) and source.endswith((".zip", ".tar.gz"))):
            return f"{where}.s3", "must be s3://bucket/key of a .zip or .tar.gz"
    if source.startswith("s3://") and not (s3_prefix and source.startswith(s3_prefix)):
        return f"{where}.{source_key}", (
            f"is not under MoodlePluginsS3Prefix ({s3_prefix or 'empty'}), the only place the nodes may read"
        )
    if "path" in entry and not PLUGIN_PATH.fullmatch(entry["path"]):
        return f"{where}.path", "must be a directory inside Moodle's code, such as mod/assign/submission/x"
    return None


def plugins_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """The MoodlePlugins value: a JSON list of pinned plugins, each once, with the memcached store when the
    application cache runs memcached."""
    try:
        entries = json.loads(values[PLUGINS_KEY])
    except json.JSONDecodeError as error:
        return PLUGINS_KEY, f"is not valid JSON: {error.msg} (column {error.colno})"
    if not isinstance(entries, list):
        return PLUGINS_KEY, "must be a list of plugins"
    for index, entry in enumerate(entries):
        found = plugin_entry_problem(entry, f"{PLUGINS_KEY}[{index}]", values.get(PLUGINS_S3_PREFIX.name, ""))
        if found:
            return found
    components = [entry["component"] for entry in entries]
    repeated = sorted({c for c in components if components.count(c) > 1})
    if repeated:
        return PLUGINS_KEY, f"lists {repeated[0]} more than once"
    if values.get("ApplicationCacheEngine") == "memcached" and MEMCACHED_STORE["component"] not in components:
        return PLUGINS_KEY, (
            "needs the cachestore_memcached plugin when ApplicationCacheEngine is memcached (Moodle core has "
            "no memcached store since 4.2; README: Plugins)"
        )
    return None


def expand_plugins(entries: object, source: str) -> dict[str, object]:
    """A params file's MoodlePlugins: a YAML list becomes the parameter's JSON text (checked with the
    others by plugins_problem); a string is taken as that JSON text already."""
    if isinstance(entries, list):
        return {PLUGINS_KEY: plugins_json(entries)}
    return {PLUGINS_KEY: entries}


CHECKS = (
    CrossCheck(
        CODE_SHA256.name,
        "is required with MoodleCodeS3Uri (the nodes verify the bundle against it)",
        lambda v: not v.get(CODE_S3_URI.name) or bool(v.get(CODE_SHA256.name)),
    ),
    FindingCheck(releases.release_problem),
    FindingCheck(plugins_problem),
)
EXPANDERS = {PLUGINS_KEY: expand_plugins}


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


RELEASE_PARAMETER_NAME = "/moodle-cfn/${SiteName}/moodle-release"
RELEASE_OUTPUT = "MoodleReleaseParameter"


def add_release_parameter(template: Template) -> SsmParameter:
    """The SSM parameter showing the Moodle release the site runs, written by the node that installs or
    upgrades it (so an operator sees it without a shell). Ref gives its name."""
    return template.add_resource(
        SsmParameter(
            "MoodleReleaseParameter",
            Name=Sub(RELEASE_PARAMETER_NAME),
            Type="String",
            Value="not installed yet",
            Description="Moodle release this site runs (written by its web nodes)",
        )
    )


def release_parameter_arn() -> Sub:
    """ARN of the release parameter (a name that starts with '/' follows 'parameter' directly)."""
    return Sub(
        f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{RELEASE_PARAMETER_NAME}"
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
            # Each metric also once with the group alone, for the alarms per group (moodle_metrics.py): the
            # agent "aggregates metrics from all instances in each Auto Scaling group" on that dimension
            # (CloudWatch agent configuration file reference, aggregation_dimensions).
            "aggregation_dimensions": [["AutoScalingGroupName"]],
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
        "MOODLE_CFN_NODE_ID",
        "MOODLE_DIR",
        "MOODLE_PUBLIC",
        "BASH_COMMAND",
    }
)


def settings_names() -> set[str]:
    """The site.json keys the node scripts read (so the template and the scripts cannot drift): shell
    variables in moodle-node-setup.sh and the platform file it sources, `site KEY` lookups in
    moodle-node-ready.sh, moodle-node-drain.sh and moodle-metrics.sh."""
    setup = set(
        re.findall(
            r"\$\{?([A-Z][A-Z0-9_]+)",
            bootstrap.read("moodle-node-setup.sh") + bootstrap.read(releases.NODE_PLATFORM_FILE),
        )
    )
    lookups = "".join(
        bootstrap.read(name) for name in ("moodle-node-ready.sh", "moodle-node-drain.sh", "moodle-metrics.sh")
    )
    ready = set(re.findall(r"\bsite ([A-Z][A-Z0-9_]+)", lookups))
    return (setup - NOT_SITE_SETTINGS) | ready


def node_files_digest() -> str:
    """SHA-256 over every file cfn-init puts on a node verbatim: a new moodle-cfn release that changes one
    changes the launch template's data (user-data.sh carries it), and so rolls the fleet."""
    digest = hashlib.sha256()
    for name, mode in SHARED_FILES:
        digest.update(f"{name} {mode}\n".encode())
        digest.update(bootstrap.read(name).encode())
    return digest.hexdigest()
