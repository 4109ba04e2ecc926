"""`python -m mvp.assessment`: score screening answers from the command line, rules only unless --model.

    echo "几乎每天都睡不好" | python -m mvp.assessment score --instrument phq9 --item 3
    python -m mvp.assessment score --instrument gad7 --item 1 < answers.jsonl
    python -m mvp.assessment score --instrument phq9 --item 2 --model demo < answers.txt

Reads answers from stdin (one per line, or JSONL with an "answer" field; mvp/jsonl.py) and prints one
JSON object per answer. The model is built by mvp.model.factory, as everywhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mvp.assessment.instruments import DEFAULT_INSTRUMENTS_PATH, AssessmentError, load_instruments
from mvp.assessment.scoring import score_answer
from mvp.jsonl import JsonlError, read_texts, stdin_text

DESCRIPTION = "Score PHQ-9 / GAD-7 screening answers (rules, optionally cross-checked by a model)."
ANSWER_FIELD = "answer"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mvp.assessment", description=DESCRIPTION)
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
        for answer in read_texts(stdin_text(), ANSWER_FIELD, strict=True):
            result = score_answer(answer, instrument, args.item, engine)
            print(json.dumps({"answer": answer, "score": result.score, "method": result.method,
                              "needs_review": result.needs_review}, ensure_ascii=False), flush=True)
    except (AssessmentError, JsonlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
