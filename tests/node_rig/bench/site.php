<?php
// The benchmark's course and users (run once on one node, as the web server user, by make bench-node):
// a course with a dozen activities in four sections, and N students enrolled in it. Prints the course id.
// Usage: php site.php USERS PASSWORD
define('CLI_SCRIPT', true);
require(getenv('MOODLE_DIR') . '/config.php');
require_once($CFG->libdir . '/testing/generator/lib.php');

[, $users, $password] = $argv;
$generator = new testing_data_generator();
$course = $DB->get_record('course', ['shortname' => 'bench']);
if (!$course) {
    $course = $generator->create_course(['shortname' => 'bench', 'fullname' => 'Benchmark course', 'numsections' => 4]);
    $activities = ['page', 'forum', 'label', 'assign', 'url', 'page', 'forum', 'label', 'assign', 'url', 'page', 'quiz'];
    foreach ($activities as $n => $module) {
        $generator->create_module($module, ['course' => $course->id, 'section' => $n % 4 + 1]);
    }
}
for ($i = 1; $i <= (int) $users; $i++) {
    $user = $DB->get_record('user', ['username' => "bench$i"]) ?:
        $generator->create_user(['username' => "bench$i", 'password' => $password]);
    $generator->enrol_user($user->id, $course->id, 'student');
}
echo json_encode(['course' => (int) $course->id]), "\n";
