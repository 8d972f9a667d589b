#!/bin/bash
# The PHP-FPM pool a node can afford, from its memory and CPUs. Sourced by moodle-node-setup.sh; run on its
# own (php-fpm-size.sh MEMORY_MIB VCPUS) by the tests, which check it against the rule that
# src/moodle_cfn/node_sizing.py applies to budget the database connections of the largest fleet.
#
# The rule (constants in php-fpm-sizing.json, PHP's limits in php-moodle.ini):
#   reserved = the system and its agents + OPcache and APCu shared memory + one cron run at memory_limit
#              (moodle-cron.service runs one cron.php at a time);
#   a worker = a quarter of memory_limit (128 MiB of 512 MiB): a Moodle page measured ~70 MiB resident
#              (README, Node performance and sizing), memory_limit is the rare page's ceiling;
#   workers  = (memory - reserved) / a worker, at most 8 per vCPU: pages are CPU-bound (50-60 ms of CPU
#              each), so more workers only hold memory and database connections while they queue;
#              at least 4.
# The queue in front of the workers (php-fpm-moodle.conf, moodle-vhost.conf, moodle-queue-limit.php):
#   backlog  = the pages the node serves in queue_seconds (10 s), at queue_pages_per_vcpu_second (10: the
#              69-105 ms of CPU per page `make bench-node` measured) per vCPU; pages beyond it get a 503;
#   Apache   = one process with a thread for every worker and every queued page (page_connections, the
#              limit mod_proxy holds pages to) and a reserve (the health check, what never reaches PHP).
# Sets fpm_max_children, fpm_start_servers, fpm_min_spare_servers, fpm_max_spare_servers, fpm_listen_backlog,
# fpm_queue_seconds, page_connections, apache_threads, apache_spare_threads.

# "512M" or "1G" (php.ini shorthand) in MiB.
php_size_mib() {
  local value=${1^^}
  case $value in
    *G) echo $((${value%G} * 1024)) ;;
    *M) echo "${value%M}" ;;
    *K) echo $((${value%K} / 1024)) ;;
    *) echo $((value / 1048576)) ;;
  esac
}

# The value of `key = value` in an ini file.
ini_value() { sed -n "s/^$2[[:space:]]*=[[:space:]]*\([^[:space:];]*\).*/\1/p" "$1" | tail -n 1; }

size_php_fpm_pool() {
  local memory_mib=$1 vcpus=$2 sizing=$3 ini=$4
  local memory_limit opcache apcu reserve_mib worker_mib by_memory by_cpu minimum
  memory_limit=$(php_size_mib "$(ini_value "$ini" memory_limit)")
  opcache=$(ini_value "$ini" 'opcache\.memory_consumption')
  apcu=$(php_size_mib "$(ini_value "$ini" 'apc\.shm_size')")
  reserve_mib=$(($(jq -r .system_reserve_mib "$sizing") + opcache + apcu + memory_limit))
  worker_mib=$(jq -r --argjson limit "$memory_limit" '$limit * .worker_fraction_of_memory_limit | floor' "$sizing")
  by_memory=$(((memory_mib - reserve_mib) / worker_mib))
  by_cpu=$((vcpus * $(jq -r .workers_per_vcpu "$sizing")))
  minimum=$(jq -r .min_workers "$sizing")
  fpm_max_children=$((by_memory < by_cpu ? by_memory : by_cpu))
  ((fpm_max_children >= minimum)) || fpm_max_children=$minimum
  fpm_start_servers=$((fpm_max_children / 4 > 2 ? fpm_max_children / 4 : 2))
  fpm_min_spare_servers=$((fpm_max_children / 8 > 2 ? fpm_max_children / 8 : 2))
  fpm_max_spare_servers=$((fpm_max_children / 2 > fpm_min_spare_servers ? fpm_max_children / 2 : fpm_min_spare_servers + 1))
  fpm_queue_seconds=$(jq -r .queue_seconds "$sizing")
  fpm_listen_backlog=$((vcpus * fpm_queue_seconds * $(jq -r .queue_pages_per_vcpu_second "$sizing")))
  page_connections=$((fpm_max_children + fpm_listen_backlog))
  apache_threads=$((page_connections + $(jq -r .apache_reserve_threads "$sizing")))
  apache_spare_threads=$((apache_threads + 25))
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  here=$(dirname "$0")
  size_php_fpm_pool "$1" "$2" "$here/php-fpm-sizing.json" "$here/php-moodle.ini"
  printf '%s %s %s %s %s %s %s\n' "$fpm_max_children" "$fpm_start_servers" "$fpm_min_spare_servers" \
    "$fpm_max_spare_servers" "$fpm_listen_backlog" "$page_connections" "$apache_threads"
fi
