"""Lambda functions the templates embed inline (ZipFile, at most 4,096 characters each), kept as real files."""

from __future__ import annotations

from importlib import resources

ZIPFILE_LIMIT = 4096


def read(name: str) -> str:
    """The source of a function shipped in this package, checked against the inline-code limit."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    if len(text) > ZIPFILE_LIMIT:
        raise ValueError(
            f"{name} is {len(text)} characters; inline Lambda code holds at most {ZIPFILE_LIMIT}"
        )
    return text
