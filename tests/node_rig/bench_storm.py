"""make bench-node's exam-start storm: N students log in within a minute, open the same quiz, start it, answer
every question and submit, each request to the next node in turn (bench_plan.PlanUser).

Students start evenly spread over BENCH_STORM_SECONDS (60: an exam whose students sit down in the same
minute), with no think time after that: the burst a timed exam's start makes. A step is an error when its
answer is not what Moodle shows a student who did it (a refused login, no start button, no attempt form,
no review page after the submit); after the storm the database must hold one finished attempt per student.
"""

from __future__ import annotations

import html
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.node_rig.bench_plan import (
    Address,
    PlanUser,
    StepResult,
    cpu_by_program,
    machine_cpu_seconds,
    page_text,
    run_threads,
    spent,
    timed_request,
)

STUDENTS = int(os.environ.get("BENCH_STORM_STUDENTS", "48"))
SECONDS = float(os.environ.get("BENCH_STORM_SECONDS", "60"))
QUESTIONS = 10
STEPS = ("log-in page", "log in", "open the quiz", "start the attempt", "submit the answers")
INPUT = re.compile(r"<input\b[^>]*>", re.S)
ATTRIBUTE = re.compile(r'(\w[\w-]*)="([^"]*)"')


def inputs(page: str) -> list[dict[str, str]]:
    """Every <input>'s attributes, entities decoded."""
    return [{k: html.unescape(v) for k, v in ATTRIBUTE.findall(tag)} for tag in INPUT.findall(page)]


def attempt_answers(page: str) -> dict[str, str]:
    """The attempt form as a student submits it: its hidden fields, "True" for every true/false question."""
    form: dict[str, str] = {}
    for field in inputs(page):
        name = field.get("name", "")
        if field.get("type") == "hidden" and name:
            form[name] = field.get("value", "")
        elif field.get("type") == "radio" and name.endswith("_answer") and field.get("value") == "1":
            form[name] = "1"
    return form


@dataclass
class Storm:
    steps: dict[str, StepResult]
    seconds: float
    cpu: dict[str, float]
    busy: float


def one_student(
    user: PlanUser, username: str, password: str, cmid: int, results: dict[str, StepResult]
) -> None:
    """The five steps; the first failing one is counted as an error and ends the student's run."""

    def step(
        name: str, method: str, path: str, form: dict[str, str] | None, ok: Callable[[str, str], bool]
    ) -> str | None:
        answer = timed_request(user, method, path, form, results[name])
        if answer is None:
            return None
        status, body = answer
        if status != 200 or not ok(user.last_path, body):
            results[name].failed(f"status {status} at {user.last_path}: {page_text(body)}")
            return None
        return body

    page = step("log-in page", "GET", "/login/index.php", None, lambda _, b: 'name="logintoken"' in b)
    token = re.search(r'name="logintoken" value="([^"]+)"', page or "")
    if not token:
        return
    form = {"username": username, "password": password, "logintoken": token.group(1)}
    if step("log in", "POST", "/login/index.php", form, lambda p, b: "logintoken" not in b) is None:
        return
    page = step(
        "open the quiz", "GET", f"/mod/quiz/view.php?id={cmid}", None, lambda _, b: "startattempt.php" in b
    )
    sesskey = re.search(r'name="sesskey" value="([^"]+)"', page or "")
    if not sesskey:
        return
    page = step("start the attempt", "POST", "/mod/quiz/startattempt.php",
                {"cmid": str(cmid), "sesskey": sesskey.group(1)},
                lambda p, b: p.startswith("/mod/quiz/attempt.php") and "processattempt.php" in b)  # fmt: skip
    if page is None:
        return
    answers = {**attempt_answers(page), "finishattempt": "1"}
    step("submit the answers", "POST", "/mod/quiz/processattempt.php", answers,
         lambda p, _: p.startswith("/mod/quiz/review.php"))  # fmt: skip


def storm(nodes: Sequence[Address], host: str, cmid: int, password: str, students: int = STUDENTS,
          seconds: float = SECONDS) -> Storm:  # fmt: skip
    """Every student's run, started evenly over `seconds`; CPU by program over the whole storm."""
    results = {name: StepResult() for name in STEPS}
    lock = threading.Lock()

    def student(index: int) -> None:
        time.sleep(seconds * index / students)
        user = PlanUser(nodes, host, index)
        mine = {name: StepResult() for name in STEPS}
        try:
            one_student(user, f"storm{index + 1}", password, cmid, mine)
        finally:
            user.close()
            with lock:
                for name, result in mine.items():
                    results[name].add(result)

    cpu_before, busy_before = cpu_by_program(), machine_cpu_seconds()
    elapsed = run_threads(student, students)
    return Storm(results, elapsed, spent(cpu_before, cpu_by_program()), machine_cpu_seconds() - busy_before)


def report(name: str, result: Storm, finished: int, students: int) -> list[str]:
    lines = [f"{name}: {students} students over {SECONDS:g} s, storm over in {result.seconds:.1f} s; "
             f"finished attempts in the database: {finished} of {students}"]  # fmt: skip
    lines.append(f"  {'step':<24}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'errors':>8}")
    for step, r in result.steps.items():
        worst = max(r.milliseconds, default=float("nan"))
        lines.append(f"  {step:<24}{len(r.milliseconds):>5}{r.percentile(0.5):>9.0f}{r.percentile(0.95):>9.0f}"
                     f"{worst:>9.0f}{r.errors:>8}" + (f"   first: {r.first_error}" if r.first_error else ""))  # fmt: skip
    cpu = ", ".join(f"{p} {s:.1f} s" for p, s in sorted(result.cpu.items()))
    lines.append(f"  CPU over the storm: {cpu}; whole machine {result.busy:.1f} s")
    return lines
