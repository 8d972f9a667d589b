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
# Set by config.php when this node's code is not the code the database runs (moodle-health.php reads it).
readonly stale_flag=/var/cache/moodle/node-stale
readonly moodledata=/var/moodledata
# The launch hook's lease: a heartbeat every heartbeat_seconds while the setup runs, for at most
# heartbeat_budget seconds (CloudFormation waits PT1H for a node's signal; a setup still running then has
# failed the update anyway). With the hook's HeartbeatTimeout (web_tier.LIFECYCLE_HEARTBEAT_SECONDS, 900 s)
# a node whose setup hangs or dies without a word is abandoned 15 minutes after its last heartbeat.
readonly heartbeat_seconds=${MOODLE_CFN_HEARTBEAT_SECONDS:-120}
readonly heartbeat_budget=3600

# shellcheck source-path=SCRIPTDIR source=platform-al2023.sh
source "${MOODLE_CFN_PLATFORM:-$share_dir/platform-al2023.sh}"

log() { printf '%s moodle-node-ready: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# shellcheck source-path=SCRIPTDIR source=moodle-lifecycle.sh
source "$share_dir/moodle-lifecycle.sh"

instance_id=$(imds instance-id)
# Instance tags are in the metadata (InstanceMetadataTags); colons are allowed in those keys (EC2 guide,
# "View tags for your EC2 instances using instance metadata").
group=$(imds tags/instance/aws:autoscaling:groupName)
# Where the group is taking this node: InService, or Warmed:Stopped and the like for the warm pool.
target_state=$(imds autoscaling/target-lifecycle-state || echo InService)
readonly instance_id group target_state

# A reboot of a node in service has no pending lifecycle action: nothing to complete (status 2).
complete_hook() {
  local status=0
  lifecycle_action complete-lifecycle-action "$(site LIFECYCLE_HOOK)" --lifecycle-action-result "$1" || status=$?
  [[ $status != 1 ]]
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

heartbeat_pid=""

# Keeps the launch hook's lease while a long step runs (the first install, a database upgrade): without
# it the hook's timeout abandons a node in the middle of an upgrade. A node in service (a reboot) has no
# pending lifecycle action: the first answer says so, and the heartbeats stop.
keep_lease() {
  trap - ERR
  local started=$SECONDS status
  while sleep "$heartbeat_seconds" > /dev/null 2>&1; do
    if (( SECONDS - started > heartbeat_budget )); then
      log "the setup has run for more than ${heartbeat_budget}s: no more lifecycle heartbeats"
      return 0
    fi
    status=0
    lifecycle_action record-lifecycle-action-heartbeat "$(site LIFECYCLE_HOOK)" || status=$?
    [[ $status == 2 ]] && return 0
  done
}

stop_lease() {
  if [[ -n $heartbeat_pid ]]; then
    pkill -P "$heartbeat_pid" 2> /dev/null || true # its sleep or aws call, which hold the log open
    kill "$heartbeat_pid" 2> /dev/null || true
  fi
  heartbeat_pid=""
  return 0
}

fail() {
  stop_lease
  log "FAILED: $1; abandoning this node"
  signal FAILURE
  complete_hook ABANDON || true
  exit 1
}
trap 'fail "\`$BASH_COMMAND\` exited $?"' ERR

# A warm-pool node built from an older launch template version is not brought into service: CloudFormation
# replaces only nodes in service, so a stale warmed node is discarded and the group launches a current one.
# Discarded, not failed: no FAILURE signal, which would fail the rolling update that took it from the pool
# (every update after a new AMI takes warmed nodes of the old version first).
discard_if_stale() {
  local mine current
  mine=$(imds tags/instance/aws:ec2launchtemplate:version)
  current=$(aws autoscaling describe-auto-scaling-groups --region "$(site AWS_REGION)" \
    --auto-scaling-group-names "$group" --query 'AutoScalingGroups[0].LaunchTemplate.Version' --output text)
  [[ $current == "$mine" ]] && return 0
  log "launch template version $mine, the group runs $current: discarding this stale warmed node" \
    "(the hook abandoned, no failure signalled; the group launches a current node)"
  complete_hook ABANDON || true
  exit 0
}

moodle_answers() {
  local host status
  host=$(site WWWROOT)
  status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -H "Host: ${host#https://}" \
    -H 'X-Forwarded-Proto: https' "$local_http/login/index.php") || return 1
  [[ $status == 200 ]] && return 0
  # The operator's own maintenance mode (no node's record of it): the node serves the maintenance page,
  # as every other node does, and comes into service.
  if [[ $status == 503 && -e $moodledata/data/climaintenance.html && ! -e $moodledata/.moodle-cfn/maintenance-owner.json ]]; then
    log "Moodle is in the operator's maintenance mode: this node serves its maintenance page"
    return 0
  fi
  return 1
}

main() {
  log "bringing $instance_id into $target_state"
  rm -f "$ready_file" "$stale_flag" # the health path answers 503 until the end of this run
  if [[ $target_state == InService && ${1:-} != --first-boot ]]; then
    discard_if_stale
    # Settings and node files as they are now: the stack may have changed while this node was stopped.
    "$cfn_init" -v --stack "$(site STACK_NAME)" --resource "$(site INIT_RESOURCE)" \
      --region "$(site AWS_REGION)" || fail "cfn-init could not refresh the node files"
  fi
  keep_lease &
  heartbeat_pid=$!
  MOODLE_CFN_NODE_ID=$instance_id "$share_dir/moodle-node-setup.sh" ||
    fail "moodle-node-setup.sh failed (its last line says why)"
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
    --arg stale_flag "$stale_flag" --arg at "$(date -u +%FT%TZ)" \
    '{release: $release, versionshash: $versionshash, stale_flag: $stale_flag, ready_at: $at}' \
    > "$ready_file.partial"
  chmod 0644 "$ready_file.partial"
  mv "$ready_file.partial" "$ready_file"
  stop_lease
  complete_hook CONTINUE
  signal SUCCESS
  log "in service: $instance_id"
}

main "$@"
