#!/bin/bash
# Turns an Amazon Linux 2023 node into a Moodle web node of this site. Run by user-data.sh at first boot,
# as root, after cfn-init wrote /etc/moodle-cfn/site.env and the files next to this script.
#
# Order: packages -> moodledata on EFS -> verified Moodle code -> settings from the secrets -> PHP and
# Apache -> (one node at a time, under a lock on EFS) database user, install or upgrade, application
# cache -> cron and log shipping. Every step is safe to run again.
set -euo pipefail

readonly etc_dir=/etc/moodle-cfn
readonly share_dir=/usr/share/moodle-cfn
readonly moodledata=/var/moodledata
readonly state_dir=$moodledata/.moodle-cfn
readonly code_parent=/var/www
readonly moodle_dir=$code_parent/moodle
readonly settings_file=$etc_dir/moodle.json

# shellcheck source=/dev/null
source "$etc_dir/site.env"

log() { printf '%s moodle-node-setup: %s\n' "$(date -u +%FT%TZ)" "$*"; }

secret() { aws secretsmanager get-secret-value --region "$AWS_REGION" --secret-id "$1" --query SecretString --output text; }

uses_valkey() { [[ "$SESSION_CACHE_ENGINE" == valkey || "$APPLICATION_CACHE_ENGINE" == valkey ]]; }

install_packages() {
  log "installing Apache, PHP 8.3 and tools"
  dnf install -y --setopt=install_weak_deps=False \
    httpd php8.3-fpm php8.3-cli php8.3-common php8.3-opcache php8.3-pgsql php8.3-intl php8.3-mbstring \
    php8.3-gd php8.3-soap php8.3-sodium php8.3-xml php8.3-zip php8.3-pecl-apcu php8.3-pecl-memcached \
    amazon-efs-utils amazon-cloudwatch-agent postgresql16 jq git tar
  if uses_valkey; then
    # phpredis is not packaged for Amazon Linux 2023: the one option that compiles at boot (about a minute).
    log "compiling phpredis for the valkey cache"
    dnf install -y php8.3-devel php-pear gcc make
    if ! php -m | grep -qx redis; then
      printf '\n' | pecl install redis
      echo 'extension=redis.so' > /etc/php.d/40-redis.ini
    fi
  fi
}

mount_moodledata() {
  log "mounting moodledata (EFS $FILE_SYSTEM_ID through $ACCESS_POINT_ID, TLS)"
  install -d -m 0755 "$moodledata"
  local entry="$FILE_SYSTEM_ID:/ $moodledata efs _netdev,noresvport,tls,iam,accesspoint=$ACCESS_POINT_ID 0 0"
  grep -qF "$entry" /etc/fstab || echo "$entry" >> /etc/fstab
  mountpoint -q "$moodledata" || mount "$moodledata"
  # The access point maps this node to the web server user: these directories belong to it.
  install -d "$moodledata/data" "$moodledata/cache" "$moodledata/temp" "$moodledata/backuptemp" "$state_dir"
  install -d -o apache -g apache -m 0750 /var/cache/moodle
}

# The first node downloads and verifies the code and keeps the archive on EFS; every node installs that
# same archive after checking its SHA-256, so all nodes run byte-identical code.
fetch_code() {
  local archive=$state_dir/moodle-$MOODLE_VERSION.tar.gz
  (
    flock 9
    if [[ ! -s $archive.sha256 ]]; then
      local work
      work=$(mktemp -d)
      if [[ -n ${MOODLE_CODE_S3_URI:-} ]]; then
        log "downloading the operator's code bundle $MOODLE_CODE_S3_URI"
        aws s3 cp --region "$AWS_REGION" "$MOODLE_CODE_S3_URI" "$work/moodle.tar.gz"
        echo "$MOODLE_CODE_SHA256  $work/moodle.tar.gz" | sha256sum -c -
        cp "$work/moodle.tar.gz" "$archive.partial"
      else
        log "cloning Moodle v$MOODLE_VERSION (git verifies every object it receives)"
        git clone --quiet --depth 1 --branch "v$MOODLE_VERSION" https://github.com/moodle/moodle.git "$work/moodle"
        git -C "$work/moodle" rev-parse HEAD > "$state_dir/moodle-$MOODLE_VERSION.commit"
        git -C "$work/moodle" archive --format=tar.gz --prefix=moodle/ HEAD > "$archive.partial"
      fi
      mv "$archive.partial" "$archive"
      (cd "$state_dir" && sha256sum "$(basename "$archive")" > "$archive.sha256.partial")
      mv "$archive.sha256.partial" "$archive.sha256"
      rm -rf "$work"
    fi
  ) 9> "$state_dir/code.lock"
  (cd "$state_dir" && sha256sum -c "$archive.sha256")

  local release=$code_parent/moodle-$MOODLE_VERSION
  if [[ ! -d $release ]]; then
    log "installing Moodle $MOODLE_VERSION in $release"
    local staging
    staging=$(mktemp -d "$code_parent/.moodle-XXXXXX")
    tar -xzf "$archive" -C "$staging" --strip-components=1
    install_memcached_store "$staging"
    install -m 0644 "$share_dir/config.php" "$staging/config.php"
    chown -R root:root "$staging"
    chmod -R u=rwX,go=rX "$staging"
    mv "$staging" "$release"
  fi
  ln -sfn "$release" "$moodle_dir"
}

