<?php
// The load balancer's health check (the vhost aliases the health path here). 200 only when this node
// serves this site's Moodle: its setup finished (ready.json, written by moodle-node-ready.sh) and its code
// is the code the database was installed or upgraded with, by Moodle's own measure (allversionshash,
// what moodle_needs_upgrading() compares). A node left on older code after an upgrade answers 503 and
// leaves the load balancer; until it has left, config.php answers its pages with a 503 "being replaced"
// (the stale flag below), not with Moodle's errors against a newer database. One query per check; with the database down every node answers 503, and a
// target group whose targets are all unhealthy sends traffic to all of them (fail open).

header('Content-Type: text/plain');
header('Cache-Control: no-store');

function answer(int $status, string $text): void {
    http_response_code($status);
    echo $text, "\n";
    exit;
}

$ready = json_decode((string) @file_get_contents('/etc/moodle-cfn/ready.json'), true);
if (!is_array($ready) || empty($ready['versionshash'])) {
    answer(503, 'not ready');
}
$settings = json_decode((string) @file_get_contents(getenv('MOODLE_CFN_SETTINGS') ?: '/etc/moodle-cfn/moodle.json'), true);
$database = $settings['database'] ?? null;
if (!is_array($database)) {
    answer(503, 'no settings');
}
// libpq keyword/value string: values quoted, with quotes and backslashes escaped.
$quote = fn($value) => "'" . addcslashes((string) $value, "'\\") . "'";
$connection = @pg_connect(implode(' ', [
    'host=' . $quote($database['host']),
    'port=' . $quote($database['port']),
    'dbname=' . $quote($database['name']),
    'user=' . $quote($database['user']),
    'password=' . $quote($database['password']),
    'connect_timeout=3',
]), PGSQL_CONNECT_FORCE_NEW);
if ($connection === false) {
    answer(503, 'database unreachable');
}
$result = @pg_query($connection, "SELECT value FROM mdl_config WHERE name = 'allversionshash'");
$installed = $result ? pg_fetch_result($result, 0, 0) : false;
pg_close($connection);
$stale = ($settings['paths']['localcachedir'] ?? '/var/cache/moodle') . '/node-stale';
if ($installed !== false && $installed !== $ready['versionshash']) {
    @touch($stale);
    answer(503, 'code and database differ');
}
@unlink($stale);
answer($installed === false ? 503 : 200, $installed === false ? 'not installed' : 'ok');
