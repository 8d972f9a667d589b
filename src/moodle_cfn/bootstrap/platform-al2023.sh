#!/bin/bash
# What moodle-node-setup.sh needs to know about the operating system, for Amazon Linux 2023 (the nodes'
# AMI). Everything that differs between distributions lives here and nowhere else: package names,
# the web server's user and configuration paths, the CA bundle, and how services are started. The node
# rehearsal swaps in tests/node_rig/platform-debian12.sh; the Moodle steps are the same on both.
# shellcheck disable=SC2034  # the variables are read by moodle-node-setup.sh, which sources this file

readonly web_user=apache
readonly php_ini_path=/etc/php.d/90-moodle.ini
readonly fpm_pool_path=/etc/php-fpm.d/www.conf
readonly fpm_socket=/run/php-fpm/www.sock
readonly vhost_path=/etc/httpd/conf.d/moodle.conf
readonly php_error_log=/var/log/php-fpm/www-error.log
# The system trust store: ElastiCache's certificates chain to a public root in it.
readonly ca_bundle=/etc/pki/tls/certs/ca-bundle.crt
# The instance metadata service, and where this node's own Apache answers.
readonly imds_url=http://169.254.169.254
readonly local_http=http://127.0.0.1
# CloudFormation's helper (package aws-cfn-bootstrap, installed by user-data.sh).
readonly cfn_init=/opt/aws/bin/cfn-init

# The PHP versions Amazon Linux 2023 packages ("AL2023 currently provides ... PHP 8.1, 8.2, 8.3, 8.4, and 8.5",
# https://docs.aws.amazon.com/linux/al2023/ug/php.html); the node runs the newest its Moodle line supports.
readonly platform_php_versions=(8.1 8.2 8.3 8.4 8.5)

platform_install_base_packages() {
  dnf install -y --setopt=install_weak_deps=False \
    httpd amazon-efs-utils amazon-cloudwatch-agent postgresql16 jq git tar unzip
}

platform_install_php() {
  local php=$1 with_redis=$2
  dnf install -y --setopt=install_weak_deps=False \
    "php$php"-{fpm,cli,common,opcache,pgsql,intl,mbstring,gd,soap,sodium,xml,zip,pecl-apcu,pecl-memcached}
  if [[ $with_redis == true ]] && ! php -m | grep -qx redis; then
    # phpredis is not packaged for Amazon Linux 2023: the one option that compiles at boot (about a minute).
    dnf install -y "php$php-devel" php-pear gcc make
    printf '\n' | pecl install redis
    echo 'extension=redis.so' > /etc/php.d/40-redis.ini
  fi
}

# EFS through the site's access point, over TLS, and in /etc/fstab so that it survives a reboot.
platform_mount_shared() {
  local file_system=$1 access_point=$2 mount_point=$3
  local entry="$file_system:/ $mount_point efs _netdev,noresvport,tls,iam,accesspoint=$access_point 0 0"
  grep -qF "$entry" /etc/fstab || echo "$entry" >> /etc/fstab
  mountpoint -q "$mount_point" || mount "$mount_point"
}

# Apache with the event MPM in front of PHP-FPM; restarted so that a second run picks up new files.
platform_start_web() {
  sed -i 's/^#\?LoadModule mpm_prefork_module/#LoadModule mpm_prefork_module/; s/^#LoadModule mpm_event_module/LoadModule mpm_event_module/' \
    /etc/httpd/conf.modules.d/00-mpm.conf
  install -d -m 0755 "$(dirname "$php_error_log")"
  systemctl enable php-fpm httpd
  systemctl restart php-fpm httpd
}

# The units are in /etc/systemd/system already (the node setup renders them).
platform_start_cron() {
  systemctl daemon-reload
  systemctl enable --now moodle-cron.timer
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
