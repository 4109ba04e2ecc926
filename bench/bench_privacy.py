"""Benchmark of the PII scrubber: recall per kind, clean messages changed, and linear scaling.

How to run (about 3 minutes on one core, most of it the scaling part):
    python -m bench.bench_privacy                    # prints tables, writes bench/results/privacy.json
    python -m bench.bench_privacy --split dev --errors   # list misses and changed clean messages (dev only)
    python -m bench.bench_privacy --scale 0          # skip the scaling measurement
    python -m bench.bench_privacy --doc docs/benchmarks.md   # also rewrite the privacy section there

Labelled set: tests/data/pii_dev.jsonl and tests/data/pii_heldout.jsonl, client messages written for
this purpose, each {"id", "text", "pii": [{"kind", "text"}], "conversation"?}. Messages sharing a
"conversation" are scrubbed by one Scrubber, in order (a name found once is replaced everywhere).
The set was split ONCE, by conversation (60 % dev, 40 % held out, seed 13); the rules were tuned on dev
only. `--errors` refuses the held-out split so that it stays unseen.

Measures: a labelled span counts as found when the scrubber's spans cover every character of each of
its occurrences (strict: a partly scrubbed address is a miss; "overlap" recall is reported beside it).
"clean changed" is the share of messages without personal data in which anything was replaced
(goal <= 5 %). Scaling: scrubbing an export of N messages (conversations of 4 messages built from the
labelled texts, one Scrubber per conversation as train/export does), 100k vs 50k in the same run
(best of 2 each, interleaved), goal <= 2.3x.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvp.safety.privacy import KINDS, Scrubber  # noqa: E402

DATA = ROOT / "tests" / "data"
SPLITS = ("dev", "heldout")
DEFAULT_OUT = ROOT / "bench" / "results" / "privacy.json"
RECALL_GOAL, CLEAN_GOAL, SCALE_GOAL = 0.95, 0.05, 2.3


def load(split: str) -> list[dict]:
    path = DATA / f"pii_{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gold_spans(rec: dict) -> list[tuple[str, int, int]]:
    """Every occurrence of every labelled text; occurrences inside a longer labelled one are dropped."""
    spans = set()
    for item in rec["pii"]:
        start = rec["text"].find(item["text"])
        while start >= 0:
            spans.add((item["kind"], start, start + len(item["text"])))
            start = rec["text"].find(item["text"], start + 1)
    return [s for s in spans if not any(o != s and o[1] <= s[1] and s[2] <= o[2] for o in spans)]


def predictions(records: list[dict]) -> dict[str, list[tuple[str, int, int]]]:
    """Spans per record id, one Scrubber per conversation (a record without one is its own)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        groups[rec.get("conversation") or rec["id"]].append(rec)
    keep = Scrubber()
    out = {}
    for recs in groups.values():
        scrubber = Scrubber(keep.keep_numbers, keep.keep_terms)
        for rec in recs:
            scrubber.learn(rec["text"])
        for rec in recs:
            out[rec["id"]] = scrubber.spans(rec["text"])
    return out


def evaluate(records: list[dict]) -> dict:
    pred = predictions(records)
    per_kind = {k: {"spans": 0, "found": 0, "overlap": 0} for k in KINDS}
    misses, changed, extra = [], [], []
    clean = [r for r in records if not r["pii"]]
    for rec in records:
        covered = set()
        for _, s, e in pred[rec["id"]]:
            covered.update(range(s, e))
        golds = gold_spans(rec)
        for kind, s, e in golds:
            chars = [i for i in range(s, e) if not rec["text"][i].isspace()]
            per_kind[kind]["spans"] += 1
            if all(i in covered for i in chars):
                per_kind[kind]["found"] += 1
            else:
                misses.append((rec["id"], kind, rec["text"][s:e], rec["text"]))
            if any(i in covered for i in chars):
                per_kind[kind]["overlap"] += 1
        for kind, s, e in pred[rec["id"]]:
            if not any(gs < e and s < ge for _, gs, ge in golds):
                extra.append((rec["id"], kind, rec["text"][s:e], rec["text"]))
        if not rec["pii"] and pred[rec["id"]]:
            changed.append(rec["text"])
    total = sum(v["spans"] for v in per_kind.values())
    found = sum(v["found"] for v in per_kind.values())
    overlap = sum(v["overlap"] for v in per_kind.values())
    return {
        "messages": len(records), "with_pii": len(records) - len(clean), "clean": len(clean), "spans": total,
        "recall": found / total if total else None, "recall_overlap": overlap / total if total else None,
        "clean_changed": len(changed) / len(clean) if clean else None, "clean_changed_n": len(changed),
        "spans_outside_labels": len(extra),
        "per_kind": {k: {**v, "recall": v["found"] / v["spans"] if v["spans"] else None} for k, v in per_kind.items()},
        "_misses": misses, "_changed": changed, "_extra": extra,
    }


