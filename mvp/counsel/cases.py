"""Sample client cases for fast demos: the client lines of bundled counselling dialogues.

A clinician picks a case; the app fills the message box with the client's next line, so a demo can
play a realistic client without typing. Only the CPsyCounD dialogues are used (they start with the
client, as a counselling session does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mvp.paths import DATA_DIR

CASES_FILE = DATA_DIR / "cpsycound_dev.jsonl"
MAX_CASES = 40
TITLE_CHARS = 24


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    client_lines: tuple[str, ...]


@lru_cache(maxsize=4)
def load_cases(path: str | Path = CASES_FILE, limit: int = MAX_CASES) -> tuple[Case, ...]:
    """The first `limit` dialogues of the file as cases (deterministic order)."""
    cases = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if len(cases) >= limit:
                break
            dialogue = json.loads(line)
            lines = tuple(m["content"] for m in dialogue["messages"] if m["role"] == "user")
            if not lines:
                continue
            title = lines[0].replace("\n", " ")
            title = title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS] + "…"
            cases.append(Case(dialogue["id"], title, lines))
    return tuple(cases)


def get_case(case_id: str) -> Case | None:
    return next((c for c in load_cases() if c.id == case_id), None)
