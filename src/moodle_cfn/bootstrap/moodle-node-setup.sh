#!/bin/bash
# Turns a node into a Moodle web node of this site. Run by user-data.sh at first boot (and safe to run again,
# on a reboot or by hand), as root, after cfn-init wrote /etc/moodle-cfn/site.json and the files next to
# this script.
#
# Order: base packages -> instance metadata for root only -> moodledata and the code archives on EFS
# -> the release the site runs -> the PHP that release supports
# -> verified Moodle code and plugins -> settings from the secrets -> PHP and Apache -> (one node at a
# time, under a lock on EFS) install or upgrade, application cache -> cron and log shipping. What depends
# on the operating system (package names, paths, services) is in the platform file; Amazon Linux 2023
# unless MOODLE_CFN_PLATFORM names another.
set -Eeuo pipefail

readonly etc_dir=/etc/moodle-cfn
readonly share_dir=/usr/share/moodle-cfn
readonly moodledata=/var/moodledata
readonly state_dir=$moodledata/.moodle-cfn
# The Moodle code archives and their digests, on EFS through an access point of their own that the web
# server's user cannot reach (its identity is not 48, its directory is outside moodledata), mounted under
# a directory only root may enter: Moodle's PHP can neither rewrite the code future nodes unpack nor the
# digest they check it against.
readonly code_store_parent=/var/lib/moodle-cfn
readonly code_store=$code_store_parent/code
readonly releases_dir=$code_store/releases
readonly code_parent=/var/www
readonly moodle_dir=$code_parent/moodle
readonly local_cache=/var/cache/moodle
readonly settings_file=$etc_dir/moodle.json
# What OPcache never caches: Moodle's PHP files on the shared disk (opcache-moodledata.blacklist).
readonly opcache_blacklist=$etc_dir/opcache-moodledata.blacklist
readonly moodle_lines=$share_dir/moodle-lines.json
# The release this site runs, recorded by the node that installed or upgraded it (and by the first node
# of a site whose MoodleVersion is `latest`).
readonly release_record=$state_dir/moodle-release
# The code the database runs: {release, archive} of the archive on EFS whose code last installed, upgraded
# or matched the database. A node asked for older code (a stack rollback after an upgrade) serves this one.
readonly database_code_record=$state_dir/database-code.json
# Who turned maintenance mode on, to upgrade what: written before `maintenance.php --enable`, removed
# after `--disable`. Maintenance mode without this file is the operator's, and is left alone.
readonly maintenance_owner=$state_dir/maintenance-owner.json
readonly maintenance_page=$moodledata/data/climaintenance.html
# Present from the start of the first install until it completed: a node that finds it (and Moodle's
# tables) knows the install was interrupted, and starts it again.
readonly install_marker=$state_dir/install-started
# This node, in the records above (moodle-node-ready.sh passes the instance id).
readonly node_id=${MOODLE_CFN_NODE_ID:-$(hostname)}

# shellcheck source-path=SCRIPTDIR source=platform-al2023.sh
source "${MOODLE_CFN_PLATFORM:-$share_dir/platform-al2023.sh}"
# shellcheck source-path=SCRIPTDIR source=moodle-release.sh
source "$share_dir/moodle-release.sh"
# shellcheck source-path=SCRIPTDIR source=moodle-plugins.sh
source "$share_dir/moodle-plugins.sh"
# shellcheck source-path=SCRIPTDIR source=php-fpm-size.sh
source "$share_dir/php-fpm-size.sh"