OTHER_AUTHORS = (("crisis_labelled.jsonl", "text"), ("assessment_answers.jsonl", "answer"))


def other_authors_changed() -> dict:
    """Messages written by other people for other tests (no personal data planted): share changed.
    Not labelled for PII and looked at while tuning, so this is a check on clean text, not a held-out score."""
    texts = []
    for name, key in OTHER_AUTHORS:
        path = DATA / name
        if path.exists():
            texts += [t for t in (json.loads(x).get(key) for x in path.read_text(encoding="utf-8").splitlines() if x.strip())
                      if isinstance(t, str)]
    keep = Scrubber()
    changed = sum(1 for t in texts if Scrubber(keep.keep_numbers, keep.keep_terms).spans(t))
    return {"messages": len(texts), "changed": changed, "share": changed / len(texts) if texts else None}


def export_messages(n: int, seed: int = 7) -> list[list[dict]]:
    """n messages in conversations of 4, each text two labelled texts joined (so few texts repeat)."""
    pool = [r["text"] for split in SPLITS for r in load(split)]
    rng = random.Random(seed)
    convs = []
    for i in range(0, n, 4):
        convs.append([{"role": "user" if j % 2 == 0 else "assistant",
                       "content": rng.choice(pool) + "，" + rng.choice(pool)} for j in range(min(4, n - i))])
    return convs


def time_export(n: int) -> float:
    """Seconds to scrub n messages. The input is built first and frozen for the garbage collector, so
    the timing is of scrubbing, not of the collector re-scanning an input that grows with n."""
    convs = export_messages(n)
    keep = Scrubber()
    gc.collect()
    gc.freeze()
    try:
        start = time.perf_counter()
        for conv in convs:
            Scrubber(keep.keep_numbers, keep.keep_terms).scrub_messages(conv)
        return time.perf_counter() - start
    finally:
        gc.unfreeze()


def summary_rows(results: dict, scale: dict | None, others: dict | None = None) -> list[dict]:
    rows = []
    for split, r in results.items():
        label = f"{split} ({r['messages']} msgs, {r['spans']} spans, {r['clean']} clean)"
        rows.append({"measure": f"privacy recall, {label}", "ours": round(r["recall"], 3),
                     "goal": f">= {RECALL_GOAL}", "pass": r["recall"] >= RECALL_GOAL})
        for kind, v in r["per_kind"].items():
            if v["spans"]:
                rows.append({"measure": f"privacy recall {kind}, {split} ({v['spans']} spans)",
                             "ours": round(v["recall"], 3), "goal": f">= {RECALL_GOAL}", "pass": v["recall"] >= RECALL_GOAL})
        rows.append({"measure": f"privacy clean messages changed, {split} ({r['clean']} clean)",
                     "ours": round(r["clean_changed"], 3), "goal": f"<= {CLEAN_GOAL}",
                     "pass": r["clean_changed"] <= CLEAN_GOAL})
    if others:
        rows.append({"measure": f"privacy other authors' messages changed ({others['messages']})",
                     "ours": round(others["share"], 3), "goal": f"<= {CLEAN_GOAL}", "pass": others["share"] <= CLEAN_GOAL})
    if scale:
        rows.append({"measure": f"privacy scrub export {scale['large']} vs {scale['small']} messages, s",
                     "baseline": round(scale["small_s"], 2), "ours": round(scale["large_s"], 2),
                     "ratio": round(scale["ratio"], 3), "goal": f"<= {SCALE_GOAL}", "pass": scale["ratio"] <= SCALE_GOAL})
    return rows


DOC_START, DOC_END = "<!-- privacy:start (python -m bench.bench_privacy --doc) -->", "<!-- privacy:end -->"


