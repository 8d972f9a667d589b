<?php
// Prints the components whose code on this node is older than what the database records (one per line:
// "component code-version < database-version") and exits 3 when there is any, 0 when there is none.
// Run by moodle-node-setup.sh as the web server user, before it would upgrade. Moodle's own
// `upgrade.php --is-pending` tells a core downgrade (exit 1) but sees a plugin downgrade as a pending
// upgrade (exit 2), which then fails part-way ("Cannot downgrade mod_label"): a stack rollback to an older
// bundle or plugin pin must be told apart before that, so the node serves the code the database runs.

define('CLI_SCRIPT', true);
define('CACHE_DISABLE_ALL', true);

require(getenv('MOODLE_DIR') . '/config.php');

$older = [];
foreach (core_component::get_all_versions() as $component => $code) {
    $recorded = $component === 'core' ? ($CFG->version ?? null) : get_config($component, 'version');
    if ($recorded !== false && $recorded !== null && $recorded !== '' && (float) $code < (float) $recorded) {
        $older[] = "$component $code < $recorded";
    }
}
echo implode("\n", $older), $older ? "\n" : '';
exit($older ? 3 : 0);
