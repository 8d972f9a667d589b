#!/bin/bash
# First boot of a Moodle web node (Amazon Linux 2023), embedded in the launch template through Fn::Sub:
# dollar-brace names are filled in by CloudFormation, so shell variables are written without braces.
#
# It serves the load balancer's health path from Apache, has cfn-init write the site's settings and the
# Moodle files (launch template metadata), runs moodle-node-setup.sh, and reports to CloudFormation only
# once this node answers both the health path and Moodle's login page.
set -euo pipefail

readonly stack_name="${AWS::StackName}"
readonly region="${AWS::Region}"
readonly signal_resource="${SignalResource}"
readonly health_path="${HealthCheckPath}"
readonly init_resource="${InitResource}"
readonly site_host="${SiteHost}"
readonly log_file=/var/log/moodle-bootstrap.log

exec > >(tee -a "$log_file" | logger -t moodle-bootstrap) 2>&1

imds() {
  local token
  token=$(curl -fsS -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}

# A node launched into the warm pool is stopped after this script; only nodes going into service signal.
in_warm_pool() {
  case "$(imds autoscaling/target-lifecycle-state 2>/dev/null || true)" in
    Warmed:*) return 0 ;;
    *) return 1 ;;
  esac
}

signal() {
  local status=$1 reason=$2
  if in_warm_pool; then
    echo "warm pool instance: not signalling ($reason)"
    return 0
  fi
  /opt/aws/bin/cfn-signal --exit-code "$status" --reason "$reason" \
    --stack "$stack_name" --resource "$signal_resource" --region "$region" || true
}

# shellcheck disable=SC2329  # called by the ERR trap below
on_error() {
  local line=$1
  signal 1 "bootstrap failed at line $line, see $log_file"
}
trap 'on_error $LINENO' ERR

dnf install -y --setopt=install_weak_deps=False httpd aws-cfn-bootstrap

# The health check answers from Apache itself: cheap, and independent of PHP and the database, so a
# database failover does not take every node out of the target group at once.
install -d -m 0755 /var/www/health
printf 'ok\n' > /var/www/health/index.html
cat > /etc/httpd/conf.d/00-health.conf <<CONF
Alias "$health_path" "/var/www/health/index.html"
<Location "$health_path">
    Require all granted
</Location>
CONF

systemctl enable --now httpd

/opt/aws/bin/cfn-init -v --stack "$stack_name" --resource "$init_resource" --region "$region"
/usr/share/moodle-cfn/moodle-node-setup.sh

for attempt in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1$health_path" > /dev/null &&
    curl -fsS -o /dev/null -H "Host: $site_host" -H 'X-Forwarded-Proto: https' "http://127.0.0.1/login/index.php"; then
    signal 0 "web node serves $health_path and Moodle (attempt $attempt)"
    exit 0
  fi
  sleep 5
done
signal 1 "web node does not answer $health_path and the Moodle login page on 127.0.0.1"
exit 1
