#!/bin/bash
# The node rehearsal's platform file: Debian (the CI machine: Debian 12 with PHP 8.2, or Debian 13 with
# PHP 8.4) in place of Amazon Linux 2023's src/moodle_cfn/bootstrap/platform-al2023.sh, with the same
# names. Only what differs between the two systems is here; every Moodle step of moodle-node-setup.sh runs
# unchanged.
#   - packages come from Debian (its one PHP, phpredis packaged), installed by apt, not dnf;
#   - the web server user is www-data and Apache/PHP-FPM keep their files under /etc/apache2 and /etc/php;
#   - there is no systemd: PHP-FPM and Apache are started directly, and the rig runs the cron unit's
#     command itself; there is no CloudWatch agent;
#   - "EFS" is a directory the rig shares between its nodes (RIG_SHARED_DIR), bind-mounted in each
#     node's own mount namespace;
#   - the instance metadata service is the rig's stand-in (RIG_IMDS_URL; the packet filter that keeps it
#     root's names its address and port), each node's Apache listens on its
#     own loopback address (RIG_NODE_ADDRESS), and the rig writes the cfn-init files itself before each
#     boot, so there is no cfn-init to run.
# shellcheck disable=SC2034  # the variables are read by moodle-node-setup.sh, which sources this file

# The PHP this Debian packages (php-cli is installed by `make rig-machine`, from Debian's default PHP).
php_version=$(php -r 'echo PHP_MAJOR_VERSION, ".", PHP_MINOR_VERSION;') || {
  echo "the rig's platform needs Debian's php-cli (make rig-machine installs it)" >&2
  exit 1
}
readonly php_version
readonly web_user=www-data
readonly php_ini_path=/etc/php/$php_version/fpm/conf.d/90-moodle.ini
readonly fpm_pool_path=/etc/php/$php_version/fpm/pool.d/www.conf
readonly fpm_socket=/run/php-fpm/www.sock
# The load balancer's health check has a PHP-FPM pool of its own (php-fpm-moodle.conf).
readonly fpm_health_socket=/run/php-fpm/health.sock
readonly vhost_path=/etc/apache2/sites-enabled/moodle.conf
# In the node's private /etc/moodle-cfn: the rig's nodes share the machine's /etc/nftables.
readonly metadata_rules_path=/etc/moodle-cfn/metadata.nft
# In the node's private /etc/moodle-cfn: the rig's nodes share the machine's /etc/logrotate.d.
readonly logrotate_path=/etc/moodle-cfn/logrotate.conf
readonly php_error_log=/var/log/php-fpm/www-error.log
readonly ca_bundle=/etc/ssl/certs/ca-certificates.crt
readonly imds_url=${RIG_IMDS_URL:?set by the rehearsal rig}
readonly local_http=http://${RIG_NODE_ADDRESS:?set by the rehearsal rig}
readonly cfn_init=true

# Debian packages one PHP.
readonly platform_php_versions=("$php_version")

platform_install_base_packages() {
  # What AL2023's platform file installs the client by (the cluster's major): it must reach the node.
  [[ ${DATABASE_MAJOR_VERSION:-} =~ ^[0-9]+$ ]] ||
    die "site.json gives no PostgreSQL major version (DATABASE_MAJOR_VERSION='${DATABASE_MAJOR_VERSION:-}')"
  apt_install apache2 postgresql-client nftables logrotate curl jq git tar unzip
}

platform_install_php() {
  local php=$1 with_redis=$2
  local packages=("php$php"-{fpm,cli,pgsql,intl,mbstring,gd,soap,xml,zip,curl,memcached,apcu})
  [[ $with_redis == true ]] && packages+=("php$php-redis")
  apt_install "${packages[@]}"
}

# Both rehearsal nodes share one dpkg database: wait for the other's lock instead of failing.
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
    "$@" > /dev/null
}

