#!/bin/bash
# Lets a node leave its Auto Scaling group without losing Moodle's work. Runs from boot to the node's last
# minute (moodle-node-drain.service) and watches where the group is taking the node. When that is
# Terminated or Warmed:* (a scale-in, an instance refresh or a rolling update terminates it, or returns it
# to the warm pool), the group's terminate lifecycle hook (web_tier.DRAIN_HOOK) holds the node in
# Terminating:Wait while this script:
#   1. stops the cron timer: the node starts no new cron run, so it takes no new task;
#   2. asks a running cron.php to stop with SIGTERM, which Moodle's cron takes as "finish the task you are
#      running, then exit" (core\local\cli\shutdown, the handler admin/cli/cron.php registers);
#   3. waits for it, recording a heartbeat on the hook every heartbeat_seconds, for at most drain_budget;
#   4. completes the hook with CONTINUE, and the group terminates (or stops) the node.
# The target lifecycle state is in the instance metadata (EC2 Auto Scaling User Guide, "Retrieve the
# target lifecycle state through instance metadata"); polling it needs no EventBridge rule or queue.
set -Euo pipefail

readonly share_dir=/usr/share/moodle-cfn
readonly poll_seconds=${MOODLE_CFN_DRAIN_POLL_SECONDS:-5}
readonly heartbeat_seconds=${MOODLE_CFN_HEARTBEAT_SECONDS:-120}
# An hour: the longest ad-hoc tasks (a large course's backup or restore) run that long, and the hook
# allows it (a lifecycle action lasts at most 48 hours or 100 heartbeat timeouts). A task still running
# then is left to the termination; Moodle retries an ad-hoc task whose runner died.
readonly drain_budget=3600

# shellcheck source-path=SCRIPTDIR source=platform-al2023.sh
source "${MOODLE_CFN_PLATFORM:-$share_dir/platform-al2023.sh}"
# shellcheck source-path=SCRIPTDIR source=moodle-lifecycle.sh
source "$share_dir/moodle-lifecycle.sh"

log() { printf '%s moodle-node-drain: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# Where the group is taking this node (InService, Terminated, Warmed:Stopped, Standby, Detached...);
# InService when the metadata cannot say (a node is never drained on a guess).
target_state() { imds autoscaling/target-lifecycle-state 2> /dev/null || echo InService; }

drain() {
  local state=$1 started=$SECONDS beat=$SECONDS pid
  log "the group is taking this node to $state: no new Moodle tasks here"
  platform_stop_cron_timer
  pid=$(platform_cron_pid)
  if [[ -n $pid ]]; then
    log "cron.php (pid $pid) is running: asking it to finish its current task and exit"
    kill -TERM "$pid" 2> /dev/null || true
    while kill -0 "$pid" 2> /dev/null; do
      if ((SECONDS - started >= drain_budget)); then
        log "cron.php still runs after ${drain_budget}s: leaving it to the termination"
        break
      fi
      if ((SECONDS - beat >= heartbeat_seconds)); then
        lifecycle_action record-lifecycle-action-heartbeat "$(site DRAIN_HOOK)" || true
        beat=$SECONDS
      fi
      sleep 1
    done
  fi
  log "drained in $((SECONDS - started))s"
  local status=0
  lifecycle_action complete-lifecycle-action "$(site DRAIN_HOOK)" --lifecycle-action-result CONTINUE || status=$?
  case $status in
    0) log "lifecycle hook completed" ;;
    2) log "no lifecycle action was pending for this node (a warm-pool launch): nothing to complete" ;;
  esac
}

main() {
  # Without them no heartbeat or completion could name this node: fail, and systemd starts it again.
  instance_id=$(imds instance-id) || exit 1
  group=$(imds tags/instance/aws:autoscaling:groupName) || exit 1
  local state
  while :; do
    state=$(target_state)
    # Leaving for good or for the warm pool; Standby and Detached nodes keep running and come back.
    case $state in
      Terminated | Warmed:*)
        drain "$state"
        return 0
        ;;
    esac
    sleep "$poll_seconds"
  done
}

main "$@"
