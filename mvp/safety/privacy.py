"""PII scrubbing with typed placeholders: the public entry for exports (train/), storage and staff checks.

What it is for: names, organisations (schools, employers, hospitals), addresses, phone numbers, 身份证
numbers, bank cards, e-mail, QQ / WeChat ids, licence plates and student numbers that clients type must
not reach training data, logs or another person's screen. Each is replaced by a typed placeholder
(`PLACEHOLDERS`: 〔姓名〕, 〔机构〕, 〔地址〕, 〔电话〕 ...).

How it is used (plain Python, no server):
    from mvp.safety.privacy import scrub, scrub_messages, scrub_record, Scrubber
    scrub("我叫张伟，电话138.0013.8000").text      # '我叫〔姓名〕，电话〔电话〕'
    scrub(text).found                               # ({"kind", "start", "end"} on the original text, ...)
    messages, counts = scrub_messages(messages)     # one conversation, one mapping across its messages
    row, counts = scrub_record({"prompt": [...], "chosen": [...], "rejected": [...]})
    Store(path, scrub=storage_scrubber())           # str -> str, for scrubbing at storage time

From a shell (product staff checking a rule change), one JSON object per input line:
    echo '我老婆（陈美玲）在字节跳动上班' | python -m mvp.safety.privacy scrub
    python -m mvp.safety.privacy scrub --conversation < chat.jsonl   # one mapping for all lines
Input lines are plain text or JSONL with a "text" field; output is
{"text": scrubbed, "found": [{"kind", "start", "end"}, ...]} (offsets on the input text).

How it decides (all deterministic): mvp/safety/privacy_patterns.py finds numbers, accounts, plates and
addresses; mvp/safety/privacy_names.py finds people (relation and title forms, jieba's name tags,
nicknames, English names) and organisations; overlaps are resolved by confidence then length. A name
found anywhere in a conversation is replaced, with its partial forms (陈美玲 -> 美玲, 玲玲), in every
message of that conversation (`Scrubber.learn`), so prompt, chosen and rejected stay aligned. Hotline
numbers and names from config/crisis_resources.yaml are kept. Measured by `python -m bench.bench_privacy`
on tests/data/pii_heldout.jsonl (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

from mvp.jsonl import JsonlError, read_texts
from mvp.safety.privacy_names import name_spans, tokens, variants
from mvp.safety.privacy_patterns import digits_of, id_checksum_ok, luhn_ok, pattern_spans

__all__ = ["KINDS", "PLACEHOLDERS", "ScrubResult", "Scrubber", "scrub", "scrub_messages", "scrub_record",
           "storage_scrubber", "id_checksum_ok", "luhn_ok", "empty_counts", "add_counts", "main"]

KINDS: tuple[str, ...] = ("email", "id_card", "bank_card", "phone", "qq", "wechat", "student_id", "plate",
                          "address", "org", "name")
PLACEHOLDERS: dict[str, str] = {
    "email": "〔邮箱〕", "id_card": "〔身份证〕", "bank_card": "〔银行卡〕", "phone": "〔电话〕",
    "qq": "〔QQ〕", "wechat": "〔微信〕", "student_id": "〔学号〕", "plate": "〔车牌〕",
    "address": "〔地址〕", "org": "〔机构〕", "name": "〔姓名〕",
}
# Lower tier wins an overlap: validated numbers first, then introduced accounts, then the rest.
_TIER = {"email": 0, "id_card": 0, "bank_card": 0, "phone": 0, "qq": 1, "wechat": 1, "student_id": 1,
         "plate": 1, "address": 2, "org": 3, "name": 3}
# Always kept, even if the resources file lists fewer (national hotline, police, ambulance).
ALWAYS_KEEP_NUMBERS: tuple[str, ...] = ("12356", "110", "120", "119", "122")
_PLACEHOLDER_RE = re.compile("|".join(map(re.escape, PLACEHOLDERS.values())))


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text, how many items of each kind (`KINDS`) were replaced, and where (on the input)."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)
    found: tuple[dict[str, Any], ...] = ()


def empty_counts() -> dict[str, int]:
    return {kind: 0 for kind in KINDS}


def add_counts(total: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Add `more` into `total` (in place) and return it; for export manifests."""
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n
    return total


