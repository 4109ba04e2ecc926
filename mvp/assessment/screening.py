"""PHQ-9 / GAD-7 guided screening: instruments, answer scoring and the screening state machine.

In the assessment stage the counsellor asks the items of a screening instrument one at a time and
scores each free-text answer 0-3 (完全不会 / 好几天 / 一半以上的天数 / 几乎每天). This module is plain
Python, importable without a server or a model:

- `load_instruments()` reads and validates `config/instruments.yaml` -> {id: Instrument}.
- `score_rules()` maps explicit frequency words and day counts to a score (mvp/assessment/rules.py,
  whose docstring documents the mapping).
- `score_model()` asks a model, through `engine.generate`, to classify the answer.
- `score_answer()` combines both: the model classifies, the rules cross-check; disagreement, a
  missing score or low confidence marks the item `needs_review` for the clinician.
- `Screening` is the pure state machine of the guided flow; `to_dict()` / `from_dict()` keep it in a
  gr.State or the database.

Command line (rules only unless --model is given):

    echo "几乎每天都睡不好" | python -m mvp.assessment score --instrument phq9 --item 3
    python -m mvp.assessment score --instrument gad7 --item 1 < answers.jsonl
    python -m mvp.assessment score --instrument phq9 --item 2 --model demo < answers.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from mvp.paths import CONFIG_DIR
from mvp.assessment.rules import (  # noqa: F401 - re-exported: callers import them from here
    MAX_SCORE,
    MIN_SCORE,
    ItemScore,
    days_to_score,
    score_rules,
)

DEFAULT_INSTRUMENTS_PATH = CONFIG_DIR / "instruments.yaml"

# Below LOW_CONFIDENCE a scored item is vague (follow-up, review).
LOW_CONFIDENCE = 0.6
# Model scoring: we have no probabilities, so a parsed answer gets a fixed confidence.
MODEL_CONFIDENCE = 0.7
DISAGREEMENT_CONFIDENCE = 0.5
RULE_TRUST = 0.8  # on disagreement, rules at least this sure win over the model
MODEL_MAX_NEW_TOKENS = 8

INSTRUMENT_KEYS = {"name", "timeframe", "intro", "closing", "options", "bands", "items"}
ITEM_KEYS = {"number", "text", "question", "follow_up"}
ITEM_OPTIONAL_KEYS = {"risk_item"}
BAND_KEYS = {"min", "max", "name"}
OPTION_KEYS = {"score", "label"}
STATE_VERSION = 1
METHODS = ("rules", "model", "model+rules", "none")
FOLLOW_UP_JOINER = " / "


class AssessmentError(ValueError):
    """A user or caller error: bad item number, bad score, malformed saved state."""


class InstrumentError(AssessmentError):
    """A malformed instruments file; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# Instruments


@dataclass(frozen=True)
class Item:
    no: int
    text: str
    question: str
    follow_up: str
    risk_item: bool = False


@dataclass(frozen=True)
class Band:
    min: int
    max: int
    name: str


@dataclass(frozen=True)
class Instrument:
    id: str
    name: str
    timeframe: str
    intro: str
    closing: str
    options: tuple[tuple[int, str], ...]
    bands: tuple[Band, ...]
    items: tuple[Item, ...]

    @property
    def max_total(self) -> int:
        return MAX_SCORE * len(self.items)

    def item(self, item_no: int) -> Item:
        """The item numbered `item_no` (1-based); AssessmentError when out of range."""
        if not isinstance(item_no, int) or not 1 <= item_no <= len(self.items):
            raise AssessmentError(f"{self.id} has items 1-{len(self.items)}, not {item_no!r}")
        return self.items[item_no - 1]

    def band(self, total: int) -> str:
        """Name of the severity band holding `total` (0..max_total)."""
        for band in self.bands:
            if band.min <= total <= band.max:
                return band.name
        raise AssessmentError(f"{self.id} total must be 0-{self.max_total}, not {total!r}")


def _fail(path: Path, key: str, problem: str) -> InstrumentError:
    return InstrumentError(f"{path}: {key}: {problem}")


