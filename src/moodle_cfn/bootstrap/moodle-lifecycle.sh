#!/bin/bash
# What moodle-node-ready.sh (the launch hook), moodle-node-drain.sh (the terminate hook) and
# moodle-metrics.sh share: the instance metadata, the site's settings, and the group's lifecycle actions. Sourced; the caller defines
# log() and sets instance_id and group before calling lifecycle_action.
# shellcheck disable=SC2154  # instance_id, group and imds_url come from the caller and the platform file

# IMDSv2 (the launch template requires tokens).
imds() {
  local token
  token=$(curl -fsS -X PUT "$imds_url/latest/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds_url/latest/meta-data/$1"
}

site() { jq -r --arg key "$1" '.[$key]' /etc/moodle-cfn/site.json; }

# complete-lifecycle-action or record-lifecycle-action-heartbeat (CALL) for this node and HOOK, with any
# further arguments. 0 done; 2 the group has no pending action of that hook for this node (a reboot of a
# node in service, a lease already given up): nothing to do; 1 a failure, logged.
lifecycle_action() {
  local call=$1 hook=$2 output
  shift 2
  output=$(aws autoscaling "$call" --region "$(site AWS_REGION)" --lifecycle-hook-name "$hook" \
    --auto-scaling-group-name "$group" --instance-id "$instance_id" "$@" 2>&1) && return 0
  grep -q 'No active Lifecycle Action found' <<< "$output" && return 2
  log "$call for $hook failed: $output"
  return 1
}
