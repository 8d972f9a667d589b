<?php
// make bench-node's workload: Moodle's own load-test course and plan, made by Moodle's own generator
// (admin/tool/generator, what its CLI scripts maketestcourse.php and maketestplan.php call), run once on one
// node as the web server user. Prints JSON: the course id, the JMeter plan (.jmx) and the users file (.csv).
// Usage: php plan.php SIZE PASSWORD   (SIZE: XS, S, M, ...; the same size for the course and the plan)
define('CLI_SCRIPT', true);
require(getenv('MOODLE_DIR') . '/config.php');

[, $sizename, $password] = $argv;
// The users file's password: create_users_file sets every exported user's password to it.
$CFG->tool_generator_users_password = $password;
\core\session\manager::set_user(get_admin());
$shortname = 'benchplan_' . strtolower($sizename);
$courseid = $DB->get_field('course', 'id', ['shortname' => $shortname]);
if (!$courseid) {
    // Fixed data set: the same course every run (no random file contents or names).
    $backend = new tool_generator_course_backend(
        $shortname, tool_generator_course_backend::size_for_name($sizename), true, false, false
    );
    $courseid = $backend->make();
}
$size = tool_generator_testplan_backend::size_for_name($sizename);
if ($errors = tool_generator_testplan_backend::has_selected_course_any_problem($shortname, $size)) {
    fwrite(STDERR, implode("\n", $errors) . "\n");
    exit(1);
}
$users = tool_generator_testplan_backend::create_users_file($courseid, true, $size);
$plan = tool_generator_testplan_backend::create_testplan_file($courseid, $size);
echo json_encode(['course' => (int) $courseid, 'plan' => $plan->get_content(), 'users' => $users->get_content()],
    JSON_THROW_ON_ERROR), "\n";
