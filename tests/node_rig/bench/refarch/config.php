<?php  // The reference architecture's config.php choices, for make bench-node's baseline (never shipped).
// From aws-samples/aws-refarch-moodle templates/04-web.yaml and templates/03-pipelinehelper.yaml
// (/tmp/config.php): dataroot, cachedir and tempdir on EFS, localcachedir on the instance disk, sessions
// in memcached (lock expiry 7100 s, retry sleep 150 ms), no persistent database connections, the default
// lock factory, and no application-cache mapping (caches on files until an administrator maps a store).
// The endpoints and credentials are this rig's, read from the settings file the node setup wrote.
unset($CFG);
global $CFG;
$CFG = new stdClass();
$settings = json_decode(file_get_contents('/etc/moodle-cfn/moodle.json'), true, 16, JSON_THROW_ON_ERROR);

$CFG->dbtype    = 'pgsql';
$CFG->dblibrary = 'native';
$CFG->dbhost    = $settings['database']['host'];
$CFG->dbname    = $settings['database']['name'];
$CFG->dbuser    = $settings['database']['user'];
$CFG->dbpass    = $settings['database']['password'];
$CFG->prefix    = 'mdl_';
$CFG->dboptions = [
    'dbpersist' => false,
    'dbsocket' => false,
    'dbport' => (int) $settings['database']['port'],
    'dbhandlesoptions' => false,
];
$CFG->wwwroot  = $settings['wwwroot'];
$CFG->sslproxy = true;
$CFG->dataroot      = $settings['paths']['dataroot'];
$CFG->tempdir       = $settings['paths']['tempdir'];
$CFG->cachedir      = $settings['paths']['cachedir'];
$CFG->localcachedir = $settings['paths']['localcachedir'];
$CFG->directorypermissions = 02777;
$CFG->admin = 'admin';
$CFG->dbsessions = false;
$CFG->session_handler_class = '\core\session\memcached';
$CFG->session_memcached_save_path = implode(',', $settings['session']['servers']);
$CFG->session_memcached_prefix = 'memc.sess.key.';
$CFG->session_memcached_acquire_lock_timeout = 120;
$CFG->session_memcached_lock_expire = 7100;
$CFG->session_memcached_lock_retry_sleep = 150;
require_once(__DIR__ . '/lib/setup.php');
