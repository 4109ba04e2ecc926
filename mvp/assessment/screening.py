"""The guided screening: asks the items of an instrument in order, scores each answer, flags risk.

In the assessment stage the counsellor asks the items of a screening instrument one at a time and
scores each free-text answer 0-3 (完全不会 / 好几天 / 一半以上的天数 / 几乎每天). `Screening` is the
pure state machine of that flow: one follow-up question at most per vague answer, a risk flag for
self-harm words and for PHQ-9 item 9, clinician corrections; `to_dict()` / `from_dict()` keep it in
a gr.State or the database. Deterministic and free of I/O.

    from mvp.assessment import Screening, load_instruments
    s = Screening(load_instruments()["phq9"])
    s.next_prompt(); s.answer("几乎每天都睡不好"); s.total, s.band, s.risk
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from mvp.assessment.instruments import (
    MAX_SCORE,
    MIN_SCORE,
    AssessmentError,
    Instrument,
    ItemScore,
    load_instruments,
)
from mvp.assessment.scoring import LOW_CONFIDENCE, score_answer

STATE_VERSION = 1
FOLLOW_UP_JOINER = " / "

# Risk words: a minimal local check; the safety module owns real crisis detection.
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
