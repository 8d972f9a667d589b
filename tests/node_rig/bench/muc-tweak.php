<?php
// make bench-node's changes to the shipped MUC choices, one at a time (run after muc-configure.php):
//   map-local         the definitions Moodle declares safe to keep on each node (canuselocalstore) in a
//                     node-local APCu store (run with -d apc.enable_cli=1: Moodle refuses to add a store
//                     whose extension is off in the process that adds it)
//   unmap-strings     the language strings and menu (core/string, core/langmenu) back from the shipped
//                     node-local APCu store to the application store
//   compression=0|1   the memcached application store (not) compressing values
define('CLI_SCRIPT', true);
require(getenv('MOODLE_DIR') . '/config.php');
$writer = cache_config_writer::instance();
if ($argv[1] === 'map-local') {
    if (!array_key_exists('bench-local', $writer->get_all_stores())) {
        $writer->add_store_instance('bench-local', 'apcu', ['prefix' => 'mdl']);
    }
    foreach ($writer->get_definitions() as $id => $definition) {
        if (!empty($definition['canuselocalstore']) && $definition['mode'] == cache_store::MODE_APPLICATION) {
            $writer->set_definition_mappings($id, ['bench-local']);
        }
    }
} else if ($argv[1] === 'unmap-strings') {
    foreach (['core/string', 'core/langmenu'] as $id) {
        $writer->set_definition_mappings($id, []);
    }
} else if (str_starts_with($argv[1], 'compression=')) {
    $store = $writer->get_all_stores()['moodle-cfn-application'];
    $writer->edit_store_instance('moodle-cfn-application', $store['plugin'],
        ['compression' => (bool) substr($argv[1], 12)] + $store['configuration']);
}
mtrace("changed: {$argv[1]}");
