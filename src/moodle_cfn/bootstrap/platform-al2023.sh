#!/bin/bash
# What moodle-node-setup.sh needs to know about the operating system, for Amazon Linux 2023 (the nodes'
# AMI). Everything that differs between distributions lives here and nowhere else: package names,
# the web server's user and configuration paths, the CA bundle, and how services are started. The node
# rehearsal swaps in tests/node_rig/platform-debian.sh; the Moodle steps are the same on both.
# shellcheck disable=SC2034  # the variables are read by moodle-node-setup.sh, which sources this file

readonly web_user=apache
readonly php_ini_path=/etc/php.d/90-moodle.ini
readonly fpm_pool_path=/etc/php-fpm.d/www.conf
readonly fpm_socket=/run/php-fpm/www.sock
# The load balancer's health check has a PHP-FPM pool of its own (php-fpm-moodle.conf).
readonly fpm_health_socket=/run/php-fpm/health.sock
readonly vhost_path=/etc/httpd/conf.d/moodle.conf
# The packet filter that keeps the instance metadata service root's (moodle-metadata.nft).
readonly metadata_rules_path=/etc/nftables/moodle-cfn-metadata.nft
readonly logrotate_path=/etc/logrotate.d/moodle-cfn
readonly php_error_log=/var/log/php-fpm/www-error.log
# The system trust store: ElastiCache's certificates chain to a public root in it.
readonly ca_bundle=/etc/pki/tls/certs/ca-bundle.crt
# The instance metadata service, and where this node's own Apache answers.
readonly imds_url=http://169.254.169.254
readonly local_http=http://127.0.0.1
# CloudFormation's helper (package aws-cfn-bootstrap, installed by user-data.sh).
readonly cfn_init=/opt/aws/bin/cfn-init

# Package names and the release of Amazon Linux 2023 that first has each, with its source, are in
# al2023-packages.json (a test keeps this file and that table in step). An AMI's repositories are locked
# to its release ("every AL2023 AMI by default is locked to a specific repository version",
# https://docs.aws.amazon.com/linux/al2023/ug/compare-deterministic-upgrades.html), so a package newer
# than the AMI cannot be installed on it.
#
# AL2023 packages PHP 8.1-8.5 (https://docs.aws.amazon.com/linux/al2023/ug/php.html); the node runs the
# newest its Moodle line supports, among the versions that have every package it installs:
#   - php8.x-pecl-memcached exists for 8.3, 8.4 and 8.5 only, from 2023.10.20260202 ("Core New Packages",
#     https://docs.aws.amazon.com/linux/al2023/release-notes/relnotes-2023.10.20260202.html): not 8.1, 8.2;
#   - PHP 8.5 builds OPcache in, and no AL2023 source lists a php8.5-opcache (no Moodle line runs 8.5 yet).
readonly platform_php_versions=(8.3 8.4)

# The AMI's release, X.Y.Z of system-release-X.Y.Z (as `rpm -q system-release` shows,
# https://github.com/amazonlinux/amazon-linux-2023/issues/208).
al2023_release() { rpm -q --qf '%{VERSION}' system-release; }

# The PostgreSQL client of the cluster's major version (site.json's DATABASE_MAJOR_VERSION, from
# DatabaseEngineVersion): postgresql16 from 2023.6.20241010, postgresql17 from 2023.7.20250331
# (https://docs.aws.amazon.com/linux/al2023/release-notes/relnotes-2023.7.20250331.html). The node runs
# psql before it chooses the Moodle release, so it comes with the base packages.
platform_install_base_packages() {
  # The oldest release that has every package below and in platform_install_php: the pecl-memcached
  # packages' (al2023-packages.json). An older AMI fails here, with the reason, not inside dnf.
  local min_release=2023.10.20260202 release
  release=$(al2023_release) || die "cannot read this AMI's Amazon Linux 2023 release (rpm -q system-release)"
  if [[ $(printf '%s\n' "$min_release" "$release" | sort -V | head -n 1) != "$min_release" ]]; then
    die "this AMI is Amazon Linux 2023 release $release; the node's packages need $min_release or newer" \
      "(its repositories are locked to its release): use a newer AMI"
  fi
  [[ ${DATABASE_MAJOR_VERSION:-} =~ ^[0-9]+$ ]] ||
    die "site.json gives no PostgreSQL major version (DATABASE_MAJOR_VERSION='${DATABASE_MAJOR_VERSION:-}')"
  dnf install -y --setopt=install_weak_deps=False \
    httpd amazon-efs-utils amazon-cloudwatch-agent nftables logrotate "postgresql$DATABASE_MAJOR_VERSION" jq git tar unzip
}

