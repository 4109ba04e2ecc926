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
tuned on), tests/data/crisis_hard.jsonl (hard negatives that share words with a crisis: insomnia,
sleeping pills taken for sleep, 累死了-style hyperbole, family quarrels, breakups; and indirect
positives), data/psysuicide/valid.json, and weak negatives: client turns of the bundled unlabelled
dialogues (data/cpsycound_dev.jsonl, data/mdd5k_dev.jsonl) that the rules do not flag and that
contain no risk word (RISK_WORDS), from the dialogues outside the held-out slice. The held-out
slice (CORPUS_HELDOUT_PERCENT of the dialogues, chosen by a hash of the dialogue id) is never
trained or tuned on: it measures the false-alarm rate on everyday counselling turns.
data/psysuicide/test.json is a benchmark only.
"""
from __future__ import annotations

import hashlib
import json
import re
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
HARD = REPO_ROOT / "tests" / "data" / "crisis_hard.jsonl"
CORPORA = (DATA_DIR / "cpsycound_dev.jsonl", DATA_DIR / "mdd5k_dev.jsonl")
CORPUS_HELDOUT_PERCENT = 30      # of the bundled dialogues (by id hash): false-alarm measurement only
WEAK_SOURCE = "weak/"
_CLAUSE = re.compile(r"[。！？；，,!?;…\n]+")
MIN_CLAUSE, MAX_CLAUSE, MAX_CLAUSES = 3, 30, 6000   # clauses of weak negatives added as short negatives
TRAINING_FILES = (PROJECT_LABELLED, WRITTEN, HARD, PSYSUICIDE_VALID, *CORPORA)
# A client turn with any of these is never a weak negative (it may be a real disclosure): broad on purpose.
RISK_WORDS = re.compile(
    "死|杀|自残|自伤|伤害|割|划|烫|跳|上吊|绳|轻生|遗书|遗言|活着|活下去|不想活|活不|活够|药|刀|血|"
    "结束|了结|解脱|离开这个|消失|撑不|熬不|坚持不|一了百了|绝望|崩溃|告别|再见|永远|醒不|睡过去|"
    "打我|打了我|揍|虐|性侵|强奸|威胁|想不开|走了|不在了|累赘|负担|没意义|没意思|没有意义|意义|放弃|"
    "楼|河|桥|车|毒|煤气|炭|喝酒|报复")

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


def training_examples(weak: bool = True) -> list[Example]:
    """Everything the classifier learns from (never the held-out split, never PsySUICIDE test, never
    the held-out slice of the bundled dialogues); `weak=False` leaves out the weak negatives."""
    written = [e for e in load_examples(WRITTEN) if not e.source.endswith("/" + HELDOUT_SPLIT)]
    valid = [e for e in load_examples(PSYSUICIDE_VALID) if not (e.exploration and not e.categories)]
    held = {e.text for e in load_examples(PSYSUICIDE_TEST)} if PSYSUICIDE_TEST.exists() else set()
    held |= {e.text for e in load_examples(WRITTEN, HELDOUT_SPLIT)}
    held |= {t for _, t in corpus_turns(heldout=True)}
    hard = load_examples(HARD) if HARD.exists() else []
    labelled = load_examples(PROJECT_LABELLED) + written + hard + valid
    known = {e.text for e in labelled}
    extra = [e for e in weak_negatives() if e.text not in known] if weak else []
    # decontaminated: a message that also occurs in a held-out set (e.g. 我想跳楼) is left out
    return [e for e in labelled + extra if e.text not in held]


def corpus_dialogues() -> list[tuple[str, list[str]]]:
    """(dialogue id, client turns) of the bundled unlabelled dialogues, in file order."""
    out = []
    for path in CORPORA:
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                row = json.loads(line)
                out.append((str(row.get("id") or f"{path.stem}-{n}"),
                            [m["content"] for m in row["messages"] if m.get("role") == "user"]))
    return out


def is_heldout_dialogue(dialogue_id: str) -> bool:
    """The false-alarm slice: CORPUS_HELDOUT_PERCENT of the dialogues, fixed by a hash of the id."""
    return int(hashlib.sha256(dialogue_id.encode("utf-8")).hexdigest()[:8], 16) % 100 < CORPUS_HELDOUT_PERCENT


def corpus_turns(heldout: bool) -> list[tuple[str, str]]:
    """(corpus name, client turn) of the held-out slice (heldout=True) or of the other dialogues."""
    return [(did.split("-")[0], t) for did, turns in corpus_dialogues() if is_heldout_dialogue(did) == heldout
            for t in turns]


def weak_negatives() -> list[Example]:
    """Client turns outside the held-out slice that the rules do not flag and that have no risk word."""
    from mvp.safety.detect import default_ruleset
    rules, out = default_ruleset(), []
    seen = {t for _, t in corpus_turns(heldout=True)}     # a turn also said in a held-out dialogue stays out
    for corpus, text in corpus_turns(heldout=False):
        if text in seen or not text.strip() or RISK_WORDS.search(text):
            continue
        seen.add(text)
        if not rules.detect(text).is_crisis:
            out.append(Example(text, (), WEAK_SOURCE + corpus))
    # their clauses too: short everyday messages (我今天在家) are scored alone, so they are learned alone
    clauses = {c for e in out for c in _CLAUSE.split(e.text) if MIN_CLAUSE <= len(c.strip()) <= MAX_CLAUSE} - seen
    key = lambda c: hashlib.sha256(c.encode("utf-8")).hexdigest()  # noqa: E731 - a fixed, seed-free sample
    picked = sorted(sorted(clauses, key=key)[:MAX_CLAUSES])
    out += [Example(c.strip(), (), WEAK_SOURCE + "clause") for c in picked if not rules.detect(c).is_crisis]
    return out
