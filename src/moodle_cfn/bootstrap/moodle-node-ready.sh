#!/bin/bash
# Brings this node into service, at first boot (from user-data.sh) and at every later boot (the
# moodle-node-ready systemd unit): a warm-pool node starting into service, or a reboot.
#
# Traffic reaches a node only once Moodle answers on it. The web group has a launch lifecycle hook: the
# node stays in Pending:Wait (not registered with the load balancer) until this script completes the hook
# with CONTINUE, after the setup ran and Moodle answered locally. When anything fails it completes the
# hook with ABANDON at once (the group replaces the node) and signals the failure to CloudFormation, so a
# broken first boot fails the stack in minutes, not after the signal timeout.
set -Eeuo pipefail

readonly etc_dir=/etc/moodle-cfn
readonly share_dir=/usr/share/moodle-cfn
readonly ready_file=$etc_dir/ready.json

# shellcheck source-path=SCRIPTDIR source=platform-al2023.sh
source "${MOODLE_CFN_PLATFORM:-$share_dir/platform-al2023.sh}"

log() { printf '%s moodle-node-ready: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# IMDSv2 (the launch template requires tokens).
imds() {
  local token
  token=$(curl -fsS -X PUT "$imds_url/latest/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds_url/latest/meta-data/$1"
}

site() { jq -r --arg key "$1" '.[$key]' "$etc_dir/site.json"; }

instance_id=$(imds instance-id)
# Instance tags are in the metadata (InstanceMetadataTags); colons are allowed in those keys (EC2 guide,
# "View tags for your EC2 instances using instance metadata").
group=$(imds tags/instance/aws:autoscaling:groupName)
# Where the group is taking this node: InService, or Warmed:Stopped and the like for the warm pool.
target_state=$(imds autoscaling/target-lifecycle-state || echo InService)
readonly instance_id group target_state

complete_hook() {
  local result=$1 output
  output=$(aws autoscaling complete-lifecycle-action --region "$(site AWS_REGION)" \
    --lifecycle-hook-name "$(site LIFECYCLE_HOOK)" --auto-scaling-group-name "$group" \
    --instance-id "$instance_id" --lifecycle-action-result "$result" 2>&1) && return 0
  # A reboot of a node in service has no pending lifecycle action: nothing to complete.
  grep -q 'No active Lifecycle Action found' <<< "$output" && return 0
  log "completing the lifecycle hook with $result failed: $output"
  return 1
}

# CreationPolicy and rolling updates wait for one signal per new node; a warm-pool node signals when it
# enters service. The AWS CLI, not cfn-signal, so a failure still reaches CloudFormation when the helper
# scripts could not be installed.
signal() {
  local status=$1
  [[ $target_state == InService ]] || return 0
  aws cloudformation signal-resource --region "$(site AWS_REGION)" --stack-name "$(site STACK_NAME)" \
    --logical-resource-id "$(site SIGNAL_RESOURCE)" --unique-id "$instance_id" --status "$status" ||
    log "signalling $status to CloudFormation failed"
}

fail() {
  log "FAILED: $1; abandoning this node"
  signal FAILURE
  complete_hook ABANDON || true
  exit 1
}
trap 'fail "\`$BASH_COMMAND\` exited $?"' ERR

# A warm-pool node built from an older launch template version is not brought into service: CloudFormation
# replaces only nodes in service, so a stale warmed node is abandoned and the group launches a current one.
check_launch_template_version() {
  local mine current
  mine=$(imds tags/instance/aws:ec2launchtemplate:version)
  current=$(aws autoscaling describe-auto-scaling-groups --region "$(site AWS_REGION)" \
    --auto-scaling-group-names "$group" --query 'AutoScalingGroups[0].LaunchTemplate.Version' --output text)
  [[ $current == "$mine" ]] || fail "launch template version $mine, the group runs $current"
}

moodle_answers() {
  local host
  host=$(site WWWROOT)
  curl -fsS -o /dev/null --max-time 30 -H "Host: ${host#https://}" -H 'X-Forwarded-Proto: https' \
    "$local_http/login/index.php"
}

main() {
  log "bringing $instance_id into $target_state"
  rm -f "$ready_file" # the health path answers 503 until the end of this run
  if [[ $target_state == InService && ${1:-} != --first-boot ]]; then
    check_launch_template_version
    # Settings and node files as they are now: the stack may have changed while this node was stopped.
    "$cfn_init" -v --stack "$(site STACK_NAME)" --resource "$(site INIT_RESOURCE)" \
      --region "$(site AWS_REGION)" || fail "cfn-init could not refresh the node files"
  fi
  "$share_dir/moodle-node-setup.sh" || fail "moodle-node-setup.sh failed (its last line says why)"
  local attempt
  for attempt in $(seq 1 30); do
    moodle_answers && break
    [[ $attempt == 30 ]] && fail "Moodle's login page does not answer on this node"
    sleep 5
  done
  platform_enable_ready_unit
  # What this node's code says the database must be (moodle-health.php compares it on every check).
  local versionshash
  versionshash=$(runuser -u "$web_user" -- env MOODLE_DIR=/var/www/moodle php -r \
    'define("CLI_SCRIPT", true); require getenv("MOODLE_DIR") . "/config.php"; echo core_component::get_all_versions_hash();')
  jq -n --arg release "$(readlink -f /var/www/moodle)" --arg versionshash "$versionshash" \
    --arg at "$(date -u +%FT%TZ)" '{release: $release, versionshash: $versionshash, ready_at: $at}' \
    > "$ready_file.partial"
  chmod 0644 "$ready_file.partial"
  mv "$ready_file.partial" "$ready_file"
  complete_hook CONTINUE
  signal SUCCESS
  log "in service: $instance_id"
}

main "$@"