# phpredis is packaged (php8.3-pecl-redis6, php8.4-pecl-redis6 from 2023.8.20250818, "Core New Packages",
# https://docs.aws.amazon.com/linux/al2023/release-notes/relnotes-2023.8.20250818.html), as is APCu: no
# compiler and no pecl on a node. The extension packages are checked to load, in one line if one does not.
platform_install_php() {
  local php=$1 with_redis=$2 extension modules
  local packages=("php$php"-{fpm,cli,common,opcache,pgsql,intl,mbstring,gd,soap,sodium,xml,zip,pecl-apcu,pecl-memcached})
  local extensions=(apcu memcached)
  if [[ $with_redis == true ]]; then
    packages+=("php$php-pecl-redis6")
    extensions+=(redis)
  fi
  dnf install -y --setopt=install_weak_deps=False "${packages[@]}"
  modules=$(php -m)
  for extension in "${extensions[@]}"; do
    grep -qix "$extension" <<< "$modules" || die "PHP $php does not load $extension after installing its package"
  done
}

# EFS through the site's access point, over TLS, and in /etc/fstab so that it survives a reboot.
# The mount helper's NFS options (amazon-efs-utils): nfsvers=4.1, rsize/wsize 1 MiB, hard, timeo=600,
# retrans=2, noresvport, which the EFS guide recommends ("Recommended NFS mount settings": "We recommend
# that you use the hard mount option (hard) to ensure data integrity"; noresvport keeps the file system
# available "after a network recovery event"). What they allow: an EFS that stops answering makes every
# process touching moodledata wait until it answers again, however long; timeo and retrans only time the
# client's retransmissions and its "server not responding" message (nfs(5)). What they do not: a bound on
# that wait. soft would return EIO instead, which nfs(5) warns "can cause silent data corruption", in the
# middle of Moodle's writes to the file store. So a stalled EFS is bounded above the mount instead: the
# load balancer's check never touches it (moodle-health.php, its own PHP-FPM pool), pages that wait for a
# worker longer than 10 s are answered 503 (moodle-queue-limit.php), and the pool's queue is bounded
# (listen.backlog); pages already on a worker finish once EFS answers (make rehearse-faults measures it).
platform_mount_shared() {
  local file_system=$1 access_point=$2 mount_point=$3
  local entry="$file_system:/ $mount_point efs _netdev,noresvport,tls,iam,accesspoint=$access_point 0 0"
  grep -qF "$entry" /etc/fstab || echo "$entry" >> /etc/fstab
  mountpoint -q "$mount_point" || mount "$mount_point"
}

# nftables.service loads /etc/sysconfig/nftables.conf at every boot, before the network is up, so the
# rules hold from the first packet of a reboot or a warm-pool node's start.
platform_persist_packet_filter() {
  local include="include \"$1\"" boot_file=/etc/sysconfig/nftables.conf
  grep -qxF "$include" "$boot_file" 2> /dev/null || echo "$include" >> "$boot_file"
  systemctl enable nftables
}

# Apache with the event MPM in front of PHP-FPM; restarted so that a second run picks up new files.
platform_start_web() {
  sed -i 's/^#\?LoadModule mpm_prefork_module/#LoadModule mpm_prefork_module/; s/^#LoadModule mpm_event_module/LoadModule mpm_event_module/' \
    /etc/httpd/conf.modules.d/00-mpm.conf
  install -d -m 0755 "$(dirname "$php_error_log")"
  systemctl enable php-fpm httpd
  systemctl restart php-fpm httpd
}

# What the PHP-FPM pool is sized from (php-fpm-size.sh): the memory the kernel manages (MemTotal, a little
# under the instance type's nominal memory) and the vCPUs.
platform_memory_mib() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }
platform_vcpus() { nproc; }

# The units are in /etc/systemd/system already (the node setup renders them).
platform_start_cron() {
  systemctl daemon-reload
  systemctl enable --now moodle-cron.timer moodle-settings-refresh.timer moodle-metrics.timer moodle-node-drain.service
}

# For moodle-node-drain.sh: no new cron run, and the one running now (its unit's main process is the php
# process: the unit execs it).
platform_stop_cron_timer() { systemctl stop moodle-cron.timer; }
platform_cron_pid() {
  local pid
  pid=$(systemctl show --property MainPID --value moodle-cron.service)
  [[ $pid != 0 ]] && echo "$pid"
  return 0
}

platform_start_log_shipping() {
  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c "file:$1"
}

# Later boots (a warm-pool node entering service, a reboot) run moodle-node-ready.sh from systemd.
platform_enable_ready_unit() {
  install -m 0644 /usr/share/moodle-cfn/moodle-node-ready.service /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable moodle-node-ready.service
}