# Moodle dropped its memcached application-cache store in 4.2: add the moodlehq plugin, pinned.
install_memcached_store() {
  local root=$1
  [[ "$APPLICATION_CACHE_ENGINE" == memcached ]] || return 0
  local stores=$root/cache/stores
  [[ -d $root/public ]] && stores=$root/public/cache/stores
  git clone --quiet https://github.com/moodlehq/moodle-cachestore_memcached.git "$stores/memcached"
  git -C "$stores/memcached" checkout --quiet "$MEMCACHED_STORE_COMMIT"
  [[ "$(git -C "$stores/memcached" rev-parse HEAD)" == "$MEMCACHED_STORE_COMMIT" ]]
  rm -rf "$stores/memcached/.git"
}

# The current node list of a memcached cluster, as host:port,host:port (it changes when the cluster is resized).
memcached_nodes() {
  aws elasticache describe-cache-clusters --region "$AWS_REGION" --cache-cluster-id "$1" --show-cache-node-info \
    --query 'CacheClusters[0].CacheNodes[].[Endpoint.Address, Endpoint.Port]' --output text |
    awk '{printf "%s%s:%s", sep, $1, $2; sep=","}'
}

cache_settings() {
  local engine=$1 id=$2 endpoint=$3 port=$4 auth_arn=$5
  if [[ $engine == memcached ]]; then
    jq -n --arg servers "$(memcached_nodes "$id")" '{engine: "memcached", servers: ($servers | split(","))}'
  else
    jq -n --arg host "tls://$endpoint" --arg port "$port" --arg auth "$(secret "$auth_arn" | jq -r .token)" \
      '{engine: "valkey", host: $host, port: ($port | tonumber), auth: $auth}'
  fi
}

write_settings() {
  log "writing $settings_file from the stack's outputs and secrets"
  local database public
  database=$(secret "$DATABASE_APP_SECRET_ARN")
  public=$moodle_dir
  [[ -d $moodle_dir/public ]] && public=$moodle_dir/public
  local router=false
  [[ ${MOODLE_VERSION%%.*} -ge 5 ]] && router=true
  umask 027
  jq -n \
    --arg wwwroot "$WWWROOT" --arg host "$DATABASE_HOST" --arg port "$DATABASE_PORT" --arg name "$DATABASE_NAME" \
    --argjson credentials "$database" --argjson router "$router" --arg data "$moodledata" \
    --argjson session "$(cache_settings "$SESSION_CACHE_ENGINE" "$SESSION_CACHE_ID" "$SESSION_CACHE_ENDPOINT" \
      "$SESSION_CACHE_PORT" "$SESSION_CACHE_AUTH_SECRET_ARN")" \
    --argjson application "$(cache_settings "$APPLICATION_CACHE_ENGINE" "$APPLICATION_CACHE_ID" \
      "$APPLICATION_CACHE_ENDPOINT" "$APPLICATION_CACHE_PORT" "$APPLICATION_CACHE_AUTH_SECRET_ARN")" \
    '{wwwroot: $wwwroot, router: $router,
      database: {host: $host, port: ($port | tonumber), name: $name,
                 user: $credentials.username, password: $credentials.password},
      paths: {dataroot: ($data + "/data"), cachedir: ($data + "/cache"), tempdir: ($data + "/temp"),
              backuptempdir: ($data + "/backuptemp"), localcachedir: "/var/cache/moodle"},
      session: $session, application: $application}' > "$settings_file.partial"
  chgrp apache "$settings_file.partial"
  mv "$settings_file.partial" "$settings_file"
  printf 'MOODLE_DIR=%s\nMOODLE_PUBLIC=%s\nMOODLE_CFN_SETTINGS=%s\n' "$moodle_dir" "$public" "$settings_file" \
    > "$etc_dir/runtime.env"
  umask 022
}

