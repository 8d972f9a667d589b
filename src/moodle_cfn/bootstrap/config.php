<?php  // Moodle configuration file, the same on every web node (installed by moodle-cfn).
// Every site-specific value comes from the settings file the node bootstrap writes from the stack's
// outputs and secrets, so this file never holds a password and never differs between nodes.

unset($CFG);
global $CFG;
$CFG = new stdClass();

$settingsfile = getenv('MOODLE_CFN_SETTINGS') ?: '/etc/moodle-cfn/moodle.json';
$settings = json_decode(file_get_contents($settingsfile), true, 16, JSON_THROW_ON_ERROR);

$CFG->dbtype    = 'pgsql';
$CFG->dblibrary = 'native';
$CFG->dbhost    = $settings['database']['host'];
$CFG->dbname    = $settings['database']['name'];
$CFG->dbuser    = $settings['database']['user'];
$CFG->dbpass    = $settings['database']['password'];
$CFG->prefix    = 'mdl_';
// Persistent connections: each PHP-FPM worker keeps its database connection between requests instead of
// a new TLS handshake and SCRAM login per page. Measured by `make bench-node` (2 cores, 16 users, EFS
// latency model): 1.39x the pages of the same node files without it (login page 1.82x, dashboard and
// course page 1.21x), the only setting that gained more than the run-to-run noise. Each worker holds one
// connection (and one to the reader, below), so a node opens at most 2 x pm.max_children of them:
// `moodle-cfn validate` refuses params whose largest fleet could exceed the database's max_connections
// (src/moodle_cfn/layers/connections.py). Safe
// in a cluster: nothing of the connection outlives the request: at the end of every request Moodle rolls
// back an unfinished transaction and drops its temporary tables (moodle_database::dispose), releases its
// advisory locks (postgres_lock_factory::auto_release, a shutdown handler), and closes leftover cursors
// when it takes the connection again (pgsql_native_moodle_database::connect); a worker killed mid-request
// closes its connection with it.
// connecttimeout: 3 s. AWS's fast-failover guide sets its client's connect and login timeouts "as low as
// possible" (2 s in its example); 3 s also lets one lost SYN be sent again (Linux's first retransmission is
// at 1 s). A connection in the VPC takes milliseconds. libpq counts it from the connect to the end of the
// login, and the service file below bounds every later wait.
$CFG->dboptions = [
    'dbpersist' => true,
    'dbport' => (int) $settings['database']['port'],
    'connecttimeout' => 3,
];
// TCP keepalives and a user timeout for every database connection, Moodle's own included (its connection
// string has no place for them): libpq reads these variables when it connects (moodle-pg-service.conf).
$pgservice = '/usr/share/moodle-cfn/moodle-pg-service.conf';
if (is_readable($pgservice)) {
    putenv('PGSERVICEFILE=' . $pgservice);
    putenv('PGSERVICE=moodle-cfn');
}
// The Aurora reader endpoint takes the reads Moodle deems safe (its read-only replica option, Moodle 3.9+:
// lib/dml/moodle_read_slave_trait.php, moodle_read_replica_trait.php from 5.0; same `readonly` key). Moodle
// sends a SELECT to the reader unless the request is in a transaction, reads a temporary table or
// mdl_sessions / lock_db, takes or releases a pg_*lock, changed the schema, or wrote one of its tables
// less than `latency` seconds before; everything else goes to the writer. The reader logs in as the writer
// does (dbuser/dbpass/dbport inherited); with dbpersist each PHP-FPM worker keeps one connection to each
// endpoint. An unreachable reader costs a request at most `connecttimeout` before Moodle uses the writer
// alone. A reader that names the writer (the rig's legs without a replica) is left out: it would only
// double the writer's connections.
// Moodle's guard lasts one request, but the page a user loads after a form post (its redirect) is the next
// request, and an Aurora replica typically lags the writer by less than 100 ms (AWS Database Blog, "How to
// set up a single pgpool endpoint for reads and writes with Amazon Aurora PostgreSQL"). So a form post
// reads from the writer alone and marks the browser for $readerpause seconds (a cookie holding the time,
// seen by every node), during which its requests read from the writer alone too: the user sees what they
// just wrote on whichever node serves them next. Web-service calls (lib/ajax) are left out: pages make
// them on every load, mostly to read. Measured by make rehearse-node (a replica applying commits 100 ms
// late): 57% of a page mix's SELECTs ran on the reader; 6 forum posts showed on the next page on both
// nodes, and so did 6 more without the cookie: a precaution for a replica lagging more than that.
$reader = $settings['database']['reader_host'] ?? '';
$readerpause = 5;
$readercookie = 'MOODLECFN_WROTE';
$posted = PHP_SAPI !== 'cli' && ($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST'
    && !preg_match('#/lib/ajax/[^/]*\.php$#', $_SERVER['SCRIPT_NAME'] ?? '');
if ($posted) {
    setcookie($readercookie, (string) time(), ['expires' => time() + $readerpause, 'path' => '/',
        'secure' => true, 'httponly' => true, 'samesite' => 'Lax']);
}
$wroterecently = (int) ($_COOKIE[$readercookie] ?? 0) > time() - $readerpause;
// Command-line runs (cron, upgrades, the metrics agent) read from the writer alone: the task manager takes
// a task's lock, then reads its row again to see whether another node has just run it; a reader lagging
// behind would show the row as still due, and a second node would run the task again.
$commandline = defined('CLI_SCRIPT') && CLI_SCRIPT;
if ($reader !== '' && $reader !== $CFG->dbhost && !$commandline && !$posted && !$wroterecently) {
    $CFG->dboptions['readonly'] = [
        'instance' => [['dbhost' => $reader]],
        'latency' => 1,
        'connecttimeout' => 2,
    ];
}

// TLS ends at CloudFront or the load balancer: Moodle is told its address is https.
$CFG->wwwroot  = $settings['wwwroot'];
$CFG->sslproxy = true;
// The viewer's address is the last one CloudFront or the load balancer added to X-Forwarded-For.
$CFG->getremoteaddrconf = 1;

// Shared between nodes on EFS, except the local cache each node keeps on its own disk.
$CFG->dataroot      = $settings['paths']['dataroot'];
$CFG->cachedir      = $settings['paths']['cachedir'];
$CFG->tempdir       = $settings['paths']['tempdir'];
$CFG->backuptempdir = $settings['paths']['backuptempdir'];
$CFG->localcachedir = $settings['paths']['localcachedir'];
$CFG->admin = 'admin';
$CFG->directorypermissions = 02770;

// Locks through PostgreSQL advisory locks: no lock files on the shared disk.
$CFG->lock_factory = '\core\lock\postgres_lock_factory';

// Task runners across the fleet. Every node runs one cron.php at a time (moodle-cron.service), so runners
// are at most the nodes; these limits are the whole site's (Moodle counts them with its locks). Scheduled
// tasks are many short ones: 2 runners keep them on time while the other nodes' cron runs take ad-hoc work.
// Ad-hoc tasks are the long ones (backups, restores, course copies, bulk messages): 4 runners instead of
// Moodle's 3 shorten a queue of them without letting a whole fleet load the database at once. A node
// leaving the group finishes its running task first (moodle-node-drain.sh).
$CFG->task_scheduled_concurrency_limit = 2;
$CFG->task_adhoc_concurrency_limit = 4;

// Session locks: a request holds its session's lock until it ends, and releases it in the session cache.
// When that cache stops answering mid-request (a lost node, a cut-off Availability Zone), the release is
// lost and the lock stays behind: with Moodle's 7200 s expiry, every user with a page in flight at that
// moment waited the whole acquire timeout (120 s, holding a PHP-FPM worker) at each page, then got an
// error, for two hours; the pool filled with such waits and the node served no one (make rehearse-faults,
// the session cache black-holed for 20 s: all 4 users' locks left behind, their next pages 121 s each).
// Expiry 60 s: CloudFront's origin read timeout (layers/edge.py), so no viewer ever receives a page that
// held its lock longer (long work runs in cron's tasks); a lock left behind lasts at most that. Acquire
// 10 s: the longest a page waits for a PHP-FPM worker (moodle-queue-limit.php); a user's own pages rarely
// overlap that long, and a page waiting longer is answered Moodle's "wait for your current requests" error.
$sessionlockexpire = 60;
$sessionlockwait = 10;
$session = $settings['session'];
if ($session['engine'] === 'memcached') {
    $CFG->session_handler_class = '\core\session\memcached';
    $CFG->session_memcached_save_path = implode(',', $session['servers']);
    $CFG->session_memcached_prefix = 'memc.sess.key.';
    $CFG->session_memcached_acquire_lock_timeout = $sessionlockwait;
    $CFG->session_memcached_lock_expire = $sessionlockexpire;
} else {
    $CFG->session_handler_class = '\core\session\redis';
    $CFG->session_redis_host = $session['host'];
    $CFG->session_redis_port = (int) $session['port'];
    $CFG->session_redis_auth = $session['auth'];
    // valkey requires TLS. The host is bare: the handler splits host:port on ':' and its TLS comes from
    // this SSL context, which verifies the server against the system CA bundle the node names.
    $CFG->session_redis_encrypt = [
        'cafile' => $session['cafile'],
        'verify_peer' => true,
        'verify_peer_name' => true,
    ];
    $CFG->session_redis_prefix = 'sess_';
    // A valkey that stops answering: Moodle 5.x uses this for the connect and for every command's reply,
    // and tries to connect 1 + max_retries times (lib/classes/session/redis.php), 3 s and 3 by default
    // (about 10.5 s). 2 s and 1: about 4.5 s at most, still 2,000 times a reply's usual time in the VPC
    // (AWS's ElastiCache PHP example gives every command 2 s). Moodle 4.5 fixes 10 s and 5 tries.
    $CFG->session_redis_connection_timeout = 2;
    $CFG->session_redis_max_retries = 1;
    $CFG->session_redis_acquire_lock_timeout = $sessionlockwait;
    $CFG->session_redis_lock_expire = $sessionlockexpire;
}

// Moodle 5.0+: the web server sends unknown paths to r.php (FallbackResource in the vhost).
if (!empty($settings['router'])) {
    $CFG->routerconfigured = true;
}

// Outgoing mail (README: E-mail): Amazon SES's SMTP endpoint or the operator's relay, STARTTLS on 587 and
// AUTH LOGIN, the login from the node's settings; set here, so the admin pages show them as fixed. No
// relay (a site without a domain): Moodle's defaults, and no mail leaves the node.
$mail = $settings['mail'] ?? [];
if (!empty($mail['smtphosts'])) {
    $CFG->smtphosts    = $mail['smtphosts'];
    $CFG->smtpsecure   = 'tls';
    $CFG->smtpauthtype = 'LOGIN';
    $CFG->smtpuser     = $mail['user'];
    $CFG->smtppass     = $mail['password'];
}
if (!empty($mail['noreplyaddress'])) {
    $CFG->noreplyaddress = $mail['noreplyaddress'];
}
if (!empty($mail['allowedemaildomains'])) {
    $CFG->allowedemaildomains = $mail['allowedemaildomains'];
}

// A node whose code is not the code the database runs (another node upgraded it) answers 503 until the
// load balancer and Auto Scaling have replaced it, instead of Moodle's errors against a newer database.
// The flag is set below by the first page that finds out; the health check (moodle-health.php) reads it.
$nodestale = $CFG->localcachedir . '/node-stale';
$webrequest = !$commandline;
$stalepage = function (): void {
    http_response_code(503);
    header('Retry-After: 30');
    exit("This server is being replaced after an upgrade. Please reload the page.\n");
};
if ($webrequest && file_exists($nodestale)) {
    $stalepage();
}

// Moodle 5.1 moved the web-facing code into public/; config.php stays at the top.
require_once(is_dir(__DIR__ . '/public') ? __DIR__ . '/public/lib/setup.php' : __DIR__ . '/lib/setup.php');

// Moodle has just read the database's allversionshash with the rest of its settings: compare it with the
// hash of this node's code (ready.json, from moodle-node-ready.sh), at no extra cost per page.
if ($webrequest && !empty($CFG->allversionshash)) {
    $ready = json_decode((string) @file_get_contents('/etc/moodle-cfn/ready.json'), true);
    if (!empty($ready['versionshash']) && $ready['versionshash'] !== $CFG->allversionshash) {
        @touch($nodestale);
        $stalepage();
    }
}

// There is no php closing tag in this file, on purpose.