# One directory per access point: RIG_SHARED_DIR is moodledata's, RIG_CODE_DIR the code archives' (the
# rig names that access point fsap-0code in the site's settings). A bind mount calls no AWS API, so the
# mount is reported to the rig's AWS front door, which records the ClientMount/ClientWrite that
# efs-utils' IAM authorization would make (tests/node_rig/aws.py).
platform_mount_shared() {
  local file_system=$1 access_point=$2 mount_point=$3 source=${RIG_SHARED_DIR:?set by the rehearsal rig}
  [[ $access_point == fsap-0code ]] && source=${RIG_CODE_DIR:?set by the rehearsal rig}
  curl -fsS -o /dev/null --data-urlencode "FileSystemId=$file_system" --data-urlencode "AccessPointId=$access_point" \
    "${AWS_ENDPOINT_URL:?set by the rehearsal rig}/rig/efs-mount"
  mountpoint -q "$mount_point" || mount --bind "$source" "$mount_point"
}

# No systemd here: the rig's nodes share the machine's network stack, whose rules outlive a replayed reboot.
platform_persist_packet_filter() { :; }

platform_start_web() {
  # The CLI reads the same Moodle PHP settings as FPM (AL2023 has one /etc/php.d for both).
  ln -sfn "$php_ini_path" "/etc/php/$php_version/cli/conf.d/90-moodle.ini"
  install -d /run/php /run/php-fpm "$(dirname "$php_error_log")"
  chown "$web_user" "$(dirname "$php_error_log")"
  a2dismod -q -f mpm_prefork php"$php_version" > /dev/null 2>&1 || true
  a2enmod -q mpm_event proxy_fcgi setenvif headers > /dev/null
  rm -f /etc/apache2/sites-enabled/000-default.conf
  local pid_file=/run/php/php$php_version-fpm.pid
  if [[ -s $pid_file ]] && kill -0 "$(cat "$pid_file")" 2> /dev/null; then
    kill -QUIT "$(cat "$pid_file")"
    while kill -0 "$(cat "$pid_file" 2> /dev/null)" 2> /dev/null; do sleep 0.1; done
  fi
  "php-fpm$php_version" --daemonize --fpm-config "/etc/php/$php_version/fpm/php-fpm.conf"
  apache2ctl configtest
  apache2ctl restart
}

# The rig's node may be told it is smaller than the machine (RIG_MEMORY_MIB, RIG_VCPUS), as an instance
# type would be; the rig then holds its PHP-FPM to that memory (tests/node_rig/rehearse_node.py).
platform_memory_mib() {
  if [[ -n ${RIG_MEMORY_MIB:-} ]]; then echo "$RIG_MEMORY_MIB"; else awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; fi
}
platform_vcpus() { echo "${RIG_VCPUS:-$(nproc)}"; }

# No systemd here: the rig runs the installed unit's ExecStart as its User.
platform_start_cron() { :; }

# No timer here (the rig starts cron runs itself): a marker says the drain stopped it. The running cron is
# the php process of this node's namespace (the rig's nodes share the machine's process table) whose
# command line names cron.php; Moodle rewrites that line while a task runs ("... cron.php (date Adhoc
# task: ...)"), so the script's path is matched anywhere in it.
platform_stop_cron_timer() { touch /run/moodle-cron-timer-stopped; }
platform_cron_pid() {
  local pid own
  own=$(readlink /proc/self/ns/mnt)
  for pid in $(pgrep -f '/admin/cli/cron\.php'); do
    [[ $(cat "/proc/$pid/comm" 2> /dev/null) == php* ]] || continue
    [[ $(readlink "/proc/$pid/ns/mnt" 2> /dev/null) == "$own" ]] && echo "$pid" && return 0
  done
  return 0
}

# No systemd here: the rig runs moodle-node-ready.sh itself at each boot it plays.
platform_enable_ready_unit() { :; }

platform_start_log_shipping() { :; }
