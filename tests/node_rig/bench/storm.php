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
require_once($CFG->libdir . '/questionlib.php');

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
// The quiz's default question category: made by question_make_default_categories on 4.5, by
// question_get_default_category(..., true) on 5.x (which removed the former).
$context = context_module::instance($quiz->cmid);
$category = function_exists('question_make_default_categories')
    ? question_make_default_categories([$context])
    : question_get_default_category($context->id, true);
// Each question saved as the question editing form saves it (qtype_truefalse's own test helper's form
// data; the test generators need PHPUnit). The statement is true: a student answers True.
for ($n = 1; $n <= (int) $questions; $n++) {
    $html = fn(string $text): array => ['text' => $text, 'format' => FORMAT_HTML];
    $form = (object) [
        'category' => $category->id . ',' . $category->contextid, 'name' => "Q$n",
        'questiontext' => $html("Statement $n is true."), 'generalfeedback' => $html(''), 'defaultmark' => 1,
        'correctanswer' => '1', 'feedbacktrue' => $html('Right.'), 'feedbackfalse' => $html('Wrong.'),
        'penalty' => 1, 'status' => \core_question\local\bank\question_version_status::QUESTION_STATUS_READY,
    ];
    $question = (object) ['category' => $category->id, 'qtype' => 'truefalse', 'createdby' => $USER->id];
    $question = question_bank::get_qtype('truefalse')->save_question($question, $form);
    quiz_add_quiz_question($question->id, $quiz);
}
echo json_encode(['cmid' => (int) $quiz->cmid], JSON_THROW_ON_ERROR), "\n";
