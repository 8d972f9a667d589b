"""Cross-parameter checks that CloudFormation Rules cannot express (Rules have no numeric comparison).

Each layer lists its checks; `moodle-cfn validate` runs them on a params file's effective values (given
values over the master defaults), so an impossible combination fails on the operator's machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from moodle_cfn.errors import InputError


@dataclass(frozen=True)
class CrossCheck:
    """`holds(values)` must be true; otherwise the error names `key` and gives `reason`."""

    key: str
    reason: str
    holds: Callable[[Mapping[str, str]], bool]

    def problem(self, values: Mapping[str, str]) -> tuple[str, str] | None:
        """(key, reason) when the check fails, else None."""
        return None if self.holds(values) else (self.key, self.reason)


@dataclass(frozen=True)
class FindingCheck:
    """A check that finds the offending key itself: `problem(values)` returns (key, reason) or None."""

    problem: Callable[[Mapping[str, str]], tuple[str, str] | None]


Check = CrossCheck | FindingCheck


def number(values: Mapping[str, str], key: str) -> float:
    """A numeric parameter value (already type-checked by the params validation)."""
    return float(values[key])


def run_checks(checks: Iterable[Check], values: Mapping[str, str], source: str) -> None:
    """Raise InputError for the first check that does not hold."""
    for check in checks:
        found = check.problem(values)
        if found is not None:
            key, reason = found
            raise InputError(source, reason, key)
