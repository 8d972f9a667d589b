<?php
// Moodle's admin/cli/install_database.php with the admin password read from stdin instead of an argument:
// an argument list is readable by every local user (/proc/PID/cmdline, ps) for as long as the install
// runs, and Moodle's CLI has no other way to take the password. The option is added to the arguments
// Moodle's cli_get_params() reads ($_SERVER['argv']), inside this process only; the process's own
// argument list (what the kernel shows) never holds it. Every other option is passed through unchanged.
// Run by moodle-node-setup.sh (install_site) as the web server user, with MOODLE_DIR set.

if (PHP_SAPI !== 'cli') {
    exit(1);
}
$password = stream_get_contents(STDIN);
if ($password === false || $password === '') {
    fwrite(STDERR, "moodle-install.php: no admin password on stdin\n");
    exit(1);
}
$_SERVER['argv'][] = '--adminpass=' . $password;
$_SERVER['argc'] = count($_SERVER['argv']);
unset($password);

require(getenv('MOODLE_DIR') . '/admin/cli/install_database.php');
