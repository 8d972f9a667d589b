<?php
// Moodle's own health, for CloudWatch (README: What CloudWatch watches). Run every minute on every node by
// moodle-metrics.sh, as the web server's user; prints the metrics as JSON for root to publish, or nothing
// when another node has already done it for this minute: the site publishes once per minute, not once per
// node.
//
// Once per site: Moodle's lock factory (PostgreSQL advisory locks here, config.php) lets one node at a
// time in, and the minute it last published is recorded in the database under that lock, so the next node
// in the same minute finds it and stops. Read and written with $DB, never through get_config/set_config:
// the value must come from the database every time (no cache in between), and writing it must not
// invalidate a cache every minute. Nothing else reads it.
//
// Every value is read from the tables, not from caches: what the site's cron actually recorded.

define('CLI_SCRIPT', true);

require(getenv('MOODLE_DIR') . '/config.php');

const METRICS_PLUGIN = 'moodle_cfn';
const METRICS_LAST_MINUTE = 'metricslastminute';

/**
 * One datapoint for put-metric-data (root adds the site's dimension).
 */
function datum(string $name, float $value, string $unit): array {
    return ['MetricName' => $name, 'Value' => round($value, 2), 'Unit' => $unit];
}

/**
 * The minute this node may publish, or null when another node published it already. Called under the lock.
 */
function claim_minute(int $now): ?int {
    global $DB;
    $minute = intdiv($now, MINSECS);
    $conditions = ['plugin' => METRICS_PLUGIN, 'name' => METRICS_LAST_MINUTE];
    $record = $DB->get_record('config_plugins', $conditions);
    if ($record && (int) $record->value >= $minute) {
        return null;
    }
    if ($record) {
        $DB->set_field('config_plugins', 'value', (string) $minute, ['id' => $record->id]);
    } else {
        $DB->insert_record('config_plugins', (object) ($conditions + ['value' => (string) $minute]));
    }
    return $minute;
}

/**
 * Minutes since Moodle's cron last started a run. Moodle records when each cron run starts
 * (tool_task/lastcronstart, set by \core\cron::run_main_process; its own "Cron running" check reads the
 * same value) and never when one completes. A run that hangs still stops this value from being renewed:
 * systemd does not start moodle-cron.service again while it is running. Before the first run: minutes
 * since the site was installed (its first upgrade log entry).
 */
function minutes_since_cron_started(int $now): float {
    global $DB;
    $started = $DB->get_field('config_plugins', 'value', ['plugin' => 'tool_task', 'name' => 'lastcronstart']);
    if (empty($started)) {
        $started = $DB->get_field_sql('SELECT MIN(timemodified) FROM {upgrade_log}');
    }
    return max(0, $now - (int) $started) / MINSECS;
}

/**
 * Every metric of the site at $now.
 */
function site_metrics(int $now): array {
    global $DB;
    // Enabled scheduled tasks whose last run failed (Moodle retries each after a fail delay that doubles,
    // from 60 s to 24 hours: \core\task\manager::scheduled_task_failed).
    $scheduled = $DB->get_record_sql(
        'SELECT COUNT(*) AS failing, COALESCE(MAX(faildelay), 0) AS maxdelay
           FROM {task_scheduled} WHERE faildelay > 0 AND disabled = 0'
    );
    // The ad-hoc queue: every queued task (as admin/tool/task's adhocqueue check counts), the ones whose
    // last run failed, and how long the oldest task that is due has waited without a runner taking it.
    $adhoc = $DB->get_record_sql(
        'SELECT COUNT(*) AS queued,
                COUNT(CASE WHEN faildelay > 0 THEN 1 END) AS failing,
                COALESCE(MAX(CASE WHEN timestarted IS NULL AND nextruntime <= :now1 THEN :now2 - nextruntime END), 0)
                    AS oldestdue
           FROM {task_adhoc}',
        ['now1' => $now, 'now2' => $now]
    );
    return [
        datum('MinutesSinceLastCronStart', minutes_since_cron_started($now), 'None'),
        datum('FailingScheduledTasks', $scheduled->failing, 'Count'),
        datum('ScheduledTaskMaxFailDelaySeconds', $scheduled->maxdelay, 'Seconds'),
        datum('AdhocTasksQueued', $adhoc->queued, 'Count'),
        datum('OldestDueAdhocTaskMinutes', $adhoc->oldestdue / MINSECS, 'None'),
        datum('FailingAdhocTasks', $adhoc->failing, 'Count'),
        // The code on this node is newer than the database (the same test cron makes before it refuses to
        // run: "Moodle upgrade pending, cron execution suspended").
        datum('UpgradePending', moodle_needs_upgrading() ? 1 : 0, 'Count'),
    ];
}

$factory = \core\lock\lock_config::get_lock_factory('moodle_cfn_metrics');
// Another node holding it for more than a few seconds is publishing this minute itself.
$lock = $factory->get_lock('publish', 10);
if (!$lock) {
    fwrite(STDERR, "another node is publishing the site's metrics\n");
    exit(0);
}
try {
    $now = time();
    // Measured first: a database error leaves the minute unclaimed, for another node to try.
    $metrics = site_metrics($now);
    $published = claim_minute($now) !== null;
} finally {
    $lock->release();
}
if (!$published) {
    fwrite(STDERR, "another node published the site's metrics for this minute\n");
    exit(0);
}
echo json_encode($metrics, JSON_THROW_ON_ERROR), "\n";
