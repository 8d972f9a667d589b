<?php
// Run before every page of the [www] PHP-FPM pool (auto_prepend_file): a page that waited longer than
// MOODLE_CFN_QUEUE_SECONDS for a worker is answered 503 with Retry-After at once, without Moodle's code.
//
// Why: when pages arrive faster than the node serves them (an exam's start, a dependency that stops
// answering and holds every worker), they wait in the pool's queue. Past a point, the viewer has given
// up or reloaded (a second copy of the same page in the queue) and the work is wasted; serving stale
// requests first is what turns an overload into an outage. Shedding them costs a worker well under a
// millisecond, so the queue drains to the pages that can still be served in time.
//
// How long: 10 s (php-fpm-sizing.json, queue_seconds). Long enough for an exam's burst: at the ~10 pages
// per vCPU per second `make bench-node` measured, a 2-vCPU node serves a burst of ~200 pages arriving at
// once within it, all of them 200. Short enough that a page admitted at the bound still answers well
// within CloudFront's origin read timeout (60 s, layers/edge.py) and the load balancer's idle timeout.
//
// When the request was received: Apache's own clock, %t of mod_headers ("t=<microseconds since the
// epoch>"), set by the vhost over any header of that name a client sent.

$received = $_SERVER['HTTP_X_MOODLE_CFN_RECEIVED'] ?? '';
$limit = (float) (getenv('MOODLE_CFN_QUEUE_SECONDS') ?: 0);
if ($limit > 0 && preg_match('/^t=(\d{10,20})$/', $received, $matches)
        && microtime(true) - ((int) $matches[1]) / 1e6 > $limit) {
    http_response_code(503);
    header('Retry-After: 10');
    header('Cache-Control: no-store');
    header('Content-Type: text/plain; charset=utf-8');
    exit("The site is busy. Please try again in a few seconds.\n");
}
unset($received, $limit, $matches);
