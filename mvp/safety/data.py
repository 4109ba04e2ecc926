"""Labelled crisis data: readers for the project's JSONL files and the PsySUICIDE JSON, and the training set.

What it is for: the classifier (mvp/safety/classifier.py) trains on `training_examples()` and
`python -m mvp.safety evaluate` measures on any file `load_examples` reads:
  - JSONL, one {"text", "categories": [...]} (or "label": "suicide" | [...] | "none") per line,
    optional "split" and "source";
  - the PsySUICIDE JSON list (data/psysuicide/, MIT, see data/SOURCES.md): its Chinese labels map to
    our categories below; 关于自杀的探索 (talking or asking about suicide, not one's own intent) is
    kept as the `exploration` mark, not as a category.
Training data (all shipped in the repository): tests/data/crisis_labelled.jsonl (the project's
messages), tests/data/crisis_written.jsonl split "train" (its "heldout" split is never trained or
tuned on), data/psysuicide/valid.json. data/psysuicide/test.json is a benchmark only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mvp.paths import DATA_DIR, REPO_ROOT
from mvp.safety.rules import SafetyError

PROJECT_LABELLED = REPO_ROOT / "tests" / "data" / "crisis_labelled.jsonl"
WRITTEN = REPO_ROOT / "tests" / "data" / "crisis_written.jsonl"
REPLIES = REPO_ROOT / "tests" / "data" / "crisis_replies.jsonl"
PSYSUICIDE_VALID = DATA_DIR / "psysuicide" / "valid.json"
PSYSUICIDE_TEST = DATA_DIR / "psysuicide" / "test.json"
HELDOUT_SPLIT = "heldout"
RISK_CATEGORIES = ("suicide", "self_harm")   # "risk" in the figures; recall first in the classifier
TRAINING_FILES = (PROJECT_LABELLED, WRITTEN, PSYSUICIDE_VALID)

PSYSUICIDE_LABELS = {
    "被动自杀意图": "suicide", "主动自杀意图": "suicide", "自杀计划": "suicide", "自杀准备行为": "suicide",
    "自杀未遂": "suicide", "自伤行为": "self_harm", "自伤意图": "self_harm",
    "用户攻击行为": "harm_others", "他人攻击行为": "abuse",
}
PSYSUICIDE_EXPLORATION = "关于自杀的探索"
PSYSUICIDE_NONE = "与自杀/自伤/攻击行为无关"
_NONE_LABELS = {"", "none", "no", "safe", "0", "无"}


@dataclass(frozen=True)
class Example:
    text: str
    categories: tuple[str, ...]
    source: str
    exploration: bool = False        # PsySUICIDE 关于自杀的探索: reported apart from risk


def _jsonl_categories(row: dict, where: str) -> tuple[str, ...]:
    value = row.get("categories", row.get("label"))
    if value is None:
        raise SafetyError(f"{where}: needs \"categories\" or \"label\"")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise SafetyError(f"{where}: \"categories\"/\"label\" must be a string or a list of strings")
    return tuple(str(c) for c in items if str(c).strip().lower() not in _NONE_LABELS)


def is_psysuicide(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return f.read(1) == "["


def load_examples(path: Path, split: str | None = None) -> list[Example]:
    """Examples from a JSONL file (optionally one split) or a PsySUICIDE JSON file."""
    path = Path(path)
    if not path.exists():
        raise SafetyError(f"{path}: file not found")
    if is_psysuicide(path):
        rows = json.loads(path.read_text(encoding="utf-8"))
        out = []
        for row in rows:
            labels = row.get("labels", [])
            cats = {PSYSUICIDE_LABELS[label] for label in labels if label in PSYSUICIDE_LABELS}
            order = [c for c in ("suicide", "self_harm", "harm_others", "abuse") if c in cats]
            out.append(Example(row["text"], tuple(order), f"psysuicide/{row.get('data_source', '?')}",
                               PSYSUICIDE_EXPLORATION in labels))
        return out
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SafetyError(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise SafetyError(f"{path}:{n}: each line must be an object with a string \"text\"")
        if split is not None and row.get("split") != split:
            continue
        source = str(row.get("source") or f"{path.stem}/{row.get('split', 'all')}")
        out.append(Example(row["text"], _jsonl_categories(row, f"{path}:{n}"), source))
    return out


def training_examples() -> list[Example]:
    """Everything the classifier learns from (never the held-out split, never PsySUICIDE test)."""
    written = [e for e in load_examples(WRITTEN) if not e.source.endswith("/" + HELDOUT_SPLIT)]
    valid = [e for e in load_examples(PSYSUICIDE_VALID) if not (e.exploration and not e.categories)]
    held = {e.text for e in load_examples(PSYSUICIDE_TEST)} if PSYSUICIDE_TEST.exists() else set()
    held |= {e.text for e in load_examples(WRITTEN, HELDOUT_SPLIT)}
    # decontaminated: a message that also occurs in a held-out set (e.g. 我想跳楼) is left out
    return [e for e in load_examples(PROJECT_LABELLED) + written + valid if e.text not in held]
