<?php
// The reference architecture's caches: Moodle's default MUC configuration (the application cache in the
// file store in cachedir, on EFS), which is what its README leaves until an administrator maps the
// ElastiCache store in the admin UI (aws-samples/aws-refarch-moodle README.md, "Application Caching").
define('CLI_SCRIPT', true);
require(getenv('MOODLE_DIR') . '/config.php');
$writer = cache_config_writer::instance();
$writer->set_mode_mappings([
    cache_store::MODE_APPLICATION => ['default_application'],
    cache_store::MODE_SESSION => ['default_session'],
    cache_store::MODE_REQUEST => ['default_request'],
]);
foreach ($writer->get_definition_mappings() as $mapping) {
    $writer->set_definition_mappings($mapping['definition'], []);
}
mtrace('application cache: default file store (the reference architecture before an administrator maps one)');
