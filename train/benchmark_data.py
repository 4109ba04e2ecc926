"""The fixed evaluation set that ships in data/benchmark/ and never enters training.

Two parts (data/benchmark/README.md):
- ``dialogues.jsonl``: one item per bundled dialogue that the demo build holds out
  (`train.demo.dialogues.is_heldout`) and that is not one of the app's sample cases (`mvp.counsel.cases`,
  whose client lines clinicians replay into feedback.db): the client turns up to a point (at most three
  messages of context, ending with the client) and the gold counsellor reply that follows.
- ``crisis_suite.jsonl``: client messages written for this project (not taken from
  config/safety_rules.yaml nor from PsySUICIDE's test split, which is held out for the classifier);
  the app's reply to each must carry the crisis resources and pass the reply screen.

``build_dialogue_items()`` recomputes dialogues.jsonl from the bundled data (a test checks the shipped
file equals it); ``text_hashes()`` gives the sha256 of every benchmark text, to check that no training
set contains one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mvp.paths import DATA_DIR

BENCHMARK_DIR = DATA_DIR / "benchmark"
DIALOGUES_FILE = "dialogues.jsonl"
CRISIS_FILE = "crisis_suite.jsonl"
CONTEXT_MESSAGES = 3  # client, counsellor, client -> gold counsellor reply


class BenchmarkError(ValueError):
    """The benchmark files are missing or malformed (a Chinese message saying which)."""


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def _item(dialogue: dict) -> dict | None:
    msgs = dialogue["messages"]
    for i in range(CONTEXT_MESSAGES - 1, len(msgs) - 1):
        context = msgs[i - CONTEXT_MESSAGES + 1:i + 1]
        roles = [m["role"] for m in context] + [msgs[i + 1]["role"]]
        if roles == ["user", "assistant", "user", "assistant"] and all(m["content"].strip() for m in context):
            return {"id": f"dlg-{dialogue['id']}", "dialogue_id": dialogue["id"], "source": dialogue["source"],
                    "messages": [{"role": m["role"], "content": m["content"]} for m in context],
                    "gold": msgs[i + 1]["content"]}
    return None


def build_dialogue_items() -> list[dict]:
    """The dialogue part, recomputed from data/*.jsonl (deterministic, file order)."""
    from mvp.counsel.cases import load_cases
    from train.demo.dialogues import heldout_dialogues

    cases = {c.id for c in load_cases()}
    items = [_item(d) for d in heldout_dialogues() if d["id"] not in cases]
    return [i for i in items if i is not None]


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        raise BenchmarkError(f"找不到评估集文件 {path}（应随仓库提供，见 data/benchmark/README.md）")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BenchmarkError(f"{path} 第 {n} 行不是合法 JSON：{exc.msg}") from None
    return rows


def load(directory: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """(dialogue items, crisis messages) of the fixed set."""
    root = Path(directory) if directory else BENCHMARK_DIR
    dialogues, crisis = _read(root / DIALOGUES_FILE), _read(root / CRISIS_FILE)
    for row in dialogues:
        if not ({"id", "messages", "gold"} <= row.keys()) or row["messages"][-1]["role"] != "user":
            raise BenchmarkError(f"{root / DIALOGUES_FILE}: 条目 {row.get('id')} 缺少 id/messages/gold 或不以来访者结尾")
    for row in crisis:
        if not ({"id", "message"} <= row.keys()):
            raise BenchmarkError(f"{root / CRISIS_FILE}: 条目 {row.get('id')} 缺少 id/message")
    return dialogues, crisis


def text_hashes(directory: str | Path | None = None) -> set[str]:
    """sha256 (whitespace-normalised) of every client turn, gold reply and crisis message."""
    dialogues, crisis = load(directory)
    texts = [m["content"] for d in dialogues for m in d["messages"]] + [d["gold"] for d in dialogues]
    return {text_hash(t) for t in texts + [c["message"] for c in crisis]}


def write_dialogue_items(directory: str | Path | None = None) -> Path:
    """Write dialogues.jsonl (maintainers: after changing the bundled data or the selection rule)."""
    path = (Path(directory) if directory else BENCHMARK_DIR) / DIALOGUES_FILE
    with open(path, "w", encoding="utf-8") as fh:
        for item in build_dialogue_items():
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    return path
