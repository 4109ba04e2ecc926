"""The one reader of text records from stdin for the command lines (`python -m mvp.assessment`, `mvp.safety`).

Each non-blank line is either plain text or a JSON object carrying the text in a named field:

    for text in read_texts(stdin_text(), "answer", strict=True): ...

strict=True (the assessment CLI): a line that starts with "{" must be valid JSON with that string
field, else a `JsonlError` naming the line. strict=False (the safety CLI): such a line is taken as
plain text, so a message that merely starts with "{" is still checked.
"""
from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO


class JsonlError(ValueError):
    """A malformed input line (strict mode); the message names the line."""


def stdin_text() -> TextIO:
    """stdin decoded as UTF-8 whatever the locale (undecodable bytes become U+FFFD)."""
    if not hasattr(sys.stdin, "buffer"):  # already text (a test's StringIO)
        return sys.stdin
    return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")


def read_texts(lines: Iterable[str], field: str, *, strict: bool) -> Iterator[str]:
    """The text of each non-blank line: `obj[field]` of a JSON object line, else the line itself."""
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if strict:
                    raise JsonlError(f"stdin line {n}: not valid JSON ({exc.msg})") from exc
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get(field), str):
                yield obj[field]
                continue
            if strict:
                raise JsonlError(f"stdin line {n}: JSON object without a \"{field}\" text field")
        yield line
