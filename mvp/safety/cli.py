"""`python -m mvp.safety check|screen|train|evaluate`: try rules, screen replies, build and measure the classifier.

    echo "我不想活了" | python -m mvp.safety check                       # rule layer, one JSON line per message
    python -m mvp.safety check --rules my_rules.yaml < messages.jsonl   # {"text": ...} lines work too
    python -m mvp.safety screen --crisis < replies.txt
    python -m mvp.safety train              # rebuild models/safety/classifier.json.gz and reply_classifier.json.gz
    python -m mvp.safety evaluate --data tests/data/crisis_written.jsonl --split heldout
    python -m mvp.safety evaluate --data data/psysuicide/test.json       # misses never shown for this one

Each command opens what it needs and calls one function of the package; user errors print
"error: ..." and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator  # noqa: F401

from mvp.jsonl import read_texts, stdin_text
from mvp.safety.detect import DEFAULT_RULES_PATH, Detection, RuleSet
from mvp.safety.rules import SafetyError


def read_messages(stream: Iterable[str]) -> Iterator[str]:
    """Messages from lines: a JSON object with a string "text" field, else the line itself."""
    return read_texts(stream, "text", strict=False)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mvp.safety",
        description="Try the crisis rules: read messages from stdin (one per line, or JSONL with a "
                    "\"text\" field) and print one JSON object per message; build and evaluate the classifier.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{check,screen,train,evaluate}")
    check = sub.add_parser("check", help="detect crisis categories in client messages",
                           description="Print {\"text\", \"categories\", \"evidence\"} per message.")
    check.add_argument("--rules", type=Path, default=None,
                       help=f"rules file to use (default: {DEFAULT_RULES_PATH})")
    screen = sub.add_parser("screen", help="screen model replies (method details, encouragement, ...)",
                            description="Print {\"text\", \"blocked\", \"reasons\", \"evidence\", \"replacement\"} per reply.")
    screen.add_argument("--rules", type=Path, default=None,
                        help=f"rules file to use (default: {DEFAULT_RULES_PATH})")
    screen.add_argument("--crisis", action="store_true",
                        help="screen as if the client's message was a crisis (also applies crisis_patterns)")
    train = sub.add_parser("train", help="build the learned classifiers (messages, replies) from shipped data",
                           description="Train the char n-gram classifier and write it (deterministic: same data "
                                       "and seed give the same file).")
    train.add_argument("--out", type=Path, default=None, help="message model file (default: models/safety/classifier.json.gz; "
                                                           "with --out the reply model is not rebuilt)")
    train.add_argument("--seed", type=int, default=0, help="random seed of the solver (default: 0)")
    train.add_argument("--if-missing", action="store_true",
                       help="do nothing when an up-to-date model file is already there (make run / make test)")
    ev = sub.add_parser("evaluate", help="recall / precision per category, source and layer on a labelled file",
                        description="Data: JSONL {text, label|categories} or the PsySUICIDE JSON list.")
    ev.add_argument("--data", type=Path, required=True, help="labelled file (JSONL or PsySUICIDE JSON)")
    ev.add_argument("--split", default=None, help="only rows whose \"split\" field equals this (JSONL)")
    ev.add_argument("--rules", type=Path, default=None, help=f"rules file (default: {DEFAULT_RULES_PATH})")
    ev.add_argument("--model", type=Path, default=None, help="classifier file (default: the built-in one)")
    ev.add_argument("--show-misses", action="store_true",
                    help="print missed and false alarms (refused for the held-out PsySUICIDE test set)")
    ev.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return parser


def _check_or_screen(args: argparse.Namespace) -> int:
    stdin = stdin_text()
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    rules = RuleSet.load(args.rules)
    user = Detection(("suicide",), ()) if getattr(args, "crisis", False) else None
    for text in read_messages(stdin):
        if args.command == "check":
            det = rules.detect(text)
            row: dict[str, Any] = {"text": text, "categories": list(det.categories), "evidence": list(det.evidence)}
        else:
            res = rules.screen_reply(text, user)
            row = {"text": text, "blocked": res.blocked, "reasons": list(res.reasons),
                   "evidence": list(res.evidence), "replacement": res.text if res.blocked else None}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    return 0


def _train(args: argparse.Namespace) -> int:
    from mvp.safety import classifier
    path = args.out or classifier.DEFAULT_MODEL_PATH
    if args.if_missing and classifier.is_current(path) and (args.out or _replies_current()):
        print(f"{path} is up to date")
        return 0
    model = classifier.train(seed=args.seed)
    classifier.save(model, path)
    print(f"wrote {path} ({path.stat().st_size} bytes; {model.summary()})")
    if args.out is None:
        from mvp.safety import reply_model
        if not (args.if_missing and reply_model.is_current()):
            replies = reply_model.train(seed=args.seed)
            classifier.save(replies, reply_model.DEFAULT_REPLY_MODEL_PATH)
            print(f"wrote {reply_model.DEFAULT_REPLY_MODEL_PATH} ({replies.summary()})")
    return 0


def _replies_current() -> bool:
    from mvp.safety import reply_model
    return reply_model.is_current()


def _evaluate(args: argparse.Namespace) -> int:
    from mvp.safety import evaluate
    report = evaluate.run(args.data, split=args.split, rules_path=args.rules, model_path=args.model,
                          show_misses=args.show_misses)
    print(json.dumps(report, ensure_ascii=False, indent=1) if args.json else evaluate.format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.command in ("check", "screen"):
            return _check_or_screen(args)
        if args.command == "train":
            return _train(args)
        return _evaluate(args)
    except (SafetyError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
