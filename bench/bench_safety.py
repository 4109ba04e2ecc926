"""Benchmark of crisis detection: each layer on each labelled set, reply screening, and time per message.

How to run (about 30 s on one core; the classifier is built first if missing):
    python bench/bench_safety.py                 # prints a table, writes bench/results/safety.json
    python bench/bench_safety.py --rules my.yaml --out /tmp/safety.json

The labelled set is tests/data/crisis_labelled.jsonl: Chinese client messages written for this purpose,
each {"text", "categories", "split"}. Labelling guide:
  - suicide: the speaker's wish to die (active or passive), plan, preparation or attempt, including a
    past attempt not stated as over; an overdose or poison already taken counts as an attempt
    (suicide + medical); taking others along (同归于尽, 带孩子一起走) is suicide + harm_others;
  - self_harm: the speaker injures or urges to injure themself (cut, burn, hit, bite ...), any intent;
  - harm_others: the speaker's intent, urge, plan or intrusive thought of seriously harming someone;
  - abuse: the speaker suffers (or suffered, not stated as over) violence, sexual abuse, threats to
    life or confinement;
  - medical: an acute medical emergency now (overdose / poison taken, heavy bleeding, unconscious,
    seizure, chest pain), to the speaker or someone with them;
  - none: idiom and hyperbole, negation, media / books / teaching / clinicians' questions, past risk
    stated as over, other people's deaths, everyday sadness, medication as prescribed, accidents.
Splits: "dev" was written before the rules and used to write them; "heldout", "heldout2" and "heldout3" were each
written before the rules were changed with them in view, measured untouched, then used to generalise
the rules. So the per-split numbers printed now are all "seen" data; the untouched first measurements
are recorded in the issue report, not here.

Timing: detection per message (absolute µs) against a baseline measured in the same run, the cost of a
bare chat turn: copying the message string and `json.dumps` of a typical chat payload (system prompt,
one earlier exchange, the new user message). Goal: under 1 ms per message.
Long messages (issue 12): rules + classifier on 100 / 1,000 / 2,000 / 4,000 characters of client turns,
median and p99 CPU ms over 200 rounds, each on a fresh copy of the text (goal: p99 <= 5 ms at 4,000),
against the plain normalisation pass on the same text in the same run (ratio), and the 4,000 / 1,000
ratio (linear: about 4); repetitive input (想死 x 2000, 我被打 x 1333) that used to be quadratic.
Layers: recall / precision of suicide or self-harm risk for the rules, the classifier and their union
on the written held-out split (never trained or tuned on), PsySUICIDE test (never trained or tuned
on; 关于自杀的探索 apart) and the project's labelled set (seen). Reply screening: the written labelled
replies tests/data/crisis_replies.jsonl.
False alarms: the share of client turns flagged in the held-out slice of the bundled dialogues
(30% of the dialogues by id hash; never trained or tuned on), per layer, on its clean turns (no
risk word, rules quiet), and with each turn's earlier client turns as context (detect(context=...)). Fresh lists: tests/test_safety_everyday.py (everyday messages flagged,
indirect crisis messages caught, by rules + classifier).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvp import safety  # noqa: E402
from mvp.safety import CATEGORIES, RuleSet  # noqa: E402
from mvp.safety.data import PSYSUICIDE_TEST, REPLIES, WRITTEN  # noqa: E402

LABELLED = ROOT / "tests" / "data" / "crisis_labelled.jsonl"
CORPORA = (ROOT / "data" / "cpsycound_dev.jsonl", ROOT / "data" / "mdd5k_dev.jsonl")
DEFAULT_OUT = ROOT / "bench" / "results" / "safety.json"
ROUNDS = 5                    # timing rounds; the median is reported
CORPUS_TIMING_LIMIT = 3000    # about this many client turns of the bundled dialogues are timed
GOAL_US = 1000.0
SYSTEM_PROMPT = "你是一位温和、专业的心理咨询师，请耐心倾听来访者，给予共情和支持。"


def load_labelled(path: Path = LABELLED) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def scores(rows: list[dict], predictions: list[tuple[str, ...]]) -> dict:
    """Per-category and overall precision / recall (micro over categories, and any-crisis per message)."""
    counts = {c: {"tp": 0, "fp": 0, "fn": 0} for c in CATEGORIES}
    binary = {"tp": 0, "fp": 0, "fn": 0}
    for row, pred in zip(rows, predictions):
        gold, got = set(row["categories"]), set(pred)
        for c in CATEGORIES:
            key = "tp" if c in gold and c in got else "fp" if c in got else "fn" if c in gold else None
            if key:
                counts[c][key] += 1
        key = "tp" if gold and got else "fp" if got else "fn" if gold else None
        if key:
            binary[key] += 1

    def pr(d: dict) -> dict:
        p = d["tp"] / (d["tp"] + d["fp"]) if d["tp"] + d["fp"] else 1.0
        r = d["tp"] / (d["tp"] + d["fn"]) if d["tp"] + d["fn"] else 1.0
        return {**d, "precision": round(p, 4), "recall": round(r, 4), "support": d["tp"] + d["fn"]}

    micro = {k: sum(counts[c][k] for c in CATEGORIES) for k in ("tp", "fp", "fn")}
    return {"per_category": {c: pr(counts[c]) for c in CATEGORIES}, "overall_micro": pr(micro),
            "any_crisis": pr(binary)}


def time_per_message(fn, texts: list[str]) -> float:
    """Median over ROUNDS of the mean µs per message."""
    fn(texts[0])
    runs = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for t in texts:
            fn(t)
        runs.append((time.perf_counter() - start) / len(texts) * 1e6)
    return statistics.median(runs)


def bare_chat_turn(text: str) -> str:
    copy = (" " + text)[1:]
    payload = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "最近压力很大。"},
               {"role": "assistant", "content": "听起来你最近很辛苦，愿意多说说吗？"}, {"role": "user", "content": copy}]
    return json.dumps(payload, ensure_ascii=False)


def corpus_turns() -> list[str]:
    turns: list[str] = []
    for path in CORPORA:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                turns += [m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"]
    return turns


def _cpu_ms(fn, text: str, rounds: int) -> list[float]:
    """Sorted CPU ms of `fn` on a fresh copy of `text` each round (so no per-text cache can help)."""
    fn((" " + text)[1:])
    out = []
    for _ in range(rounds):
        fresh = (" " + text)[1:]
        start = time.process_time()
        fn(fresh)
        out.append((time.process_time() - start) * 1000)
    return sorted(out)


def _p99(times: list[float]) -> float:
    return times[max(0, int(0.99 * len(times)) - 1)]


def long_message_timing(rules: RuleSet, turns: list[str], rounds: int = 200) -> dict:
    """Rules + classifier (safety.detect) on long messages; CPU time, so other processes count less.

    Baseline, measured in the same run on the same text: the plain normalisation pass
    (mvp.safety.normalise), which every message needs anyway; the ratio is detect / normalise."""
    joined = "".join(turns)
    detect = lambda t: safety.detect(t, rules=rules)  # noqa: E731
    by_length = {}
    for n in (100, 1000, 2000, 4000):
        text = (joined * (1 + 4000 // max(1, len(joined))))[:n]
        times = _cpu_ms(detect, text, rounds)
        base = _cpu_ms(safety.normalise, text, rounds)
        med = statistics.median(times)
        by_length[n] = {"median_ms": round(med, 2), "p99_ms": round(_p99(times), 2),
                        "baseline_normalise_ms": round(statistics.median(base), 3),
                        "ratio_to_baseline": round(med / max(1e-6, statistics.median(base)), 1)}
    repetitive = {}
    for label, text in (("想死x2000", "想死" * 2000), ("我被打x1333", "我被打" * 1333)):
        repetitive[label] = round(statistics.median(_cpu_ms(detect, text, 20)), 2)
    return {"by_length": by_length, "goal_p99_ms_at_4000": 5.0,
            "ratio_4000_to_1000": round(by_length[4000]["median_ms"] / by_length[1000]["median_ms"], 2),
            "repetitive_ms": repetitive}


def layer_figures() -> dict:
    from mvp.safety import evaluate
    sets = {"written_heldout": (WRITTEN, "heldout"), "psysuicide_test": (PSYSUICIDE_TEST, None),
            "project_labelled(seen)": (LABELLED, None)}
    out = {}
    for name, (path, split) in sets.items():
        if not path.exists():
            continue
        report = evaluate.run(path, split=split)
        out[name] = {layer: {"messages": report["messages"], **s["risk"],
                             **({"exploration_flagged": s["exploration_flagged"]} if "exploration_flagged" in s else {})}
                     for layer, s in report["layers"].items()}
    return out


def false_alarm_figures() -> dict:
    from mvp.safety import evaluate
    return evaluate.false_alarms()


def fresh_lists() -> dict:
    """tests/test_safety_everyday.py: everyday messages flagged and indirect crisis messages caught."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("everyday", ROOT / "tests" / "test_safety_everyday.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    risky = lambda t: any(c in ("suicide", "self_harm") for c in safety.detect(t).categories)  # noqa: E731
    return {"everyday": len(mod.EVERYDAY), "everyday_flagged": sum(safety.detect(t).is_crisis for t in mod.EVERYDAY),
            "reported_false_alarms": len(mod.REGRESSIONS),
            "reported_flagged": sum(safety.detect(t).is_crisis for t in mod.REGRESSIONS),
            "crisis": len(mod.CRISIS), "crisis_caught": sum(risky(t) for t in mod.CRISIS)}