# To stderr, so that a line logged inside a command substitution or a redirected call still reaches the log.
log() { printf '%s moodle-node-setup: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# A failure ends the run with one line that says what failed: die() for the failures we expect (a secret,
# the database), the ERR trap for anything else. The note file keeps a subshell's die() from being
# reported a second time by its parent.
failure_note=$(mktemp)
readonly failure_note
current_step="reading the site settings"
die() {
  log "FAILED while $current_step: $*"
  echo reported > "$failure_note"
  exit 1
}
# shellcheck disable=SC2317  # called by the ERR trap
on_error() {
  local status=$1 command=$2
  [[ -s $failure_note ]] || log "FAILED while $current_step: \`$command\` exited $status"
  echo reported > "$failure_note"
}
trap 'on_error $? "$BASH_COMMAND"' ERR
trap 'rm -f "$failure_note"' EXIT
step() {
  current_step=$1
  log "$1"
}

# Every site setting becomes a shell variable of the same name. cfn-init writes site.json from the
# template's parameters as JSON, and @sh quotes each value for bash, so any character an operator typed
# arrives unchanged.
site_settings=$(jq -r 'to_entries[] | "\(.key)=\(.value | tostring | @sh)"' "$etc_dir/site.json") ||
  die "cannot read $etc_dir/site.json (written by cfn-init)"
eval "$site_settings"

# The current version, named: after a rotation the secret has two (README: Moodle's database user and its
# rotation).
secret() {
  local value
  value=$(aws secretsmanager get-secret-value --region "$AWS_REGION" --secret-id "$1" --version-stage AWSCURRENT \
    --query SecretString --output text 2>&1) || die "cannot read the secret $1: $(tail -n 1 <<< "$value")"
  printf '%s' "$value"
}

uses_valkey() { [[ "$SESSION_CACHE_ENGINE" == valkey || "$APPLICATION_CACHE_ENGINE" == valkey ]]; }

install_base_packages() {
  step "installing Apache and tools"
  platform_install_base_packages
}

# Only root may reach the instance metadata service, which hands out the instance role's credentials: the
# hop limit of 1 keeps containers off it, not local processes, and PHP runs as the web server's user. A
# packet filter on the socket's owner, as the EC2 User Guide does with iptables ("Limit access to IMDS",
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html). Every AWS call
# a node makes is root's (this script, moodle-node-ready.sh, the CloudWatch agent, the SSM agent).
protect_instance_metadata() {
  step "letting only root reach the instance metadata service ($imds_url)"
  local authority=${imds_url#*://} host port=80
  authority=${authority%%/*}
  host=${authority%:*}
  [[ $authority == *:* ]] && port=${authority##*:}
  install_rendered moodle-metadata.nft "$metadata_rules_path" "HOST=$host" "PORT=$port"
  nft -f "$metadata_rules_path" || die "cannot load the packet filter $metadata_rules_path"
  platform_persist_packet_filter "$metadata_rules_path"
  if runuser -u "$web_user" -- curl -sS -m 5 -o /dev/null -X PUT "$imds_url/latest/api/token" \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' 2> /dev/null; then
    die "$web_user still reaches the instance metadata service at $imds_url after $metadata_rules_path"
  fi
}

# Set by choose_release: the Moodle release (X.Y.Z) this node installs, and the archive on EFS it serves
# instead of building its own when it was asked for older code than the database runs.
moodle_release=""
database_archive=""

choose_release() {
  step "choosing the Moodle release (MoodleVersion $MOODLE_VERSION)"
  if [[ $MOODLE_VERSION == latest && -n ${MOODLE_CODE_S3_URI:-} ]]; then
    die "MoodleVersion latest cannot describe a code bundle: set it to the release in $MOODLE_CODE_S3_URI"
  fi
  local installed="" exists setting postgresql
  postgresql=$(psql_moodle <<< "SELECT current_setting('server_version_num')::int / 10000")
  exists=$(psql_moodle <<< "SELECT to_regclass('public.mdl_config') IS NOT NULL")
  if [[ $exists == t ]]; then
    setting=$(psql_moodle <<< "SELECT value FROM mdl_config WHERE name = 'release'")
    installed=$(release_of_setting "$setting")
  fi
  local database_code=""
  [[ -s $database_code_record ]] && database_code=$(jq -r .release "$database_code_record")
  if [[ $MOODLE_VERSION != latest && -n $database_code ]] && release_older "$MOODLE_VERSION" "$database_code"; then
    # A stack rollback after an upgrade (or an older MoodleVersion): Moodle cannot go back, the node can
    # still serve. It runs the code the database runs, from its archive on EFS.
    moodle_release=$database_code
    database_archive=$(jq -r .archive "$database_code_record")
    log "MoodleVersion $MOODLE_VERSION is older than the $database_code the database runs: serving" \
      "$database_archive, the code the database runs (a rollback does not downgrade Moodle; README: What happens when)"
    return
  fi
  # The lock's file is opened inside the substitution: a redirection after it would not reach its subshell.
  moodle_release=$(
    exec 9> "$state_dir/release.lock"
    flock 9
    resolve_release "$MOODLE_VERSION" "$release_record" "$installed" "$moodle_lines" "$postgresql"
  )
  log "this node runs Moodle $moodle_release${installed:+ (the database runs $installed)}"
}

install_php() {
  local php with_redis=false
  php=$(php_for_release "$moodle_release" "$moodle_lines" "${platform_php_versions[@]}")
  step "installing PHP $php for Moodle $moodle_release"
  uses_valkey && with_redis=true
  platform_install_php "$php" "$with_redis"
}

mount_moodledata() {
  step "mounting moodledata (EFS $FILE_SYSTEM_ID through $ACCESS_POINT_ID)"
  install -d -m 0755 "$moodledata"
  platform_mount_shared "$FILE_SYSTEM_ID" "$ACCESS_POINT_ID" "$moodledata"
  # The access point maps every node to the web server user; these directories belong to it.
  install -d -o "$web_user" -g "$web_user" -m 02770 \
    "$moodledata/data" "$moodledata/cache" "$moodledata/temp" "$moodledata/backuptemp"
  install -d -m 0755 "$state_dir"
  install -d -o "$web_user" -g "$web_user" -m 0750 "$local_cache"
}

mount_code_store() {
  step "mounting the code archives (EFS $FILE_SYSTEM_ID through $CODE_ACCESS_POINT_ID)"
  install -d -m 0700 "$code_store_parent"
  install -d -m 0700 "$code_store"
  platform_mount_shared "$FILE_SYSTEM_ID" "$CODE_ACCESS_POINT_ID" "$code_store"
  install -d -m 0700 "$releases_dir"
}

# What makes the code: the release, the operator's bundle, and the plugins with their pins. A change to
# any of them is a new release (a rebuilt bundle with the same MoodleVersion included).
release_id() {
  printf '%s\n' "$moodle_release" "${MOODLE_CODE_S3_URI:-upstream}" "${MOODLE_CODE_SHA256:-}" "$MOODLE_PLUGINS" |
    sha256sum | cut -c 1-16
}

# The first node to need a release builds it once (Moodle plus the pinned plugins), keeps the archive and
# its SHA-256 on EFS; every node unpacks that archive, so all nodes run byte-identical code and a
# scale-out touches neither the code host nor the bundle bucket.
build_release() {
  local archive=$1 work
  work=$(mktemp -d)
  install -d "$work/moodle"
  if [[ -n ${MOODLE_CODE_S3_URI:-} ]]; then
    log "downloading the operator's code bundle $MOODLE_CODE_S3_URI"
    aws s3 cp --quiet --region "$AWS_REGION" "$MOODLE_CODE_S3_URI" "$work/moodle.tar.gz" ||
      die "cannot download $MOODLE_CODE_S3_URI"
    echo "$MOODLE_CODE_SHA256  $work/moodle.tar.gz" | sha256sum -c --quiet - ||
      die "$MOODLE_CODE_S3_URI does not match MoodleCodeSha256 $MOODLE_CODE_SHA256"
    tar -xzf "$work/moodle.tar.gz" -C "$work/moodle" --strip-components=1
  else
    log "cloning Moodle v$moodle_release (git verifies every object it receives)"
    git clone --quiet --depth 1 --branch "v$moodle_release" "$moodle_git_url" "$work/moodle" ||
      die "cannot clone Moodle v$moodle_release"
    rm -rf "$work/moodle/.git"
  fi
  add_plugins "$work/moodle" "$work" "$MOODLE_PLUGINS" "$APPLICATION_CACHE_ENGINE"
  tar -czf "$archive.partial" -C "$work" moodle
  mv "$archive.partial" "$archive"
  (cd "$(dirname "$archive")" && sha256sum "$(basename "$archive")" > "$archive.sha256.partial")
  mv "$archive.sha256.partial" "$archive.sha256"
  rm -rf "$work"
}

# The archive (name without .tar.gz) of this node's code: the one the inputs make, or the database's.
code_archive() {
  if [[ -n $database_archive ]]; then
    printf '%s\n' "$database_archive"
  else
    printf 'moodle-%s-%s\n' "$moodle_release" "$(release_id)"
  fi
}

fetch_code() {
  local name
  name=$(code_archive)
  step "getting Moodle $moodle_release ($name)"
  local archive=$releases_dir/$name.tar.gz
  if [[ -z $database_archive ]]; then
    (
      flock 9
      [[ -s $archive.sha256 ]] || build_release "$archive"
    ) 9> "$code_store/code.lock"
  fi
  install_archive "$name"
}

# Unpack a verified archive from EFS into its own directory (once) and point /var/www/moodle at it.
install_archive() {
  local name=$1
  local archive=$releases_dir/$name.tar.gz
  [[ -s $archive.sha256 ]] || die "$archive is not on EFS (a release built before the code archives had" \
    "their own access point is built again only by a node that is asked for it)"
  (cd "$releases_dir" && sha256sum -c --quiet --status "$archive.sha256") ||
    die "$archive does not match its SHA-256 in $archive.sha256: refusing to run it (replace the node" \
      "after removing both files, so that the next node builds the release again)"
  local release=$code_parent/$name
  if [[ ! -d $release ]]; then
    log "installing $name in $release"
    local staging
    staging=$(mktemp -d "$code_parent/.moodle-XXXXXX")
    tar -xzf "$archive" -C "$staging" --strip-components=1
    install -m 0644 "$share_dir/config.php" "$staging/config.php"
    chown -R root:root "$staging"
    chmod -R u=rwX,go=rX "$staging"
    mv "$staging" "$release"
  fi
  ln -sfn "$release" "$moodle_dir"
}

# The current node list of a memcached cluster, as host:port,host:port (it changes when the cluster is resized).
memcached_nodes() {
  local nodes
  nodes=$(aws elasticache describe-cache-clusters --region "$AWS_REGION" --cache-cluster-id "$1" \
    --show-cache-node-info --query 'CacheClusters[0].CacheNodes[].[Endpoint.Address, Endpoint.Port]' \
    --output text 2>&1) || die "cannot list the nodes of the cache cluster $1: $(tail -n 1 <<< "$nodes")"
  awk '{printf "%s%s:%s", sep, $1, $2; sep=","}' <<< "$nodes"
}

# One cache's settings for config.php and muc-configure.php. valkey: the bare endpoint (Moodle adds the
# TLS scheme itself and splits host:port on ':') and the system CA bundle, so the server is verified.
# Secrets reach jq on stdin, never as arguments (/proc/PID/cmdline is readable by every local user).
cache_settings() {
  local engine=$1 id=$2 endpoint=$3 port=$4 auth_arn=$5
  if [[ $engine == memcached ]]; then
    local servers
    servers=$(memcached_nodes "$id") || exit 1  # inside $(...): errexit does not reach
    jq -n --arg servers "$servers" '{engine: "memcached", servers: ($servers | split(","))}'
  else
    local auth
    auth=$(secret "$auth_arn") || exit 1
    jq --arg host "$endpoint" --arg port "$port" --arg cafile "$ca_bundle" \
      '{engine: "valkey", host: $host, port: ($port | tonumber), auth: .token, cafile: $cafile}' <<< "$auth"
  fi
}

# Moodle's outgoing mail (README: E-mail): SES's SMTP endpoint with the password derived from the stack's
# IAM key (ses-smtp-password.php), the operator's relay with its own login, or none (no domain). The same
# on every node. Secrets pass on stdin only, as everywhere in this script.
mail_settings() {
  local credentials user password=""
  case $MAIL_CREDENTIALS in
    none)
      jq -n --arg noreply "$MAIL_NOREPLY_ADDRESS" '{noreplyaddress: $noreply}'
      return
      ;;
    ses)
      credentials=$(secret "$MAIL_SECRET_ARN") || exit 1
      password=$(jq -j .secret_access_key <<< "$credentials" | php "$share_dir/ses-smtp-password.php" "$AWS_REGION") ||
        die "cannot derive the SES SMTP password from the secret $MAIL_SECRET_ARN"
      ;;
    relay)
      credentials=$(secret "$MAIL_SECRET_ARN") || exit 1
      password=$(jq -j '.password // empty' <<< "$credentials")
      ;;
    *) die "site.json: MAIL_CREDENTIALS is '$MAIL_CREDENTIALS' (ses, relay or none)" ;;
  esac
  user=$(jq -r '.username // empty' <<< "$credentials")
  [[ -n $user && -n $password ]] || die "the secret $MAIL_SECRET_ARN has no username and password (or SES key)"
  # The password as a JSON string on stdin, then the rest as arguments (none of them secret).
  jq -Rs . <<< "$password" | jq --arg hosts "$MAIL_SMTP_HOST" --arg user "$user" \
    --arg noreply "$MAIL_NOREPLY_ADDRESS" --arg domains "$MAIL_ALLOWED_DOMAINS" \
    '{smtphosts: $hosts, user: $user, password: rtrimstr("\n"), noreplyaddress: $noreply,
      allowedemaildomains: $domains}'
}

# moodle.json replaced atomically with what jq makes of its arguments and stdin, readable by the web
# server's group only. A jq that fails leaves the current file in place.
write_settings_file() {
  local previous
  previous=$(umask)
  umask 027
  jq "$@" > "$settings_file.partial"
  chgrp "$web_user" "$settings_file.partial"
  mv "$settings_file.partial" "$settings_file"
  umask "$previous"
}

write_settings() {
  step "writing $settings_file from the stack's outputs and secrets"
  local database session application mail public=$moodle_dir router=false
  database=$(secret "$DATABASE_APP_SECRET_ARN")
  mail=$(mail_settings)
  session=$(cache_settings "$SESSION_CACHE_ENGINE" "$SESSION_CACHE_ID" "$SESSION_CACHE_ENDPOINT" \
    "$SESSION_CACHE_PORT" "$SESSION_CACHE_AUTH_SECRET_ARN")
  application=$(cache_settings "$APPLICATION_CACHE_ENGINE" "$APPLICATION_CACHE_ID" \
    "$APPLICATION_CACHE_ENDPOINT" "$APPLICATION_CACHE_PORT" "$APPLICATION_CACHE_AUTH_SECRET_ARN")
  [[ -d $moodle_dir/public ]] && public=$moodle_dir/public
  [[ ${moodle_release%%.*} -ge 5 ]] && router=true
  # The secrets on stdin (the login, then each cache's settings), never as arguments.
  # shellcheck disable=SC2016  # a jq program: its $names are jq's
  printf '%s\n' "$database" "$session" "$application" "$mail" | write_settings_file -s \
    --arg wwwroot "$WWWROOT" --arg host "$DATABASE_HOST" --arg port "$DATABASE_PORT" --arg name "$DATABASE_NAME" \
    --arg reader "${DATABASE_READER_HOST:-}" \
    --argjson router "$router" --arg data "$moodledata" --arg localcache "$local_cache" \
    '.[0] as $credentials | .[1] as $session | .[2] as $application |
     {wwwroot: $wwwroot, router: $router,
      database: {host: $host, reader_host: $reader, port: ($port | tonumber), name: $name,
                 user: $credentials.username, password: $credentials.password},
      paths: {dataroot: ($data + "/data"), cachedir: ($data + "/cache"), tempdir: ($data + "/temp"),
              backuptempdir: ($data + "/backuptemp"), localcachedir: $localcache},
      session: $session, application: $application, mail: .[3]}'
  umask 027
  printf 'MOODLE_DIR=%s\nMOODLE_PUBLIC=%s\nMOODLE_CFN_SETTINGS=%s\n' "$moodle_dir" "$public" "$settings_file" \
    > "$etc_dir/runtime.env.partial"
  mv "$etc_dir/runtime.env.partial" "$etc_dir/runtime.env"
  umask 022
}

# A shipped file with its @NAME@ markers replaced, installed where the platform keeps it.
install_rendered() {
  local source=$1 target=$2
  shift 2
  local expressions=(-e "") pair
  for pair in "$@"; do expressions+=(-e "s|@${pair%%=*}@|${pair#*=}|g"); done
  install -d "$(dirname "$target")"
  sed "${expressions[@]}" "$share_dir/$source" > "$target.partial"
  chmod 0644 "$target.partial"
  mv "$target.partial" "$target"
}

configure_web_server() {
  step "configuring PHP-FPM and Apache (event MPM)"
  # shellcheck source=/dev/null
  source "$etc_dir/runtime.env"
  local router=""
  [[ ${moodle_release%%.*} -ge 5 ]] && router="FallbackResource /r.php"
  install_rendered opcache-moodledata.blacklist "$opcache_blacklist" "MOODLEDATA=$moodledata" \
    "DATAROOT=$moodledata/data"
  install_rendered php-moodle.ini "$php_ini_path" "OPCACHE_BLACKLIST=$opcache_blacklist"
  local memory_mib vcpus
  memory_mib=$(platform_memory_mib)
  vcpus=$(platform_vcpus)
  size_php_fpm_pool "$memory_mib" "$vcpus" "$share_dir/php-fpm-sizing.json" "$share_dir/php-moodle.ini"
  log "PHP-FPM: $fpm_max_children workers and $fpm_listen_backlog queued pages for $memory_mib MiB and $vcpus vCPUs"
  install_rendered php-fpm-moodle.conf "$fpm_pool_path" "WEB_USER=$web_user" "FPM_SOCKET=$fpm_socket" \
    "FPM_HEALTH_SOCKET=$fpm_health_socket" "PHP_ERROR_LOG=$php_error_log" "MAX_CHILDREN=$fpm_max_children" \
    "START_SERVERS=$fpm_start_servers" "MIN_SPARE_SERVERS=$fpm_min_spare_servers" \
    "MAX_SPARE_SERVERS=$fpm_max_spare_servers" "LISTEN_BACKLOG=$fpm_listen_backlog" \
    "QUEUE_SECONDS=$fpm_queue_seconds" "PHP_SLOW_LOG=${php_error_log%/*}/www-slow.log"
  install_rendered moodle-vhost.conf "$vhost_path" "DOCUMENT_ROOT=$MOODLE_PUBLIC" "ROUTER=$router" \
    "FPM_SOCKET=$fpm_socket" "FPM_HEALTH_SOCKET=$fpm_health_socket" "HEALTH_PATH=$HEALTH_CHECK_PATH" \
    "PAGE_CONNECTIONS=$page_connections" "APACHE_THREADS=$apache_threads" \
    "APACHE_SPARE_THREADS=$apache_spare_threads"
  platform_start_web
}

as_web_user() { runuser -u "$web_user" -- env MOODLE_DIR="$moodle_dir" MOODLE_CFN_SETTINGS="$settings_file" "$@"; }

# psql as Moodle's own user, TLS required (the cluster forces it); SQL on stdin. The role was made by the
# stack (its database-role custom resource): web nodes never hold the master secret.
psql_moodle() {
  local credentials output
  # Called inside $(...), where errexit does not reach: stop here, once reported.
  credentials=$(secret "$DATABASE_APP_SECRET_ARN") || exit 1
  output=$(PGPASSWORD=$(jq -r .password <<< "$credentials") PGSSLMODE=require PGCONNECT_TIMEOUT=10 \
    psql -h "$DATABASE_HOST" -p "$DATABASE_PORT" -U "$(jq -r .username <<< "$credentials")" -d "$DATABASE_NAME" \
    -v ON_ERROR_STOP=1 -qtAX 2>&1) ||
    die "the database $DATABASE_HOST:$DATABASE_PORT/$DATABASE_NAME as Moodle's user: $(head -n 1 <<< "$output")"
  printf '%s' "$output"
}

# Exactly one node at a time gets here (flock on EFS); every check is made inside the lock. Each fault a
# node can leave behind (an interrupted first install, maintenance mode left on, a database upgraded by
# newer code) is repaired by the next node that gets here, or stops it with one line that says what to do.
install_or_upgrade() {
  step "installing or upgrading the database (one node at a time)"
  # shellcheck source=/dev/null
  source "$etc_dir/runtime.env"
  (
    flock 9
    local installed
    installed=$(psql_moodle <<< "SELECT to_regclass('public.mdl_config') IS NOT NULL")
    if [[ $installed == t && -e $install_marker ]]; then
      reset_interrupted_install
      installed=f
    fi
    if [[ $installed != t ]]; then
      install_site
    else
      [[ "$(psql_moodle <<< "SELECT count(*) FROM mdl_config WHERE name = 'rolesactive'")" == 1 ]] ||
        die "the database holds a Moodle install that never finished and that this site did not start" \
          "(no rolesactive setting, no $install_marker): empty the database or restore a complete one"
      bring_code_and_database_together
    fi
    as_web_user php -d apc.enable_cli=1 "$share_dir/muc-configure.php"
    record_release
  ) 9> "$state_dir/install.lock"
}

install_site() {
  log "installing the Moodle database (first node of the site)"
  jq -n --arg node "$node_id" --arg at "$(date -u +%FT%TZ)" '{node: $node, at: $at}' > "$install_marker"
  local admin
  admin=$(secret "$ADMIN_SECRET_ARN")
  # The password goes on stdin, never in an argument list (/proc/PID/cmdline is readable by every local
  # user): moodle-install.php hands it to Moodle's install_database.php inside PHP.
  jq -j .password <<< "$admin" | as_web_user php "$share_dir/moodle-install.php" --agree-license \
    --adminuser=admin --adminemail="$ADMIN_EMAIL" --fullname="$SITE_FULL_NAME" --shortname="$SITE_SHORT_NAME"
  rm -f "$install_marker"
}

# A first install that died part-way (the node killed, the database lost): nothing but the install has
# used these tables (the site never went into service), so they are dropped and the install starts again.
reset_interrupted_install() {
  log "the first install of this site did not finish (started $(jq -r '"by \(.node) at \(.at)"' "$install_marker")):" \
    "dropping its tables and installing again"
  psql_moodle > /dev/null <<'SQL'
DO $reset$
DECLARE t text;
BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'mdl\_%' LOOP
    EXECUTE format('DROP TABLE public.%I CASCADE', t);
  END LOOP;
END
$reset$;
SQL
  # What the interrupted install cached (the MUC configuration among it) goes with its tables.
  rm -rf "${moodledata:?}/data/muc" "${moodledata:?}/cache/"* "${local_cache:?}/"*
}

# Whether Moodle accepts this node's code for the database: 0 same versions, 2 an upgrade to run,
# 1 older code than the database (or another refusal, said above by Moodle).
upgrade_pending() {
  local pending=0
  as_web_user php "$moodle_dir/admin/cli/upgrade.php" --is-pending > /dev/null || pending=$?
  printf '%s\n' "$pending"
}

# Components whose code here is older than the database's record of them (moodle-downgrades.php); none
# when this code is the database's or newer.
older_components() {
  local older status=0
  older=$(as_web_user php "$share_dir/moodle-downgrades.php") || status=$?
  [[ $status == 0 || $status == 3 ]] || die "cannot compare this code's versions with the database's (exit $status)"
  printf '%s' "$older"
}

bring_code_and_database_together() {
  local pending older=""
  pending=$(upgrade_pending)
  [[ $pending == 2 ]] && older=$(older_components)
  if [[ $pending == 1 || -n $older ]]; then
    [[ -n $older ]] && log "older than the database here: $(paste -sd ',' <<< "$older")"
    serve_database_code
    pending=$(upgrade_pending)
  fi
  case $pending in
    0) ;;
    2) upgrade_site ;;
    *) die "Moodle refuses this code for this database (upgrade.php --is-pending exited $pending; said above)" ;;
  esac
  if [[ -e $maintenance_page && -e $maintenance_owner ]]; then
    log "maintenance mode was left on by $(jq -r '"\(.node) (upgrading to \(.archive) since \(.at))"' "$maintenance_owner");" \
      "the database needs nothing more from this code: turning it off"
    maintenance_off
  elif [[ -e $maintenance_page ]]; then
    log "maintenance mode is on and no node of this site turned it on (the operator's): leaving it on"
  fi
}

# Older code than the database: a stack rollback after an upgrade (same MoodleVersion, an older bundle or
# plugin pin). The node serves the code the database runs, from its archive on EFS, instead of failing:
# the code of an upgrade that stopped part-way if one did (its maintenance record), else the recorded one.
serve_database_code() {
  local mine record=$database_code_record database
  mine=$(code_archive)
  [[ -e $maintenance_page && -s $maintenance_owner ]] && record=$maintenance_owner
  [[ -s $record ]] || die "Moodle refuses this code: it is older than the database" \
    "(upgrade.php --is-pending exited 1) and no archive of the database's code is recorded in $record"
  database=$(jq -r .archive "$record")
  [[ $database != "$mine" ]] || die "Moodle refuses $mine, the code the database was recorded with (said above)"
  log "$mine is older than what the database runs: serving $database, the code the database runs" \
    "(a rollback does not downgrade Moodle; README: What happens when)"
  moodle_release=$(jq -r .release "$record")
  database_archive=$database
  install_archive "$database"
  write_settings
  configure_web_server
  # shellcheck source=/dev/null
  source "$etc_dir/runtime.env"
}

# What an upgrade changes first: the versions Moodle records for itself and each plugin, its tables.
database_fingerprint() {
  psql_moodle <<'SQL'
SELECT md5(concat_ws('|',
  (SELECT string_agg(name || '=' || value, ',' ORDER BY name) FROM mdl_config
    WHERE name IN ('version', 'release', 'allversionshash')),
  (SELECT string_agg(plugin || '=' || value, ',' ORDER BY plugin) FROM mdl_config_plugins WHERE name = 'version'),
  (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')))
SQL
}

maintenance_on() {
  jq -n --arg node "$node_id" --arg release "$moodle_release" --arg archive "$(code_archive)" \
    --arg at "$(date -u +%FT%TZ)" '{node: $node, release: $release, archive: $archive, at: $at}' \
    > "$maintenance_owner.partial"
  mv "$maintenance_owner.partial" "$maintenance_owner"
  as_web_user php "$moodle_dir/admin/cli/maintenance.php" --enable
}

maintenance_off() {
  as_web_user php "$moodle_dir/admin/cli/maintenance.php" --disable
  rm -f "$maintenance_owner"
}

# The upgrade, under maintenance mode. When it fails, the database says whether anything was committed:
# nothing (a plugin's dependency or an environment check refused it) ends maintenance mode, so the nodes
# on the old code keep serving; something leaves maintenance mode on, with one line saying so.
upgrade_site() {
  local name before output status=0
  name=$(code_archive)
  log "upgrading Moodle to release $name (maintenance mode on for every node)"
  before=$(database_fingerprint)
  maintenance_on
  output=$(mktemp)
  as_web_user php "$moodle_dir/admin/cli/upgrade.php" --non-interactive > "$output" 2>&1 || status=$?
  cat "$output" >&2
  if [[ $status != 0 ]]; then
    local reason
    # Moodle's own error lines ("!!! ... !!!", from cli_error) say why; else the last lines it printed.
    reason=$({ grep '^!!! ' "$output" || grep -v '^[[:space:]!-]*$' "$output" | tail -n 2; } | head -n 2 |
      sed 's/^!* *//; s/ *!*$//' | paste -sd ' ')
    rm -f "$output"
    if [[ "$(database_fingerprint)" == "$before" ]]; then
      maintenance_off
      die "the upgrade to $name failed before changing the database (upgrade.php exited $status: $reason);" \
        "maintenance mode is off and the site keeps serving the code it ran"
    fi
    die "the upgrade to $name failed after changing the database (upgrade.php exited $status: $reason):" \
      "maintenance mode stays on; fix the cause and update the stack again, or restore the snapshot taken" \
      "before the upgrade (README: What happens when an upgrade fails)"
  fi
  rm -f "$output"
  record_database_code
  maintenance_off
  as_web_user php "$moodle_dir/admin/cli/purge_caches.php"
}

record_database_code() {
  jq -n --arg release "$moodle_release" --arg archive "$(code_archive)" '{release: $release, archive: $archive}' \
    > "$database_code_record.partial"
  mv "$database_code_record.partial" "$database_code_record"
}

# The release the database now runs: on EFS for the next nodes (the release, and the archive of the code
# that matches the database), and in the site's SSM parameter for the operator.
record_release() {
  local recorded=""
  [[ -s $release_record ]] && recorded=$(< "$release_record")
  if [[ -z $recorded ]] || release_older "$recorded" "$moodle_release"; then
    printf '%s\n' "$moodle_release" > "$release_record.partial"
    mv "$release_record.partial" "$release_record"
  fi
  record_database_code
  local published
  published=$(aws ssm put-parameter --region "$AWS_REGION" --name "$RELEASE_PARAMETER" --type String --overwrite \
    --value "$moodle_release" 2>&1) ||
    log "warning: cannot publish the release to the SSM parameter $RELEASE_PARAMETER: $(tail -n 1 <<< "$published")"
}

# moodle.json with a jq filter applied to [moodle.json, the document on stdin]: a secret travels on
# stdin, never as an argument.
update_settings() { write_settings_file -s "$1" "$settings_file" -; }

# What changes under a running node (moodle-settings-refresh.timer, every 5 minutes), brought to
# moodle.json, where config.php reads it at the next request:
#   - Moodle's login rotates (Secrets Manager, alternating users); the previous one keeps working until
#     the rotation after it; open connections stay logged in;
#   - a memcached cluster resized (ElastiCache adds or removes nodes) has a new node list. The sessions'
#     list is read by config.php; the application cache's is in Moodle's cache configuration on EFS,
#     shared by every node, rewritten by each node that sees the change (under the install lock; the
#     same settings each time).
refresh_settings() {
  step "bringing moodle.json up to date with the login's secret and the caches' nodes"
  [[ -s $settings_file ]] || die "$settings_file is missing: this node's setup has not run"
  local credentials
  credentials=$(secret "$DATABASE_APP_SECRET_ARN")
  # Both documents on stdin (the password never an argument): moodle.json, then the secret.
  if [[ $(jq -s '.[0].database.user == .[1].username and .[0].database.password == .[1].password' \
    "$settings_file" - <<< "$credentials") != true ]]; then
    update_settings '.[0].database.user = .[1].username | .[0].database.password = .[1].password | .[0]' \
      <<< "$credentials"
    log "Moodle now logs in to the database as $(jq -r .username <<< "$credentials")"
  fi
  refresh_cache_nodes session "$SESSION_CACHE_ENGINE" "$SESSION_CACHE_ID"
  refresh_cache_nodes application "$APPLICATION_CACHE_ENGINE" "$APPLICATION_CACHE_ID"
}

refresh_cache_nodes() {
  local role=$1 engine=$2 id=$3 servers
  [[ $engine == memcached ]] || return 0
  servers=$(memcached_nodes "$id")
  [[ $(jq -r --arg role "$role" '.[$role].servers | join(",")' "$settings_file") != "$servers" ]] || return 0
  update_settings '.[0][.[1].role].servers = .[1].servers | .[0]' \
    <<< "$(jq -n --arg role "$role" --arg servers "$servers" '{role: $role, servers: ($servers | split(","))}')"
  log "the $role cache cluster $id now has the nodes $servers"
  if [[ $role == application ]]; then
    # shellcheck source=/dev/null
    source "$etc_dir/runtime.env"
    (
      flock 9
      as_web_user php -d apc.enable_cli=1 "$share_dir/muc-configure.php"
    ) 9> "$state_dir/install.lock"
  fi
}

start_cron_and_logs() {
  step "starting cron and log shipping"
  local unit
  for unit in moodle-cron.service moodle-cron.timer moodle-settings-refresh.service moodle-settings-refresh.timer \
    moodle-node-drain.service moodle-metrics.service moodle-metrics.timer; do
    install_rendered "$unit" "/etc/systemd/system/$unit" "WEB_USER=$web_user"
  done
  install_rendered moodle-logrotate.conf "$logrotate_path"
  platform_start_cron
  platform_start_log_shipping "$etc_dir/cloudwatch-agent.json"
}

main() {
  if [[ ${1:-} == --refresh-settings ]]; then
    refresh_settings
    return
  fi
  install_base_packages
  protect_instance_metadata
  mount_moodledata
  mount_code_store
  choose_release
  install_php
  fetch_code
  write_settings
  configure_web_server
  install_or_upgrade
  start_cron_and_logs
  log "node ready"
}

main "$@"
