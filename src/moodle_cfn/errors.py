"""The one exception type that turns into a one-line error message and exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad operator input: names the file, the key (when there is one) and the reason."""

    def __init__(self, source: str, reason: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}" if self.key else self.source
        return f"{where}: {self.reason}"
