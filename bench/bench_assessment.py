"""Assessment scorer benchmark: exact-match accuracy and mean absolute error on the labelled answers.

    python bench/bench_assessment.py                 # the rule layer
    python bench/bench_assessment.py --model demo    # also the model alone and model+rules

The labelled set (tests/data/assessment_answers.jsonl) has answers written for this purpose (kinds
explicit, vague, negated, numeric, colloquial, offtopic) and patient replies from MDD-5k dialogues
(kind dialogue), each with a clinician-style score 0-3 or null ("cannot tell"). The rule layer is
the baseline measured in the same run. The model part needs a real instruction-following model to
be good: the built-in demo model is tiny and was never trained to classify, so its numbers only show
that the path works.

Metrics per layer and slice: exact = score equals the label (null = null counts); MAE over answers
where both label and score are numbers; coverage = labelled numbers that got a number; review =
share marked needs_review. Prints a table and writes bench/results/assessment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mvp.assessment import AssessmentError, load_instruments, score_answer, score_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "assessment_answers.jsonl"


def metrics(pairs: list[tuple[int | None, int | None, bool]]) -> dict:
    """pairs of (label, score, needs_review) -> exact, MAE, coverage, review rate."""
    n = len(pairs)
    both = [(label, score) for label, score, _ in pairs if label is not None and score is not None]
    labelled = [score for label, score, _ in pairs if label is not None]
    return {
        "n": n,
        "exact": round(sum(label == score for label, score, _ in pairs) / n, 3) if n else None,
        "mae": round(sum(abs(label - score) for label, score in both) / len(both), 3) if both else None,
        "coverage": round(sum(s is not None for s in labelled) / len(labelled), 3) if labelled else None,
        "review": round(sum(review for _, _, review in pairs) / n, 3) if n else None,
    }


def slices(rows: list[dict]) -> dict[str, list[int]]:
    """Row indices per slice: all, written (answers written for the set), dialogue, each kind."""
    out: dict[str, list[int]] = {"all": list(range(len(rows)))}
    out["written"] = [i for i, r in enumerate(rows) if r["kind"] != "dialogue"]
    for kind in sorted({r["kind"] for r in rows}):
        out[kind] = [i for i, r in enumerate(rows) if r["kind"] == kind]
    return out


def run_layer(rows: list[dict], instruments: dict, score) -> tuple[list[tuple], float]:
    """Score every row with `score(row, instrument) -> (score, needs_review)`; returns pairs, seconds."""
    start = time.perf_counter()
    pairs = []
    for row in rows:
        value, review = score(row, instruments[row["instrument"]])
        pairs.append((row["score"], value, review))
    return pairs, time.perf_counter() - start


def combined(engine):
    """score_answer as the app calls it: rules only without an engine, model+rules with one."""
    def score(row: dict, instrument) -> tuple[int | None, bool]:
        result = score_answer(row["answer"], instrument, row["item"], engine)
        return result.score, result.needs_review
    return score


def model_alone(engine):
    """The model's own classification, without the rule cross-check."""
    def score(row: dict, instrument) -> tuple[int | None, bool]:
        result = score_model(row["answer"], instrument.item(row["item"]), engine, instrument)
        return (result.score if result else None), result is None
    return score


def load_engine(model: str):
    """An engine over the model (built by the one factory, as the CLI does), or None (with a note)
    when it cannot be loaded."""
    from mvp.model.factory import EngineSettings, build_engine
    from mvp.model.loader import ModelLoadError

    try:
        return build_engine(EngineSettings(model=model))
    except ModelLoadError as exc:
        print(f"model part skipped: {exc}", file=sys.stderr)
        return None


def print_table(results: dict) -> None:
    print(f"{'layer':<12} {'slice':<11} {'n':>4} {'exact':>6} {'MAE':>6} {'cover':>6} {'review':>6}")
    for layer, by_slice in results["layers"].items():
        for name, m in by_slice.items():
            mae = "-" if m["mae"] is None else f"{m['mae']:.3f}"
            cover = "-" if m["coverage"] is None else f"{m['coverage']:.3f}"
            print(f"{layer:<12} {name:<11} {m['n']:>4} {m['exact']:>6.3f} {mae:>6} {cover:>6} {m['review']:>6.3f}")
    for layer, seconds in results["seconds"].items():
        print(f"{layer}: {seconds:.2f} s for {results['answers']} answers")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Accuracy and MAE of the assessment scorer on labelled answers.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"labelled JSONL (default: {DEFAULT_DATA})")
    parser.add_argument("--model", default=None,
                        help="also score through this model ('demo', a folder or a hub id); default: rules only")
    parser.add_argument("--out", type=Path, default=RESULTS / "assessment.json",
                        help="where to write the results JSON (default: bench/results/assessment.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        instruments = load_instruments()
        rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, AssessmentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    engine = load_engine(args.model) if args.model else None
    layers = {"rules": combined(None)}
    if engine is not None:
        layers["model"] = model_alone(engine)
        layers["model+rules"] = combined(engine)
    repo = Path(__file__).resolve().parent.parent
    data = args.data.resolve()
    results = {"data": str(data.relative_to(repo)) if data.is_relative_to(repo) else str(data), "answers": len(rows), "model": args.model if engine else None,
               "note": "the model part needs a real instruction-following model to be good; the demo model is "
                       "tiny and untrained for classification",
               "layers": {}, "seconds": {}}
    groups = slices(rows)
    for name, score in layers.items():
        pairs, seconds = run_layer(rows, instruments, score)
        results["layers"][name] = {s: metrics([pairs[i] for i in idx]) for s, idx in groups.items()}
        results["seconds"][name] = round(seconds, 3)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
