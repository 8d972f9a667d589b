<?php
// make bench-node's changes to the shipped MUC choices, one at a time (run after muc-configure.php):
//   unmap-local   the local-safe definitions back in the application store (no node-local APCu store)
//   compression=0|1   the memcached application store (not) compressing values
define('CLI_SCRIPT', true);
require(getenv('MOODLE_DIR') . '/config.php');
$writer = cache_config_writer::instance();
if ($argv[1] === 'unmap-local') {
    foreach ($writer->get_definition_mappings() as $mapping) {
        $writer->set_definition_mappings($mapping['definition'], []);
    }
} else if (str_starts_with($argv[1], 'compression=')) {
    $store = $writer->get_all_stores()['moodle-cfn-application'];
    $writer->edit_store_instance('moodle-cfn-application', $store['plugin'],
        ['compression' => (bool) substr($argv[1], 12)] + $store['configuration']);
}
mtrace("reverted: {$argv[1]}");
