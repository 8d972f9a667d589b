"""The commands the README and docs/ show, and the blocks of them that are generated.

A generated block is written between `<!-- generated: moodle-cfn ARGS -->` and `<!-- end generated -->`:
its content is the output of `moodle-cfn ARGS`, run from the repository root. `python -m tests.docs_commands`
(`make readme`) writes every block again; tests/test_docs.py fails when one differs.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

from moodle_cfn.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
GENERATED = re.compile(
    r"(<!-- generated: moodle-cfn (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
FENCE = re.compile(r"^\s*```[a-z]*\n(.*?)^\s*```", re.S | re.M)


def output_of(argv: list[str]) -> str:
    """What `moodle-cfn argv` prints (it must succeed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code != 0:
        raise AssertionError(f"moodle-cfn {' '.join(argv)} exited {code}")
    return out.getvalue()


def generated_blocks(text: str) -> list[tuple[list[str], str]]:
    """(argv, current body) of every generated block in a document."""
    return [(shlex.split(m["args"]), m["body"]) for m in GENERATED.finditer(text)]


def regenerate(text: str) -> str:
    """The document with every generated block written from its command's output."""
    return GENERATED.sub(lambda m: m[1] + output_of(shlex.split(m["args"])) + m[4], text)


def shown_commands(text: str) -> list[str]:
    """Every `moodle-cfn ...` command line inside the document's code fences (continuations joined)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("moodle-cfn "):
                found.append(line)
    return found


if __name__ == "__main__":
    for document in DOCUMENTS:
        text = document.read_text()
        fresh = regenerate(text)
        if fresh != text:
            document.write_text(fresh)
            print(f"wrote {document.relative_to(ROOT)}")
