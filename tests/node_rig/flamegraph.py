"""Collapsed stacks ("a;b;c 12" lines, Excimer's formatCollapsed) summed, ranked and drawn as a flame graph.

The SVG is drawn here rather than with Brendan Gregg's flamegraph.pl (not packaged on PyPI or Debian 12):
one rectangle per frame, as wide as its share of the samples, roots at the bottom, each with a tooltip
(name, samples, share). Colours and order are derived from the names alone: the same stacks give the same
file.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from html import escape

WIDTH = 1200
ROW = 16
FONT = 11
MIN_WIDTH = 1.0  # pixels: narrower frames are left out of the drawing (their samples still count above)


@dataclass
class Frame:
    name: str
    samples: int = 0
    children: dict[str, Frame] = field(default_factory=dict)


# The release directory a node's Moodle runs from (/var/www/moodle-4.5.0-<digest>/course/view.php): shown
# as the path inside Moodle's code.
RELEASE_DIR = re.compile(r"/var/www/moodle-[^/;]+/")


def parse(lines: list[str]) -> Counter[str]:
    """Stack -> samples, summed over repeated stacks; malformed lines ignored."""
    stacks: Counter[str] = Counter()
    for line in lines:
        stack, _, count = RELEASE_DIR.sub("", line.rstrip()).rpartition(" ")
        # Excimer writes the script's top level as an empty frame: left out.
        stack = ";".join(name for name in stack.split(";") if name)
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def tree(stacks: Counter[str]) -> Frame:
    root = Frame("all")
    for stack, count in stacks.items():
        root.samples += count
        node = root
        for name in stack.split(";"):
            node = node.children.setdefault(name, Frame(name))
            node.samples += count
    return root


def self_time(stacks: Counter[str]) -> Counter[str]:
    """Samples whose innermost frame is each function (where the CPU actually was)."""
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaves[stack.rsplit(";", 1)[-1]] += count
    return leaves


def inclusive_time(stacks: Counter[str], skip_first: bool = False) -> Counter[str]:
    """Samples with each function anywhere on the stack (counted once per stack); `skip_first` leaves out
    the first frame (the bench's script name)."""
    found: Counter[str] = Counter()
    for stack, count in stacks.items():
        names = stack.split(";")[1 if skip_first else 0 :]
        for name in set(names):
            found[name] += count
    return found


def first_frames(stacks: Counter[str]) -> Counter[str]:
    """Samples per first frame (the bench puts the request's script there)."""
    found: Counter[str] = Counter()
    for stack, count in stacks.items():
        found[stack.split(";", 1)[0]] += count
    return found


def colour(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return f"rgb({205 + digest[0] % 50},{80 + digest[1] % 120},{digest[2] % 60})"


def svg(stacks: Counter[str], title: str) -> str:
    root = tree(stacks)
    depth = _depth(root)
    height = (depth + 3) * ROW
    scale = WIDTH / max(root.samples, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Verdana, sans-serif" font-size="{FONT}">',
        '<rect width="100%" height="100%" fill="#f8f8f8"/>',
        f'<text x="{WIDTH / 2}" y="{ROW}" text-anchor="middle" font-size="{FONT + 3}">{escape(title)}</text>',
    ]

    def draw(frame: Frame, x: float, level: int) -> None:
        width = frame.samples * scale
        if width < MIN_WIDTH:
            return
        y = height - (level + 1) * ROW
        share = 100 * frame.samples / max(root.samples, 1)
        label = f"{frame.name} ({frame.samples} samples, {share:.2f}%)"
        parts.append(f'<g><title>{escape(label)}</title><rect x="{x:.2f}" y="{y}" width="{width:.2f}" '
                     f'height="{ROW - 1}" fill="{colour(frame.name)}" rx="2"/>')  # fmt: skip
        chars = int(width / (FONT * 0.6))
        if chars >= 3:
            text = frame.name if len(frame.name) <= chars else frame.name[: chars - 2] + ".."
            parts.append(f'<text x="{x + 3:.2f}" y="{y + ROW - 4}">{escape(text)}</text>')
        parts.append("</g>")
        child_x = x
        for child in sorted(frame.children.values(), key=lambda c: c.name):
            draw(child, child_x, level + 1)
            child_x += child.samples * scale

    draw(root, 0.0, 0)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _depth(frame: Frame) -> int:
    return 1 + max((_depth(child) for child in frame.children.values()), default=0)
