#!/bin/bash
# Publishes Moodle's own health to CloudWatch (README: What CloudWatch watches), every minute from
# moodle-metrics.timer on every node; the site publishes once per minute, whichever node comes first.
# moodle-metrics.php measures, as the web server's user (Moodle's code never runs as root); root publishes,
# since only root reaches the instance metadata service and so the instance role's credentials
# (moodle-metadata.nft). Each metric carries the site's name as its Site dimension.
set -Eeuo pipefail

readonly etc_dir=/etc/moodle-cfn
readonly share_dir=/usr/share/moodle-cfn

# shellcheck source-path=SCRIPTDIR source=platform-al2023.sh
source "${MOODLE_CFN_PLATFORM:-$share_dir/platform-al2023.sh}"

log() { printf '%s moodle-metrics: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# site(): the site's settings (shared with the lifecycle scripts).
# shellcheck source-path=SCRIPTDIR source=moodle-lifecycle.sh
source "$share_dir/moodle-lifecycle.sh"

# MOODLE_DIR and MOODLE_CFN_SETTINGS, written by moodle-node-setup.sh once Moodle is installed here.
set -a
# shellcheck source=/dev/null
source "$etc_dir/runtime.env"
set +a

metrics=$(runuser -u "$web_user" -- env MOODLE_DIR="$MOODLE_DIR" MOODLE_CFN_SETTINGS="$MOODLE_CFN_SETTINGS" \
  php "$share_dir/moodle-metrics.php") || {
  log "FAILED to measure the site's health (moodle-metrics.php exited $?)"
  exit 1
}
# Nothing printed: another node published this minute.
[[ -n $metrics ]] || exit 0

site_name=$(site SITE_NAME)
data=$(jq -c --arg site "$site_name" 'map(. + {Dimensions: [{Name: "Site", Value: $site}]})' <<< "$metrics")
if output=$(aws cloudwatch put-metric-data --region "$(site AWS_REGION)" --namespace "$(site METRICS_NAMESPACE)" \
  --metric-data "$data" 2>&1); then
  log "published for site $site_name: $(jq -c 'map({(.MetricName): .Value}) | add' <<< "$metrics")"
else
  log "FAILED to publish for site $site_name: $(tail -n 1 <<< "$output")"
  exit 1
fi
