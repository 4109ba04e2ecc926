"""Guided screening with standard instruments (PHQ-9, GAD-7 in config/instruments.yaml).

Modules, each importing only those above it (no circle):

- `instruments`: the 0-3 scale, `Instrument`/`Item`, `ItemScore`, `load_instruments()`, the errors.
- `rules`: the rule-based answer scorer (frequency words, day counts -> 0-3).
- `scoring`: the model scorer and `score_answer()`, which cross-checks it with the rules.
- `screening`: the `Screening` state machine of the guided flow (follow-ups, risk flag, corrections).
- `cli`: `python -m mvp.assessment score ...`.

`from mvp import assessment` (or `from mvp.assessment import ...`) gives the public API below.
"""
from mvp.assessment.instruments import (
    DEFAULT_INSTRUMENTS_PATH,
    MAX_SCORE,
    MIN_SCORE,
    AssessmentError,
    Band,
    Instrument,
    InstrumentError,
    Item,
    ItemScore,
    load_instruments,
)
from mvp.assessment.rules import days_to_score, score_rules
from mvp.assessment.scoring import (
    LOW_CONFIDENCE,
    METHODS,
    build_model_messages,
    parse_model_score,
    score_answer,
    score_model,
)
from mvp.assessment.screening import Screening, StepResult, has_risk_words

__all__ = [
    "DEFAULT_INSTRUMENTS_PATH", "MAX_SCORE", "MIN_SCORE", "AssessmentError", "Band", "Instrument",
    "InstrumentError", "Item", "ItemScore", "load_instruments", "days_to_score", "score_rules",
    "LOW_CONFIDENCE", "METHODS", "build_model_messages", "parse_model_score", "score_answer",
    "score_model", "Screening", "StepResult", "has_risk_words",
]