def reply_screening() -> dict:
    """Blocked recall / precision on the written replies: all of them (seen), and the held-out split."""
    rows = [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = _reply_figures(rows)
    out["heldout"] = _reply_figures([r for r in rows if r.get("split") == "heldout"])
    return out


def _reply_figures(rows: list[dict]) -> dict:
    got = [safety.screen_reply(r["text"]) for r in rows]
    tp = sum(r["blocked"] and g.blocked for r, g in zip(rows, got))
    fp = sum(not r["blocked"] and g.blocked for r, g in zip(rows, got))
    fn = sum(r["blocked"] and not g.blocked for r, g in zip(rows, got))
    kinds = sorted({k for r in rows for k in r["reasons"]})
    per_kind = {k: round(sum(g.blocked for r, g in zip(rows, got) if k in r["reasons"])
                         / sum(k in r["reasons"] for r in rows), 3) for k in kinds}
    crisis = safety.Detection(("suicide",))
    safe_blocked_in_crisis = sum(safety.screen_reply(r["text"], crisis).blocked for r in rows if not r["blocked"])
    return {"replies": len(rows), "unsafe": sum(r["blocked"] for r in rows), "recall": round(tp / (tp + fn), 3),
            "precision": round(tp / (tp + fp), 3) if tp + fp else None, "false_blocks": fp,
            "per_kind_recall": per_kind, "safe_replies_blocked_in_crisis_mode": safe_blocked_in_crisis}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recall / precision and speed of the crisis rule layer.")
    parser.add_argument("--rules", type=Path, default=None, help="rules file (default: config/safety_rules.yaml)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default: {DEFAULT_OUT})")
    parser.add_argument("--timing-only", action="store_true", help="only the long-message timing (no files written)")
    args = parser.parse_args(argv)

    rules = RuleSet.load(args.rules)
    if args.timing_only:
        lm = long_message_timing(rules, corpus_turns())
        for n, d in lm["by_length"].items():
            print(f"{n} chars: median {d['median_ms']} ms, p99 {d['p99_ms']} ms (normalise {d['baseline_normalise_ms']} ms, "
                  f"ratio {d['ratio_to_baseline']}x)")
        print(f"linearity 4000/1000: {lm['ratio_4000_to_1000']}; repetitive: {lm['repetitive_ms']}")
        return 0
    rows = load_labelled()
    texts = [r["text"] for r in rows]
    predictions = [rules.detect(t).categories for t in texts]
    result = {"labelled_set": str(LABELLED.relative_to(ROOT)), "messages": len(rows),
              "negatives": sum(1 for r in rows if not r["categories"]), **scores(rows, predictions)}
    result["by_split"] = {}
    for split in sorted({r.get("split", "") for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.get("split", "") == split]
        s = scores([rows[i] for i in idx], [predictions[i] for i in idx])
        result["by_split"][split] = {"messages": len(idx), "any_crisis": s["any_crisis"]}

    detect_us = time_per_message(rules.detect, texts)
    base_us = time_per_message(bare_chat_turn, texts)
    all_turns = corpus_turns()
    long_turns = all_turns[::max(1, len(all_turns) // CORPUS_TIMING_LIMIT)]   # an even sample of both corpora
    timing = {"labelled_avg_chars": round(sum(map(len, texts)) / len(texts), 1),
              "detect_us_per_message": round(detect_us, 1), "baseline_us_per_message": round(base_us, 1),
              "ratio_to_baseline": round(detect_us / base_us, 1), "goal_us": GOAL_US,
              "under_goal": detect_us < GOAL_US, "rounds": ROUNDS}
    if long_turns:
        long_us = time_per_message(rules.detect, long_turns)
        flagged = sum(1 for t in all_turns if rules.detect(t).is_crisis)
        timing.update({"corpus_turns_timed": len(long_turns),
                       "corpus_avg_chars": round(sum(map(len, long_turns)) / len(long_turns), 1),
                       "corpus_detect_us_per_message": round(long_us, 1),
                       "corpus_baseline_us_per_message": round(time_per_message(bare_chat_turn, long_turns), 1)})
        result["bundled_dialogues"] = {"client_turns": len(all_turns), "flagged": flagged,
                                       "note": "unlabelled depression / counselling dialogues; many flags are "
                                               "true disclosures of ideation"}
    result["timing"] = timing
    result["long_messages"] = long_message_timing(rules, all_turns or texts)
    result["layers"] = layer_figures()
    result["false_alarms_heldout_dialogues"] = false_alarm_figures()
    result["fresh_lists"] = fresh_lists()
    result["reply_screening"] = reply_screening()
    result["environment"] = {"python": platform.python_version(), "machine": platform.machine(),
                             "processor": platform.processor() or "unknown"}

    print(f"{'category':14s}{'precision':>10s}{'recall':>8s}{'support':>9s}{'tp':>5s}{'fp':>5s}{'fn':>5s}")
    for name, d in [*result["per_category"].items(), ("overall(micro)", result["overall_micro"]),
                    ("any crisis", result["any_crisis"])]:
        print(f"{name:14s}{d['precision']:>10.3f}{d['recall']:>8.3f}{d['support']:>9d}{d['tp']:>5d}{d['fp']:>5d}{d['fn']:>5d}")
    print(f"\n{len(rows)} messages, {result['negatives']} without a category")
    print(f"detect: {detect_us:.1f} µs/message (avg {timing['labelled_avg_chars']} chars); "
          f"bare chat turn baseline: {base_us:.1f} µs; ratio {detect_us / base_us:.1f}x; goal < {GOAL_US:.0f} µs")
    if long_turns:
        print(f"bundled dialogue client turns (avg {timing['corpus_avg_chars']} chars): "
              f"{timing['corpus_detect_us_per_message']} µs/message; flagged {result['bundled_dialogues']['flagged']}"
              f" of {result['bundled_dialogues']['client_turns']}")
    lm = result["long_messages"]
    for n, d in lm["by_length"].items():
        print(f"{n} chars: rules+classifier median {d['median_ms']} ms, p99 {d['p99_ms']} ms "
              f"(baseline normalise {d['baseline_normalise_ms']} ms, ratio {d['ratio_to_baseline']}x)")
    print(f"linearity 4000/1000: {lm['ratio_4000_to_1000']}; repetitive: {lm['repetitive_ms']}")
    for name, layers in result["layers"].items():
        for layer, r in layers.items():
            print(f"{name:24s} {layer:10s} recall {r['recall']} precision {r['precision']} (n={r['messages']})"
                  + (f" exploration flagged {r['exploration_flagged']}" if r.get("exploration_flagged") else ""))
    for corpus, d in result["false_alarms_heldout_dialogues"].items():
        print(f"held-out {corpus} turns ({d['turns']}): flagged rules {d['rules']}, classifier {d['classifier']}, "
              f"combined {d['combined']} ({d['combined_rate']:.2%}; classifier-only {d['classifier_only']}; "
              f"with earlier turns as context {d['combined_context']}, {d['combined_context_rate']:.2%}); "
              f"clean turns {d['clean_turns']}: flagged {d['clean_flagged']} ({d['clean_rate']:.2%})")
    fl = result["fresh_lists"]
    print(f"fresh lists: everyday flagged {fl['everyday_flagged']}/{fl['everyday']}, reported false alarms flagged "
          f"{fl['reported_flagged']}/{fl['reported_false_alarms']}, crisis caught {fl['crisis_caught']}/{fl['crisis']}")
    rs = result["reply_screening"]
    print(f"reply screening ({rs['replies']} replies): blocked recall {rs['recall']} precision {rs['precision']}; "
          f"per kind recall {rs['per_kind_recall']}")
    h = rs["heldout"]
    print(f"  held-out replies ({h['replies']}): blocked recall {h['recall']} precision {h['precision']}; "
          f"per kind recall {h['per_kind_recall']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