def doc_section(results: dict, scale: dict | None, others: dict | None = None) -> str:
    """The "Privacy" section of docs/benchmarks.md (between markers, so a rerun replaces it)."""
    lines = [DOC_START, "## Privacy: PII scrubbing (bench/bench_privacy.py)", "",
             f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Labelled client messages in "
             "tests/data/pii_dev.jsonl and tests/data/pii_heldout.jsonl, split once by conversation; rules tuned on "
             "dev only. Recall is strict: every character of a labelled span must be replaced.", "",
             "| split | messages | with personal data | clean | spans | recall | recall (overlap) | clean changed |",
             "|---|---|---|---|---|---|---|---|"]
    for split, r in results.items():
        lines.append(f"| {split} | {r['messages']} | {r['with_pii']} | {r['clean']} | {r['spans']} | {r['recall']:.3f} | "
                     f"{r['recall_overlap']:.3f} | {r['clean_changed']:.3f} ({r['clean_changed_n']}) |")
    lines += ["", "| kind | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for kind in KINDS:
        cells = []
        for r in results.values():
            v = r["per_kind"][kind]
            cells.append(f"{v['found']}/{v['spans']} = {v['recall']:.2f}" if v["spans"] else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    if scale:
        lines += ["", f"Scrubbing an export (one Scrubber per conversation of 4 messages): {scale['small']} messages "
                      f"{scale['small_s']:.1f} s, {scale['large']} messages {scale['large_s']:.1f} s, ratio "
                      f"{scale['ratio']:.2f} (goal <= {SCALE_GOAL})."]
    if others and others["messages"]:
        lines += ["", f"Messages written by other people for other tests (tests/data/crisis_labelled.jsonl and "
                      f"assessment_answers.jsonl, no planted personal data; seen while tuning): {others['changed']} of "
                      f"{others['messages']} changed ({others['share']:.1%})."]
    lines += ["", f"Goals: recall >= {RECALL_GOAL} per kind, clean changed <= {CLEAN_GOAL:.0%}. The same person wrote the "
                  "labelled set and the rules, and the held-out part was measured (figures only) after each round of "
                  "dev tuning: expect lower figures on messages written by others. Per-kind held-out counts are small "
                  "(a single miss moves address or student_id recall a lot).",
              "", "Check a rule change by hand: `echo '我老婆（陈美玲）在字节跳动上班' | python -m mvp.safety.privacy scrub` "
                  "(one JSON object per line: text and found spans; `--conversation` for one mapping across lines).",
              DOC_END]
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if DOC_START in text and DOC_END in text:
        head, rest = text.split(DOC_START, 1)
        text = head + section + rest.split(DOC_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=SPLITS, nargs="*", default=list(SPLITS), help="which parts to evaluate")
    parser.add_argument("--errors", action="store_true", help="print misses and changed clean messages (dev only)")
    parser.add_argument("--scale", type=int, default=50000,
                        help="messages in the smaller export (the larger has twice as many); 0 skips scaling")
    parser.add_argument("--repeats", type=int, default=2, help="timing runs of each export size (the best is kept)")
    parser.add_argument("--doc", type=Path, default=None, help="also rewrite the privacy section of this Markdown file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default: {DEFAULT_OUT})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.errors and "heldout" in args.split:
        print("--errors lists individual messages: use it with --split dev only (the held-out part stays unseen)",
              file=sys.stderr)
        return 2
    results = {split: evaluate(load(split)) for split in args.split}
    for split, r in results.items():
        print(f"{split}: {r['messages']} messages ({r['with_pii']} with personal data, {r['clean']} clean), "
              f"{r['spans']} spans; recall {r['recall']:.3f} (overlap {r['recall_overlap']:.3f}); clean changed "
              f"{r['clean_changed']:.3f} ({r['clean_changed_n']}); spans outside labels {r['spans_outside_labels']}")
        print("  " + ", ".join(f"{k} {v['found']}/{v['spans']}" for k, v in r["per_kind"].items() if v["spans"]))
        if args.errors:
            for item in r["_misses"]:
                print("  MISS", *item)
            for item in r["_extra"]:
                print("  EXTRA", *item)
            for text in r["_changed"]:
                print("  CHANGED", text)
    others = other_authors_changed()
    print(f"other authors' messages changed: {others['changed']} of {others['messages']}")
    scale = None
    if args.scale:
        time_export(200)                                   # warm-up: jieba's dictionary, regex caches
        # best of `--repeats` runs of each size, interleaved: the dev machines are shared
        small_s = large_s = float("inf")
        for _ in range(args.repeats):
            small_s = min(small_s, time_export(args.scale))
            large_s = min(large_s, time_export(2 * args.scale))
        scale = {"small": args.scale, "large": 2 * args.scale, "small_s": small_s, "large_s": large_s,
                 "ratio": large_s / small_s}
        print(f"scaling: {args.scale} messages {small_s:.2f} s, {2 * args.scale} messages {large_s:.2f} s, "
              f"ratio {scale['ratio']:.3f} (goal <= {SCALE_GOAL})")
    clean = {s: {k: v for k, v in r.items() if not k.startswith("_")} for s, r in results.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"results": clean, "scale": scale, "other_authors": others,
              "summary": summary_rows(results, scale, others)}
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.doc:
        write_doc(args.doc, doc_section(results, scale, others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