configure_web_server() {
  log "configuring PHP-FPM and Apache (event MPM)"
  # shellcheck source=/dev/null
  source "$etc_dir/runtime.env"
  install -m 0644 "$share_dir/php-moodle.ini" /etc/php.d/90-moodle.ini
  install -m 0644 "$share_dir/php-fpm-moodle.conf" /etc/php-fpm.d/www.conf
  local router=""
  [[ ${MOODLE_VERSION%%.*} -ge 5 ]] && router="FallbackResource /r.php"
  sed -e "s|@DOCUMENT_ROOT@|$MOODLE_PUBLIC|g" -e "s|@ROUTER@|$router|" "$share_dir/moodle-vhost.conf" \
    > /etc/httpd/conf.d/moodle.conf
  sed -i 's/^#\?LoadModule mpm_prefork_module/#LoadModule mpm_prefork_module/; s/^#LoadModule mpm_event_module/LoadModule mpm_event_module/' \
    /etc/httpd/conf.modules.d/00-mpm.conf
  systemctl enable --now php-fpm
  systemctl enable httpd
  systemctl restart httpd
}

as_web_user() { runuser -u apache -- env MOODLE_DIR="$moodle_dir" MOODLE_CFN_SETTINGS="$settings_file" "$@"; }

psql_master() {
  local credentials
  credentials=$(secret "$DATABASE_MASTER_SECRET_ARN")
  PGPASSWORD=$(jq -r .password <<< "$credentials") PGSSLMODE=require \
    psql -h "$DATABASE_HOST" -p "$DATABASE_PORT" -U "$(jq -r .username <<< "$credentials")" -d "$DATABASE_NAME" \
    -v ON_ERROR_STOP=1 -qtA "$@"
}

# Moodle's own database user, created once with the password of its own (never rotated) secret.
ensure_database_user() {
  local credentials user password
  credentials=$(secret "$DATABASE_APP_SECRET_ARN")
  user=$(jq -r .username <<< "$credentials")
  password=$(jq -r .password <<< "$credentials")
  if [[ "$(psql_master -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" != 1 ]]; then
    log "creating the database user $user"
    psql_master -c "CREATE ROLE \"$user\" LOGIN PASSWORD '$password'"
  fi
  psql_master -c "ALTER DATABASE \"$DATABASE_NAME\" OWNER TO \"$user\"" -c "ALTER SCHEMA public OWNER TO \"$user\""
}

# Exactly one node at a time gets here (flock on EFS); the check is made inside the lock.
install_or_upgrade() {
  # shellcheck source=/dev/null
  source "$etc_dir/runtime.env"
  local cli=$MOODLE_PUBLIC/admin/cli
  (
    flock 9
    ensure_database_user
    if [[ "$(psql_master -c "SELECT to_regclass('public.mdl_config') IS NOT NULL")" != t ]]; then
      log "installing the Moodle database (first node of the site)"
      local admin
      admin=$(secret "$ADMIN_SECRET_ARN" | jq -r .password)
      as_web_user php "$cli/install_database.php" --agree-license --adminuser=admin --adminpass="$admin" \
        --adminemail="$ADMIN_EMAIL" --fullname="$SITE_FULL_NAME" --shortname="$SITE_SHORT_NAME"
    else
      local pending=0
      as_web_user php "$cli/upgrade.php" --is-pending > /dev/null || pending=$?
      if [[ $pending == 2 ]]; then
        log "upgrading Moodle to $MOODLE_VERSION (maintenance mode on for every node)"
        as_web_user php "$cli/maintenance.php" --enable
        as_web_user php "$cli/upgrade.php" --non-interactive
        as_web_user php "$cli/maintenance.php" --disable
        as_web_user php "$cli/purge_caches.php"
      elif [[ $pending != 0 ]]; then
        return "$pending"
      fi
    fi
    as_web_user php "$share_dir/muc-configure.php"
  ) 9> "$state_dir/install.lock"
}

start_cron_and_logs() {
  log "starting cron and log shipping"
  install -m 0644 "$share_dir/moodle-cron.service" "$share_dir/moodle-cron.timer" /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable --now moodle-cron.timer
  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
    -c "file:$etc_dir/cloudwatch-agent.json"
}

main() {
  install_packages
  mount_moodledata
  fetch_code
  write_settings
  configure_web_server
  install_or_upgrade
  start_cron_and_logs
  log "node ready"
}

main "$@"