@lru_cache(maxsize=1)
def _default_keep() -> tuple[frozenset[str], frozenset[str]]:
    from mvp.safety.detect import load_resources  # the resources file is owned by the safety module
    res = load_resources()
    return frozenset(digits_of(n) for n in res.phone_numbers()), frozenset(r.name for r in res.hotlines)


class Scrubber:
    """One conversation's scrubber: names found in any text it has seen are replaced in all of them.

    Use one Scrubber per conversation (or per export row); `learn` every text first when a name may be
    introduced after it is used (scrub_messages and scrub_record do this).
    """

    def __init__(self, keep_numbers: Iterable[str] | None = None, keep_terms: Iterable[str] | None = None) -> None:
        default_numbers, default_terms = _default_keep() if keep_numbers is None or keep_terms is None \
            else (frozenset(), frozenset())
        numbers = default_numbers if keep_numbers is None else frozenset(digits_of(n) for n in keep_numbers)
        self.keep_numbers = numbers | frozenset(ALWAYS_KEEP_NUMBERS)
        self.keep_terms = default_terms if keep_terms is None else frozenset(keep_terms)
        self.names: set[str] = set()
        self._names_re: re.Pattern | None = None
        self._cache: dict[str, list[tuple[str, int, int]]] = {}

    # -- detection ----------------------------------------------------------------------------
    def _detect(self, text: str) -> list[tuple[str, int, int]]:
        spans = self._cache.get(text)
        if spans is None:
            spans = [sp for sp in pattern_spans(text) if sp[0] != "phone" or self._not_kept(text[sp[1]:sp[2]])]
            spans += name_spans(text, self.keep_terms)
            if len(self._cache) < 4096:
                self._cache[text] = spans
        return spans

    def _not_kept(self, number: str) -> bool:
        digits = digits_of(number)
        if digits.startswith("86") and len(digits) == 13:
            digits = digits[2:]
        return digits not in self.keep_numbers

    def learn(self, text: str) -> None:
        """Remember the names found in `text` (and their partial forms) for every later `scrub`."""
        before = len(self.names)
        for kind, start, end in self._detect(text):
            if kind == "name":
                self.names |= variants(text[start:end])
        if len(self.names) != before:
            self._names_re = None

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """Non-overlapping (kind, start, end) spans to replace in `text`, in order."""
        self.learn(text)
        candidates = list(self._detect(text))
        if self.names:
            if self._names_re is None:
                self._names_re = re.compile("|".join(re.escape(n) for n in sorted(self.names, key=lambda n: (-len(n), n))))
            candidates += [("name", m.start(), m.end()) for m in self._names_re.finditer(text)]
        taken = [(m.start(), m.end()) for m in _PLACEHOLDER_RE.finditer(text)]   # already scrubbed
        chosen: list[tuple[str, int, int]] = []
        for kind, start, end in sorted(set(candidates), key=lambda s: (_TIER[s[0]], s[1] - s[2], s[1], KINDS.index(s[0]))):
            if end > start and all(end <= s or start >= e for s, e in taken):
                taken.append((start, end))
                chosen.append((kind, start, end))
        return sorted(chosen, key=lambda s: s[1])

    def scrub(self, text: str) -> ScrubResult:
        """Scrub one text (also learning the names it introduces)."""
        counts, parts, pos, found = empty_counts(), [], 0, []
        for kind, start, end in self.spans(text):
            parts += [text[pos:start], PLACEHOLDERS[kind]]
            pos = end
            counts[kind] += 1
            found.append({"kind": kind, "start": start, "end": end})
        parts.append(text[pos:])
        return ScrubResult("".join(parts), counts, tuple(found))

    def scrub_messages(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Scrub the `content` of role/content dicts (other keys copied unchanged)."""
        for m in messages:
            if isinstance(m.get("content"), str):
                self.learn(m["content"])
        out, total = [], empty_counts()
        for m in messages:
            new = dict(m)
            if isinstance(m.get("content"), str):
                result = self.scrub(m["content"])
                new["content"] = result.text
                add_counts(total, result.counts)
            out.append(new)
        return out, total


def scrub(text: str, keep_numbers: Iterable[str] | None = None) -> ScrubResult:
    """Scrub a single text."""
    return Scrubber(keep_numbers).scrub(text)


def scrub_messages(messages: Sequence[Mapping[str, Any]],
                   keep_numbers: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Scrub a conversation; a name found in any message is replaced in all of them."""
    return Scrubber(keep_numbers).scrub_messages(messages)


def scrub_record(record: Mapping[str, Any], fields: Sequence[str] = ("prompt", "chosen", "rejected", "completion", "messages"),
                 keep_numbers: Iterable[str] | None = None) -> tuple[dict[str, Any], dict[str, int]]:
    """Scrub the listed fields of one export row (message lists or strings) with one shared mapping.

    For DPO/KTO rows: prompt, chosen and rejected are scrubbed by one Scrubber, so a name introduced in
    the prompt is the same placeholder in both replies. Fields that are absent are skipped.
    """
    scrubber = Scrubber(keep_numbers)
    present = [f for f in fields if f in record]
    for f in present:
        value = record[f]
        for text in ([value] if isinstance(value, str) else [m.get("content") for m in value if isinstance(m, Mapping)]):
            if isinstance(text, str):
                scrubber.learn(text)
    out, total = dict(record), empty_counts()
    for f in present:
        value = record[f]
        if isinstance(value, str):
            result = scrubber.scrub(value)
            out[f] = result.text
            add_counts(total, result.counts)
        elif isinstance(value, list):
            out[f], counts = scrubber.scrub_messages(value)
            add_counts(total, counts)
    return out, total


def storage_scrubber() -> Callable[[str], str]:
    """A `str -> str` function for `Store(path, scrub=...)`: scrubs each stored text on its own.

    The hotline numbers and names are read once here, not once per message, and jieba's dictionary is
    loaded here (about 1-2 s) rather than inside the first request.
    """
    tokens("预热")
    keep = Scrubber()
    numbers, terms = keep.keep_numbers, keep.keep_terms
    return lambda text: Scrubber(numbers, terms).scrub(text).text


# -- command line ---------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mvp.safety.privacy",
                                     description="去除个人信息：逐行读取文本或带 text 字段的 JSONL，每行输出一个 JSON 对象")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scrub", help="scrub stdin line by line; prints {text, found} per line")
    p.add_argument("--conversation", action="store_true",
                   help="treat all input lines as one conversation (a name found in one line is replaced in all)")
    p.add_argument("--no-keep-hotlines", action="store_true",
                   help="do not keep the hotline numbers and names of config/crisis_resources.yaml")
    return parser


def main(argv: Sequence[str] | None = None, stdin=None, stdout=None) -> int:
    args = make_parser().parse_args(argv)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    keep = dict(keep_numbers=[], keep_terms=[]) if args.no_keep_hotlines else {}
    base = Scrubber(**keep)
    numbers, terms = base.keep_numbers, base.keep_terms
    try:
        texts = list(read_texts(stdin, "text", strict=True))  # the one reader of mvp/jsonl.py
    except JsonlError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    shared = Scrubber(numbers, terms) if args.conversation else None
    if shared is not None:
        for text in texts:
            shared.learn(text)
    for text in texts:
        result = (shared or Scrubber(numbers, terms)).scrub(text)
        stdout.write(json.dumps({"text": result.text, "found": list(result.found)}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
