<?php
// make bench-node's exam-start storm: a course with N students (made once) and, at each call, a new quiz of
// QUESTIONS true/false questions on one page, every question in the quiz's own question bank (a context
// both Moodle 4.5 and 5.x keep questions in). A new quiz per configuration: each starts from no attempts.
// Run on one node as the web server user. Prints JSON: the quiz's course module id.
// Usage: php storm.php STUDENTS PASSWORD QUESTIONS TAG
define('CLI_SCRIPT', true);
require(getenv('MOODLE_DIR') . '/config.php');
require_once($CFG->libdir . '/testing/generator/lib.php');
require_once($CFG->dirroot . '/mod/quiz/locallib.php');

[, $students, $password, $questions, $tag] = $argv;
\core\session\manager::set_user(get_admin());
$generator = new testing_data_generator();
$course = $DB->get_record('course', ['shortname' => 'benchstorm']) ?:
    $generator->create_course(['shortname' => 'benchstorm', 'fullname' => 'Exam-start storm']);
for ($i = 1; $i <= (int) $students; $i++) {
    $user = $DB->get_record('user', ['username' => "storm$i"]) ?:
        $generator->create_user(['username' => "storm$i", 'password' => $password]);
    $generator->enrol_user($user->id, $course->id, 'student');
}
$quiz = $generator->create_module('quiz', [
    'course' => $course->id, 'name' => "Exam $tag", 'questionsperpage' => 0, 'grade' => 100,
    'sumgrades' => (int) $questions,
]);
$questiongenerator = $generator->get_plugin_generator('core_question');
$category = $questiongenerator->create_question_category(['contextid' => context_module::instance($quiz->cmid)->id]);
for ($n = 1; $n <= (int) $questions; $n++) {
    $question = $questiongenerator->create_question('truefalse', null, ['category' => $category->id, 'name' => "Q$n"]);
    quiz_add_quiz_question($question->id, $quiz);
}
echo json_encode(['cmid' => (int) $quiz->cmid], JSON_THROW_ON_ERROR), "\n";
