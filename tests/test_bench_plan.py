"""make bench-node's replay of Moodle's own load-test plan (tests/node_rig/bench_plan.py).

The plan is read from the template Moodle's generator fills (admin/tool/generator/testplan.template.jmx, in
the fixtures' 4.5.0 and 5.1.3 code), filled the way tool_generator_testplan_backend::generate_test_plan
fills it, and replayed against a stand-in of the pages it visits: a login that needs the token from the
login page and the session cookie, a reply form whose hidden fields the reply must send back, a logout that
needs the sesskey. What the replay sends is what the stand-in checks.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.node_rig import flamegraph
from tests.node_rig.bench_plan import Plan, cpu_by_program, parse_plan, replay, substitute
from tests.node_rig.bench_storm import attempt_answers
from tests.node_rig.rehearse_node import FIXTURES

TEMPLATES = {
    "4.5.0": "moodle/admin/tool/generator/testplan.template.jmx",
    "5.1.3": "moodle/public/admin/tool/generator/testplan.template.jmx",
}
# The plan's steps, in order, as Moodle 4.5 and 5.1 write them.
STEPS = [
    "Frontpage not logged", "View login page", "Login", "Frontpage logged", "View course", "View a page activity",
    "View course again", "View a forum activity", "View a forum discussion",
    "Fill a form to reply a forum discussion", "Send the forum discussion reply", "View course once more",
    "View course participants", "Logout",
]  # fmt: skip
FILLED = {"USERS": "3", "LOOPS": "2", "RAMPUP": "0", "HOST": "moodle.rig.test", "SITEPATH": "", "SIZE": "XS",
          "COURSEID": "7", "PAGEACTIVITYID": "11", "FORUMACTIVITYID": "12", "FORUMDISCUSSIONID": "13",
          "FORUMREPLYID": "14", "MOODLEVERSION": "2024100700"}  # fmt: skip


def moodle_plan(release: str, users_csv: str) -> Plan:
    with tarfile.open(FIXTURES / f"moodle-{release}.tar.gz") as archive:
        member = archive.extractfile(TEMPLATES[release])
        assert member is not None
        jmx = member.read().decode()
    for name, value in FILLED.items():
        jmx = jmx.replace("{{" + name + "_PLACEHOLDER}}", value)
    return parse_plan(jmx, users_csv)


@pytest.mark.parametrize("release", sorted(TEMPLATES))
def test_the_plan_is_read_step_for_step_from_moodles_template(release: str) -> None:
    plan = moodle_plan(release, "student1,pw\nstudent2,pw\n")
    assert [step.name for step in plan.steps] == STEPS
    assert (plan.threads, plan.loops, plan.rampup_seconds) == (3, 2, 0.0)
    assert plan.credentials == (("student1", "pw"), ("student2", "pw"))
    login = plan.steps[STEPS.index("Login")]
    assert login.method == "POST" and substitute(login.path, plan.variables) == "/login/index.php"
    assert [name for name, _ in login.arguments] == ["username", "password", "logintoken"]
    assert login.assertions and login.assertions[0].search('<div class="logininfo">You are logged in as')
    # Every ${NAME} a step sends is a plan variable, a users-file column, or extracted by an earlier step.
    known = {*plan.variables, "username", "password"}
    for step in plan.steps:
        for text in (step.path, *(value for _, value in step.arguments)):
            missing = set(re.findall(r"\$\{(\w+)\}", text)) - known
            assert not missing, (step.name, missing)
        known |= {extractor.variable for extractor in step.extractors}


class StandIn(BaseHTTPRequestHandler):
    """The pages the plan visits, checking what a real Moodle would refuse."""

    sessions: ClassVar[dict[str, str | None]] = {}  # session cookie -> logged-in user
    replies: ClassVar[list[tuple[str, str]]] = []
    requests_by_port: ClassVar[dict[int, int]] = {}
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _session(self) -> str | None:
        match = re.search(r"MoodleSession=(\w+)", self.headers.get("Cookie", ""))
        return match.group(1) if match and match.group(1) in self.sessions else None

    def _answer(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _page(self, session: str | None, extra: str = "") -> None:
        user = self.sessions.get(session) if session else None
        who = f'<div class="logininfo">You are logged in as {user}</div>' if user else "not logged in"
        self._answer(200, f"<html>{extra}{who}</html>")

    def do_GET(self) -> None:
        with self.lock:
            port = self.server.server_address[1]
            self.requests_by_port[port] = self.requests_by_port.get(port, 0) + 1
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        session = self._session()
        if url.path == "/login/index.php":
            session = session or f"s{len(self.sessions)}"
            self.sessions.setdefault(session, None)
            token = f"token{session}"
            self._answer(200, f'<input type="hidden" name="logintoken" value="{token}">',
                         {"Set-Cookie": f"MoodleSession={session}; path=/"})  # fmt: skip
        elif (
            url.path == "/mod/forum/post.php"
            and query.get("reply") == "14"
            and session
            and self.sessions[session]
        ):
            self._page(session, f'<input name="userid" type="hidden" value="5">'
                                f'<input name="sesskey" type="hidden" value="key{session}">'
                                f'<input value="901" name="attachments" type="hidden">'
                                f'<input type="hidden" name="message[itemid]" value="902">')  # fmt: skip
        elif url.path == "/login/logout.php" and session and query.get("sesskey") == f"key{session}":
            self.sessions[session] = None
            self._answer(303, "", {"Location": "https://moodle.rig.test/",
                                   "Set-Cookie": "MoodleSession=deleted; expires=Thu, 01 Jan 1970 00:00:00 GMT"})  # fmt: skip
        elif url.path in ("/", "/course/view.php", "/mod/page/view.php", "/mod/forum/view.php",
                          "/mod/forum/discuss.php", "/user/index.php"):  # fmt: skip
            self._page(session)
        else:
            self._answer(404, "no such page")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        session = self._session()
        if self.path == "/login/index.php":
            if session and form.get("logintoken") == f"token{session}" and form.get("password") == "pw":
                self.sessions[session] = form["username"]
                self._answer(303, "", {"Location": "https://moodle.rig.test/"})
            else:
                self._page(session, "Invalid login")
        elif self.path == "/mod/forum/post.php" and session and form.get("sesskey") == f"key{session}" \
                and form.get("message[itemid]") == "902" and form.get("attachments") == "901":  # fmt: skip
            with self.lock:
                self.replies.append((self.sessions[session] or "", form["message[text]"]))
            self._answer(303, "", {"Location": "/mod/forum/discuss.php?d=13"})
        else:
            self._answer(400, "refused")


@pytest.fixture
def two_stand_in_nodes() -> Iterator[list[tuple[str, int]]]:
    StandIn.sessions, StandIn.replies, StandIn.requests_by_port = {}, [], {}
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), StandIn) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [("127.0.0.1", server.server_address[1]) for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_replay_logs_in_replies_and_logs_out_through_both_nodes(two_stand_in_nodes) -> None:
    plan = moodle_plan("4.5.0", "student1,pw\nstudent2,pw\nstudent3,pw\n")
    run = replay(plan, two_stand_in_nodes, "moodle.rig.test")
    assert run.errors == 0, {name: r.first_error for name, r in run.steps.items() if r.errors}
    assert run.samples == 3 * 2 * len(STEPS)
    # Each user's reply, once per loop, under the user the users file names.
    assert sorted(StandIn.replies) == sorted(
        (f"student{n}", "I am the test plan reply message") for n in (1, 2, 3) for _ in range(2)
    )
    assert all(user is None for user in StandIn.sessions.values()), "a session was not logged out"
    # Requests alternate between the nodes, as the load balancer sends them.
    counts = list(StandIn.requests_by_port.values())
    assert len(counts) == 2 and min(counts) >= 0.4 * sum(counts), counts
    # The login step's time includes the redirect it follows.
    assert run.steps["Login"].http_requests == 2 * 3 * 2


def test_a_refused_login_and_what_follows_it_are_errors(two_stand_in_nodes) -> None:
    plan = moodle_plan("4.5.0", "student1,wrong\n")
    run = replay(plan, two_stand_in_nodes, "moodle.rig.test", threads=1, loops=1)
    assert run.steps["Login"].errors == 1 and "Invalid login" in run.steps["Login"].first_error
    assert run.steps["Send the forum discussion reply"].errors == 1
    assert not StandIn.replies


def test_cpu_is_summed_per_program_from_proc(tmp_path) -> None:
    """A process named as PHP-FPM's that burns 0.3 s of CPU moves the PHP-FPM total, and nothing else's."""
    php_fpm = tmp_path / "php-fpm-standin"
    php_fpm.symlink_to(sys.executable)
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nprint(flush=True)\ntime.sleep(60)"
    before = cpu_by_program()
    process = subprocess.Popen([str(php_fpm), "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()  # the burn is over
        after = cpu_by_program()
    finally:
        process.kill()
        process.wait()
    assert 0.25 <= after.get("PHP-FPM", 0.0) - before.get("PHP-FPM", 0.0) < 1.0


def test_a_student_submits_the_attempt_forms_hidden_fields_and_true_for_each_question() -> None:
    page = """<form action="https://moodle.rig.test/mod/quiz/processattempt.php" method="post">
      <input type="hidden" name="attempt" value="42"><input type="hidden" name="sesskey" value="k&amp;1">
      <input type="hidden" name="q7:1_:sequencecheck" value="1">
      <input type="radio" name="q7:1_answer" value="1" id="a"><input type="radio" name="q7:1_answer" value="0">
      <input type="radio" name="q7:2_answer" value="0"><input type="radio" name="q7:2_answer" value="1">
      <input type="text" name="search" value="x"><input type="hidden" name="slots" value="1,2"></form>"""
    assert attempt_answers(page) == {"attempt": "42", "sesskey": "k&1", "q7:1_:sequencecheck": "1",
                                     "q7:1_answer": "1", "q7:2_answer": "1", "slots": "1,2"}  # fmt: skip


def test_the_flame_graph_sums_stacks_and_is_the_same_file_for_the_same_stacks() -> None:
    lines = ["/my/index.php;main;render 30", "/my/index.php;main;db_query 50", "/my/index.php;main;render 20",
             "bad line", "/course/view.php;main;render 100"]  # fmt: skip
    stacks = flamegraph.parse(lines)
    assert stacks["/my/index.php;main;render"] == 50 and sum(stacks.values()) == 200
    assert flamegraph.self_time(stacks).most_common(1) == [("render", 150)]
    assert flamegraph.inclusive_time(stacks, skip_first=True)["main"] == 200
    assert flamegraph.first_frames(stacks) == {"/my/index.php": 100, "/course/view.php": 100}
    drawn = flamegraph.svg(stacks, "t")
    assert drawn == flamegraph.svg(flamegraph.parse(list(reversed(lines))), "t")
    assert drawn.count("<rect ") == 1 + 1 + 2 + 2 + 3  # background, all, two scripts, two mains, three leaves
