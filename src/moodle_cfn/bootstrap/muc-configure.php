<?php
// Points Moodle's application cache (MUC) at the application cache cluster: one store instance, and the
// application mode mapped to it alone. A second store in the mapping would be a chain: every write would
// also go to the shared file cache on EFS. The language strings and menu alone are kept on each node
// (below). Run as the web server user after install and upgrade, with `php -d apc.enable_cli=1` (Moodle
// adds an APCu store only in a process where APCu is on); safe to run again (it edits what exists).

define('CLI_SCRIPT', true);

require(getenv('MOODLE_DIR') . '/config.php');
// No require: since Moodle 4.5 the cache classes autoload (MDL-82158 removed cache/locallib.php).

$settingsfile = getenv('MOODLE_CFN_SETTINGS') ?: '/etc/moodle-cfn/moodle.json';
$settings = json_decode(file_get_contents($settingsfile), true, 16, JSON_THROW_ON_ERROR);
$application = $settings['application'];
$name = 'moodle-cfn-application';

if ($application['engine'] === 'memcached') {
    $plugin = 'memcached';
    $servers = [];
    foreach ($application['servers'] as $server) {
        [$host, $port] = explode(':', $server);
        $servers[] = [$host, (int) $port];
    }
    $configuration = [
        'servers' => $servers,
        'compression' => true,
        'serialiser' => Memcached::SERIALIZER_PHP,
        'prefix' => 'mdl_',
        'hash' => Memcached::HASH_DEFAULT,
        'bufferwrites' => false,
        'clustered' => false,
        'setservers' => [],
        'isshared' => false,
    ];
} else {
    $plugin = 'redis';
    $configuration = [
        'server' => $application['host'] . ':' . $application['port'],
        'prefix' => 'mdl_',
        'password' => $application['auth'],
        'serializer' => Redis::SERIALIZER_PHP,
        'compressor' => 0,
        // The store adds tls:// to the bare host itself; an empty cafile would turn verification off.
        'encryption' => true,
        'cafile' => $application['cafile'],
        // Its connect and reply timeout (Moodle 5.x; 4.5 fixes 10 s): 2 s for the reasons config.php
        // gives for the session's. A store that cannot connect is left out for the request (Moodle
        // reads through to the database).
        'connectiontimeout' => 2,
    ];
}

/** Adds the store instance, or edits it to this configuration when it exists. */
function moodle_cfn_put_store(cache_config_writer $writer, string $name, string $plugin, array $configuration): void {
    if (array_key_exists($name, $writer->get_all_stores())) {
        $writer->edit_store_instance($name, $plugin, $configuration);
    } else {
        $writer->add_store_instance($name, $plugin, $configuration);
    }
}

$writer = cache_config_writer::instance();
moodle_cfn_put_store($writer, $name, $plugin, $configuration);
$writer->set_mode_mappings([
    cache_store::MODE_APPLICATION => [$name],
    cache_store::MODE_SESSION => ['default_session'],
    cache_store::MODE_REQUEST => ['default_request'],
]);
mtrace("application cache: {$plugin} store {$name}, mapped alone to the application mode");

// The language strings and the language menu in APCu, each node's own shared memory. Every page reads
// each component's whole string array; from the application cluster that was 9.2% of the web node's PHP
// CPU (make bench-node's profile, docs/benchmark.md). Safe on a cluster: both definitions are declared
// canuselocalstore, and Moodle keys them by the language revision ($CFG->langrev, raised by every string
// customisation, language pack and upgrade) precisely "to store string + lang menu caches in local
// caches on cluster nodes" (core_string_manager_standard::get_key_suffix), so no node reads an old
// string. A CLI process (cron) has APCu off; Moodle then gives it a dummy store for these two (core_cache
// factory::create_cache), so it reads the string files. Bounded by the installed languages; apc.shm_size
// (php-moodle.ini) holds them.
// Measured (make bench-node, Moodle's plan size S, two rounds in alternating order, memcached leg):
// PHP-FPM CPU per plan step 78.2 -> 74.8 ms (-4.3%; -5.8% and -2.5% in the two rounds), the cache
// server's 5.6 -> 5.1 ms, throughput +4%, 0 errors in 4,200 steps each.
$local = 'moodle-cfn-node-local';
moodle_cfn_put_store($writer, $local, 'apcu', ['prefix' => 'mdl_']);
foreach (['core/string', 'core/langmenu'] as $definition) {
    $writer->set_definition_mappings($definition, [$local]);
}
mtrace("language strings and menu: apcu store {$local} on each node");
