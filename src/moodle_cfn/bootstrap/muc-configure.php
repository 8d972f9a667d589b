<?php
// Points Moodle's application cache (MUC) at the application cache cluster: one store instance, and the
// application mode mapped to it alone. A second store in the mapping would be a chain: every write would
// also go to the shared file cache on EFS. Run as the web server user after install and upgrade; safe
// to run again (it edits the instance when it exists).

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
    ];
}

$writer = cache_config_writer::instance();
$existing = $writer->get_all_stores();
if (array_key_exists($name, $existing)) {
    $writer->edit_store_instance($name, $plugin, $configuration);
} else {
    $writer->add_store_instance($name, $plugin, $configuration);
}
$writer->set_mode_mappings([
    cache_store::MODE_APPLICATION => [$name],
    cache_store::MODE_SESSION => ['default_session'],
    cache_store::MODE_REQUEST => ['default_request'],
]);
mtrace("application cache: {$plugin} store {$name}, mapped alone to the application mode");