def _check_keys(path: Path, key: str, data: Any, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise _fail(path, key, "expected a mapping")
    missing = required - data.keys()
    unknown = data.keys() - required - optional
    if missing:
        raise _fail(path, key, f"missing key(s) {sorted(missing)}")
    if unknown:
        raise _fail(path, key, f"unknown key(s) {sorted(unknown)}")
    return data


def _text(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, "expected non-empty text")
    return value.strip()


def _int(path: Path, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, key, f"expected an integer, got {value!r}")
    return value


def _parse_instrument(path: Path, inst_id: str, data: Any) -> Instrument:
    key = f"instruments.{inst_id}"
    data = _check_keys(path, key, data, INSTRUMENT_KEYS)
    for list_key in ("options", "bands", "items"):
        if not isinstance(data[list_key], list) or not data[list_key]:
            raise _fail(path, f"{key}.{list_key}", "expected a non-empty list")
    options = []
    for i, raw in enumerate(data["options"]):
        k = f"{key}.options[{i}]"
        raw = _check_keys(path, k, raw, OPTION_KEYS)
        options.append((_int(path, f"{k}.score", raw["score"]), _text(path, f"{k}.label", raw["label"])))
    if [score for score, _ in options] != list(range(MIN_SCORE, MAX_SCORE + 1)):
        raise _fail(path, f"{key}.options", f"scores must be {MIN_SCORE}-{MAX_SCORE} in order")
    items = []
    for i, raw in enumerate(data["items"]):
        k = f"{key}.items[{i}]"
        raw = _check_keys(path, k, raw, ITEM_KEYS, ITEM_OPTIONAL_KEYS)
        if _int(path, f"{k}.number", raw["number"]) != i + 1:
            raise _fail(path, f"{k}.number", f"items must be numbered 1, 2, ... in order; expected {i + 1}")
        risk = raw.get("risk_item", False)
        if not isinstance(risk, bool):
            raise _fail(path, f"{k}.risk_item", "expected true or false")
        items.append(Item(i + 1, _text(path, f"{k}.text", raw["text"]),
                          _text(path, f"{k}.question", raw["question"]),
                          _text(path, f"{k}.follow_up", raw["follow_up"]), risk))
    bands, expected_min = [], 0
    for i, raw in enumerate(data["bands"]):
        k = f"{key}.bands[{i}]"
        raw = _check_keys(path, k, raw, BAND_KEYS)
        lo, hi = _int(path, f"{k}.min", raw["min"]), _int(path, f"{k}.max", raw["max"])
        if lo != expected_min or hi < lo:
            raise _fail(path, k, f"bands must be contiguous from 0; expected min {expected_min} <= max")
        bands.append(Band(lo, hi, _text(path, f"{k}.name", raw["name"])))
        expected_min = hi + 1
    if expected_min - 1 != MAX_SCORE * len(items):
        raise _fail(path, f"{key}.bands", f"last band must end at {MAX_SCORE * len(items)} (3 x items)")
    return Instrument(inst_id, _text(path, f"{key}.name", data["name"]),
                      _text(path, f"{key}.timeframe", data["timeframe"]),
                      _text(path, f"{key}.intro", data["intro"]),
                      _text(path, f"{key}.closing", data["closing"]),
                      tuple(options), tuple(bands), tuple(items))


def load_instruments(path: str | Path | None = None) -> dict[str, Instrument]:
    """Load and validate the instruments file (default: config/instruments.yaml)."""
    path = Path(path) if path is not None else DEFAULT_INSTRUMENTS_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InstrumentError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise InstrumentError(f"{path}: not valid YAML: {exc}") from exc
    data = _check_keys(path, "(top level)", data, {"instruments"})
    if not isinstance(data["instruments"], dict) or not data["instruments"]:
        raise _fail(path, "instruments", "expected a non-empty mapping of instrument id -> instrument")
    return {str(i): _parse_instrument(path, str(i), d) for i, d in data["instruments"].items()}


# ---------------------------------------------------------------------------------------------
# Model scorer

MODEL_SYSTEM_PROMPT = "你是心理测评的评分助手。请根据来访者的回答，判断问卷条目所描述的情况在过去两周出现的频率。"
_OPTION_WORDS = (("几乎每天", 3), ("一半以上", 2), ("好几天", 1), ("完全不会", 0))
DEFAULT_OPTIONS: tuple[tuple[int, str], ...] = ((0, "完全不会"), (1, "好几天"), (2, "一半以上的天数"), (3, "几乎每天"))


def build_model_messages(answer: str, item: Item, instrument: Instrument | None = None) -> list[dict]:
    """The classification prompt as role/content messages."""
    options = instrument.options if instrument else DEFAULT_OPTIONS
    timeframe = instrument.timeframe if instrument else "过去两周"
    lines = [f"问卷条目：{item.text}", f"时间范围：{timeframe}", f"来访者的回答：{answer.strip()}", "选项："]
    lines += [f"{score} = {label}" for score, label in options]
    lines.append("只回答一个数字 0-3。")
    return [{"role": "system", "content": MODEL_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def parse_model_score(text: str) -> int | None:
    """First standalone digit 0-3 in the model's reply, else an option word, else None."""
    m = re.search(r"(?<!\d)[0-3](?!\d)", text or "")
    if m:
        return int(m.group())
    for word, score in _OPTION_WORDS:
        if word in (text or ""):
            return score
    return None


def score_model(answer: str, item: Item, engine: Any, instrument: Instrument | None = None) -> ItemScore | None:
    """Ask the model through `engine.generate(messages, params)`; None when the reply has no score."""
    from mvp.model.engine import GenerationParams  # lazy: keeps this module importable without torch

    params = GenerationParams(temperature=0.0, max_new_tokens=MODEL_MAX_NEW_TOKENS)
    reply = engine.generate(build_model_messages(answer, item, instrument), params)
    text = str(getattr(reply, "text", reply)).strip()
    score = parse_model_score(text)
    if score is None:
        return None
    return ItemScore(score, "model", MODEL_CONFIDENCE, f"模型输出“{text[:20]}”→{score}")


def score_answer(answer: str, instrument: Instrument, item_no: int, engine: Any = None) -> ItemScore:
    """Score one answer: the model (when an engine is given) cross-checked by the rules.

    needs_review is set when the two disagree, when either gives no score, or when confidence is
    below LOW_CONFIDENCE. A failing engine falls back to the rules (and is marked for review).
    """
    item = instrument.item(item_no)
    rules = score_rules(answer, instrument, item)
    if engine is None:
        return replace(rules, needs_review=rules.score is None or rules.confidence < LOW_CONFIDENCE)
    try:
        model = score_model(answer, item, engine, instrument)
    except Exception as exc:  # noqa: BLE001 - any backend failure must leave a usable rule score
        model, rules = None, replace(rules, evidence=f"{rules.evidence}；模型评分失败：{type(exc).__name__}")
    if model is None and rules.score is None:
        return ItemScore(None, "none", 0.0, f"{rules.evidence}；模型无法判断", needs_review=True)
    if model is None:
        return replace(rules, evidence=f"{rules.evidence}；模型无法判断", needs_review=True)
    if rules.score is None:
        return replace(model, confidence=DISAGREEMENT_CONFIDENCE, needs_review=True)
    evidence = f"{model.evidence}；规则：{rules.evidence}"
    if model.score == rules.score:
        confidence = max(model.confidence, rules.confidence)
        return ItemScore(rules.score, "model+rules", confidence, evidence,
                         needs_review=rules.confidence < LOW_CONFIDENCE)
    use_rules = rules.confidence >= RULE_TRUST
    return ItemScore(rules.score if use_rules else model.score, "rules" if use_rules else "model",
                     DISAGREEMENT_CONFIDENCE, f"模型与规则不一致：{evidence}", needs_review=True)


# ---------------------------------------------------------------------------------------------
# Risk words (a minimal local check; the safety module owns real crisis detection)

RISK_RE = re.compile(r"想死|不想活|活着没(?:什么|啥)?意思|死了算了|不如死|自杀|轻生|结束(?:自己的)?生命"
                     r"|伤害自己|伤害我自己|自残|割腕|跳楼|跳下去|一了百了|了结自己")
RISK_NEGATION_LOOKBACK = 6  # 从来没有想过要|伤害自己
_RISK_NEGATED_RE = re.compile(r"(?:没|不|未|别)[^，,。.；;！!？?]{0,4}$")


def has_risk_words(text: str) -> bool:
    """True when the text mentions self-harm or suicide, unless plainly denied (没想过自杀)."""
    for m in RISK_RE.finditer(text or ""):
        if not _RISK_NEGATED_RE.search(text[max(0, m.start() - RISK_NEGATION_LOOKBACK):m.start()]):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Screening state machine


@dataclass(frozen=True)
class StepResult:
    item_no: int
    score: ItemScore
    follow_up: bool  # True: the answer was vague, next_prompt() is the follow-up question
    risk: bool
    done: bool


@dataclass
class _Record:
    item_no: int
    question: str
    answer: str
    score: int | None
    method: str
    needs_review: bool
    confidence: float
    evidence: str
    clinician_score: int | None = None
    risk: bool = False


class Screening:
    """One guided screening: asks items in order, one follow-up at most per vague answer.

    Deterministic and free of I/O; keep it in a gr.State via to_dict()/from_dict().
    """

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self._records: list[_Record] = []
        self._pending: _Record | None = None  # the vague first answer awaiting its follow-up

    @property
    def current_item(self) -> int | None:
        """1-based number of the item being asked, None when done."""
        return None if self.done else len(self._records) + 1

    @property
    def done(self) -> bool:
        return len(self._records) == len(self.instrument.items)

    @property
    def awaiting_follow_up(self) -> bool:
        return self._pending is not None

    def next_prompt(self) -> str:
        """The question to ask now: the item's question, its follow-up, or the closing words."""
        if self.done:
            return self.instrument.closing
        item = self.instrument.items[len(self._records)]
        return item.follow_up if self._pending else item.question

    def answer(self, text: str, engine: Any = None) -> StepResult:
        """Score the client's answer to the current question and advance the flow."""
        if self.done:
            raise AssessmentError("the screening is finished; start a new one")
        if not isinstance(text, str):
            raise AssessmentError(f"answer must be text, got {type(text).__name__}")
        item = self.instrument.items[len(self._records)]
        scored = score_answer(text, self.instrument, item.no, engine)
        risk_words = has_risk_words(text)
        vague = scored.score is None or scored.confidence < LOW_CONFIDENCE
        if vague and self._pending is None:
            risk = risk_words or (item.risk_item and bool(scored.score))
            self._pending = _Record(item.no, item.question, text, scored.score, scored.method, True,
                                    scored.confidence, scored.evidence, risk=risk)
            return StepResult(item.no, scored, True, risk, False)
        if self._pending is not None:
            first, self._pending = self._pending, None
            text = first.answer + FOLLOW_UP_JOINER + text
            risk_words = risk_words or first.risk
            if scored.score is None and first.score is not None:
                scored = ItemScore(first.score, first.method, first.confidence, first.evidence)
            scored = replace(scored, needs_review=scored.needs_review or vague)
        # An item-9 answer left unclear after the follow-up is flagged too: a clinician must ask.
        risk = risk_words or (item.risk_item and (scored.score is None or scored.score > 0))
        self._records.append(_Record(item.no, item.question, text, scored.score, scored.method,
                                     scored.needs_review, scored.confidence, scored.evidence, risk=risk))
        return StepResult(item.no, scored, False, risk, self.done)

    def correct(self, item_no: int, score: int | None) -> None:
        """Store the clinician's score for an answered item (None removes the correction)."""
        if score is not None and (not isinstance(score, int) or isinstance(score, bool)
                                  or not MIN_SCORE <= score <= MAX_SCORE):
            raise AssessmentError(f"a score must be {MIN_SCORE}-{MAX_SCORE}, not {score!r}")
        self.instrument.item(item_no)
        if item_no > len(self._records):
            raise AssessmentError(f"item {item_no} has not been answered yet")
        self._records[item_no - 1].clinician_score = score

    @property
    def total(self) -> int:
        """Sum of the item scores so far; a clinician's correction replaces the item's score."""
        return sum(r.clinician_score if r.clinician_score is not None else (r.score or 0)
                   for r in self._records)

    @property
    def band(self) -> str:
        return self.instrument.band(self.total)

    @property
    def risk(self) -> bool:
        """True once any answer raised the risk flag."""
        return any(r.risk for r in self._records) or bool(self._pending and self._pending.risk)

    @property
    def items(self) -> list[dict]:
        """Answered items for the side panel and the store."""
        return [{"item_no": r.item_no, "question": r.question, "answer": r.answer, "score": r.score,
                 "method": r.method, "needs_review": r.needs_review, "clinician_score": r.clinician_score}
                for r in self._records]

    def to_dict(self) -> dict:
        """JSON-serialisable state."""
        return {"version": STATE_VERSION, "instrument": self.instrument.id,
                "records": [vars(r).copy() for r in self._records],
                "pending": vars(self._pending).copy() if self._pending else None}

    @classmethod
    def from_dict(cls, data: dict, instruments: dict[str, Instrument] | None = None) -> "Screening":
        """Rebuild a screening saved by to_dict(); AssessmentError when the data is malformed."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise AssessmentError(f"not a saved screening (version {STATE_VERSION} expected)")
        instruments = instruments if instruments is not None else load_instruments()
        if data.get("instrument") not in instruments:
            raise AssessmentError(f"unknown instrument {data.get('instrument')!r} in saved screening")
        screening = cls(instruments[data["instrument"]])
        try:
            screening._records = [_Record(**r) for r in data["records"]]
            screening._pending = _Record(**data["pending"]) if data.get("pending") else None
        except (KeyError, TypeError) as exc:
            raise AssessmentError(f"malformed saved screening: {exc}") from exc
        if len(screening._records) > len(screening.instrument.items) or any(
                r.item_no != i + 1 for i, r in enumerate(screening._records)):
            raise AssessmentError("malformed saved screening: items out of order")
        for record in screening._records + ([screening._pending] if screening._pending else []):
            for value in (record.score, record.clinician_score):
                if value is not None and (not isinstance(value, int) or not MIN_SCORE <= value <= MAX_SCORE):
                    raise AssessmentError(f"malformed saved screening: score {value!r} for item {record.item_no}")
        return screening


# ---------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mvp.assessment", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score answers read from stdin, one JSON line out per answer",
                           description="Read answers from stdin (one per line, or JSONL with an 'answer' "
                                       "field) and print one JSON object per answer.")
    score.add_argument("--instrument", required=True, help="instrument id from config/instruments.yaml (phq9, gad7)")
    score.add_argument("--item", required=True, type=int, help="item number, 1-based (PHQ-9: 1-9, GAD-7: 1-7)")
    score.add_argument("--model", default=None,
                       help="model folder, hub id or 'demo': score with the model, cross-checked by the rules "
                            "(default: rules only)")
    score.add_argument("--instruments-file", default=None, type=Path,
                       help=f"instruments YAML (default: {DEFAULT_INSTRUMENTS_PATH})")
    return parser


def read_answers(lines: Iterable[str]) -> Iterable[str]:
    """Answers from plain lines or JSONL objects with an 'answer' field; blank lines are skipped."""
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssessmentError(f"stdin line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj.get("answer"), str):
                raise AssessmentError(f"stdin line {n}: JSON object without an 'answer' text field")
            yield obj["answer"]
        else:
            yield line


def _load_engine(model: str) -> Any:
    """Build an engine through the model wing's one factory (lazy: torch is imported only here)."""
    try:
        from mvp.model.factory import EngineSettings, build_engine
        from mvp.model.loader import ModelLoadError
    except ImportError as exc:
        raise AssessmentError(f"--model needs mvp.model, which cannot be imported: {exc}") from exc
    try:
        return build_engine(EngineSettings(model=model))
    except (ModelLoadError, OSError, ValueError) as exc:
        raise AssessmentError(f"cannot load model {model!r}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        instruments = load_instruments(args.instruments_file)
        if args.instrument not in instruments:
            parser.error(f"unknown instrument {args.instrument!r}; choose from {', '.join(sorted(instruments))}")
        instrument = instruments[args.instrument]
        if not 1 <= args.item <= len(instrument.items):
            parser.error(f"--item must be 1-{len(instrument.items)} for {instrument.id}, not {args.item}")
        engine = _load_engine(args.model) if args.model else None
        for answer in read_answers(sys.stdin):
            result = score_answer(answer, instrument, args.item, engine)
            print(json.dumps({"answer": answer, "score": result.score, "method": result.method,
                              "needs_review": result.needs_review}, ensure_ascii=False), flush=True)
    except AssessmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
