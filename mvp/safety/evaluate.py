"""Recall and precision of each detection layer, alone and combined, per category and per source.

What it is for: `python -m mvp.safety evaluate --data FILE` (see mvp/safety/cli.py). Figures for
docs/benchmarks.md come from here. `risk` is suicide or self-harm (PsySUICIDE: ideation, plan,
preparation, attempt, self-harm); messages that only talk about suicide (关于自杀的探索) are left out
of the risk precision and reported apart as `exploration_flagged`. The misses of the held-out
PsySUICIDE test set are never printed: a set whose misses are read is no longer held out.
`false_alarms()` measures the share of client turns flagged in the held-out slice of the bundled
unlabelled dialogues (data.corpus_turns(heldout=True), never trained or tuned on), per layer, on all
its turns and on its "clean" turns (no risk word, rules quiet: almost surely not a crisis).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from mvp.safety.data import HELDOUT_SPLIT, PSYSUICIDE_TEST, RISK_CATEGORIES, Example, load_examples
from mvp.safety.rules import SafetyError

RISK = RISK_CATEGORIES
LAYERS = ("rules", "classifier", "combined")
MAX_MISSES_SHOWN = 200


def _is_protected(path: Path) -> bool:
    """The PsySUICIDE test set, whatever its name or place."""
    if not PSYSUICIDE_TEST.exists():
        return Path(path).name == "test.json"
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    return Path(path).name == "test.json" or digest(path) == digest(PSYSUICIDE_TEST)


def _pr(tp: int, fp: int, fn: int) -> dict:
    return {"recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None, "tp": tp, "fp": fp, "fn": fn}


def score(examples: list[Example], predicted: list[tuple[str, ...]], categories: tuple[str, ...]) -> dict:
    """Risk (suicide or self-harm) figures, per category and per source."""
    out: dict = {"messages": len(examples)}
    risky = lambda cats: any(c in RISK for c in cats)  # noqa: E731
    rows = [(e, p) for e, p in zip(examples, predicted) if not (e.exploration and not e.categories)]
    tp = sum(risky(e.categories) and risky(p) for e, p in rows)
    fp = sum(not risky(e.categories) and risky(p) for e, p in rows)
    fn = sum(risky(e.categories) and not risky(p) for e, p in rows)
    out["risk"] = _pr(tp, fp, fn)
    explore = [p for e, p in zip(examples, predicted) if e.exploration and not e.categories]
    if explore:
        out["exploration_flagged"] = f"{sum(risky(p) for p in explore)}/{len(explore)}"
    out["per_category"] = {}
    for c in categories:
        if not any(c in e.categories for e in examples):
            continue
        out["per_category"][c] = _pr(sum(c in e.categories and c in p for e, p in rows),
                                     sum(c not in e.categories and c in p for e, p in rows),
                                     sum(c in e.categories and c not in p for e, p in rows))
    out["per_source"] = {}
    for source in sorted({e.source for e, _ in rows}):
        sub = [(e, p) for e, p in rows if e.source == source]
        out["per_source"][source] = {"messages": len(sub), **_pr(
            sum(risky(e.categories) and risky(p) for e, p in sub),
            sum(not risky(e.categories) and risky(p) for e, p in sub),
            sum(risky(e.categories) and not risky(p) for e, p in sub))}
    return out


def run(data: Path, split: str | None = None, rules_path: Path | None = None, model_path: Path | None = None,
        show_misses: bool = False) -> dict:
    """Evaluate rules, classifier and their union on a labelled file."""
    from mvp.safety import classifier as clf
    from mvp.safety.detect import RuleSet, combine, default_ruleset

    if show_misses and _is_protected(data):
        raise SafetyError(f"{data}: misses are never shown for the PsySUICIDE test set (it must stay held out); "
                          "use --show-misses on your own data or data/psysuicide/valid.json")
    if show_misses and split == HELDOUT_SPLIT:
        raise SafetyError(f"split '{HELDOUT_SPLIT}': its misses are never shown (it is never trained or tuned on)")
    examples = load_examples(data, split)
    if not examples:
        raise SafetyError(f"{data}: no examples" + (f" in split '{split}'" if split else ""))
    rules = RuleSet.load(rules_path) if rules_path else default_ruleset()
    model = clf.load(model_path) if model_path else clf.default_classifier()
    by_layer: dict[str, list[tuple[str, ...]]] = {layer: [] for layer in LAYERS}
    for e in examples:
        r, c = rules.detect(e.text), model.detect(e.text)
        by_layer["rules"].append(r.categories)
        by_layer["classifier"].append(c.categories)
        by_layer["combined"].append(combine(r, c).categories)
    report = {"data": str(data), "split": split, "messages": len(examples),
              "layers": {layer: score(examples, preds, rules.categories) for layer, preds in by_layer.items()}}
    if show_misses:
        misses = []
        for e, pred in zip(examples, by_layer["combined"]):
            if set(e.categories) != set(pred) and not (e.exploration and not e.categories):
                misses.append({"text": e.text, "gold": list(e.categories), "got": list(pred)})
        report["misses"] = misses[:MAX_MISSES_SHOWN]
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['data']}" + (f" (split {report['split']})" if report["split"] else "")
             + f": {report['messages']} messages"]
    for layer, s in report["layers"].items():
        r = s["risk"]
        extra = f"  exploration flagged {s['exploration_flagged']}" if "exploration_flagged" in s else ""
        lines.append(f"\n[{layer}] risk (suicide/self-harm): recall {r['recall']} precision {r['precision']} "
                     f"(tp {r['tp']} fp {r['fp']} fn {r['fn']}){extra}")
        for c, d in s["per_category"].items():
            lines.append(f"  {c:12s} recall {d['recall']}  precision {d['precision']}  (tp {d['tp']} fp {d['fp']} fn {d['fn']})")
        for src, d in s["per_source"].items():
            lines.append(f"  source {src:28s} n={d['messages']:4d} risk recall {d['recall']} precision {d['precision']}")
    for m in report.get("misses", []):
        lines.append(f"MISS gold={m['gold']} got={m['got']}: {m['text']}")
    return "\n".join(lines)


def false_alarms(rules_path: Path | None = None, model_path: Path | None = None) -> dict:
    """Flag rates per layer on the held-out slice of the bundled dialogues, per corpus; `combined_context`
    scores each turn with the earlier client turns of its dialogue as context (detect(context=...))."""
    from mvp.safety import classifier as clf
    from mvp.safety.data import RISK_WORDS, corpus_dialogues, is_heldout_dialogue
    from mvp.safety.detect import CONTEXT_TURNS, RISK, RuleSet, combine, default_ruleset

    rules = RuleSet.load(rules_path) if rules_path else default_ruleset()
    model = clf.load(model_path) if model_path else clf.default_classifier()
    out: dict = {}
    for did, turns in corpus_dialogues():
        if not is_heldout_dialogue(did):
            continue
        corpus = did.split("-")[0]
        risky: list[bool] = []                     # per earlier turn: risk found (rules + classifier, alone)
        for text in turns:
            r, c = rules.detect(text), model.detect(text)
            u = combine(r, c)
            in_context = any(risky[-CONTEXT_TURNS:])
            ctx = combine(r, model.detect(text, context_risk=True)) if in_context else u
            risky.append(any(cat in RISK for cat in u.categories))
            d = out.setdefault(corpus, {"turns": 0, "rules": 0, "classifier": 0, "combined": 0, "combined_context": 0,
                                        "clean_turns": 0, "clean_flagged": 0})
            d["turns"] += 1
            d["rules"] += r.is_crisis
            d["classifier"] += c.is_crisis
            d["combined"] += u.is_crisis
            d["combined_context"] += ctx.is_crisis
            if not RISK_WORDS.search(text) and not r.is_crisis:
                d["clean_turns"] += 1
                d["clean_flagged"] += u.is_crisis
    for d in out.values():
        d["combined_rate"] = round(d["combined"] / d["turns"], 4)
        d["combined_context_rate"] = round(d["combined_context"] / d["turns"], 4)
        d["classifier_only"] = d["combined"] - d["rules"]
        d["clean_rate"] = round(d["clean_flagged"] / max(1, d["clean_turns"]), 4)
    return out
