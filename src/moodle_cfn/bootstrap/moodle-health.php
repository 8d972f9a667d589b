<?php
// The load balancer's health check (the vhost aliases the health path here, for the load balancer's own
// requests only). What Auto Scaling replaces a node on must depend on that node alone, never on a
// dependency the whole fleet shares (Builders' Library, "Implementing health checks": a deep check of a
// shared dependency turns its blip into the loss of every node). So this reads two files on the node's own
// disk, with no database, cache or EFS access: it answers 200 when Apache, PHP-FPM and this script run and
// the node's setup finished (ready.json, written by moodle-node-ready.sh), and 503 when the node's code is
// older than the database's, which config.php finds on the first page it serves after an upgrade made
// elsewhere (the node-stale flag: the node must be replaced by one with the new code).

header('Content-Type: text/plain');
header('Cache-Control: no-store');

function answer(int $status, string $text): void {
    http_response_code($status);
    echo $text, "\n";
    exit;
}

$ready = json_decode((string) @file_get_contents('/etc/moodle-cfn/ready.json'), true);
if (!is_array($ready) || empty($ready['versionshash']) || empty($ready['stale_flag'])) {
    answer(503, 'not ready');
}
if (file_exists($ready['stale_flag'])) {
    answer(503, 'code and database differ');
}
answer(200, 'ok');
