"""Print how far clinicians agree with each other (Krippendorff's alpha) from feedback.db.

    python -m train.agreement --db feedback.db              # all judgements, a table
    python -m train.agreement --db feedback.db --batch 3    # one rating batch's finished tasks
    python -m train.agreement --db feedback.db --json       # the whole report as JSON

The computation is `mvp.store.agreement` (the `krippendorff` package): interval alpha per rating
dimension of config/rating.yaml, nominal alpha for thumbs and pairwise choices, each rater against
the consensus of the others, and agreement with gold items. Read alpha as >= 0.8 reliable, 0.667-0.8
tentative, below that not to be trusted; with few items (n) any alpha is a rough guess.
Exit status 2 with a message (no traceback) for a missing database or an unknown batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _value(entry: dict) -> str:
    if entry["alpha"] is None:
        return f"—  (n={entry['n_items']}; {entry['note'].split(' / ')[0]})"
    return f"{entry['alpha']:.3f} {entry['verdict']} (n={entry['n_items']} 项, {entry['n_values']} 个评分)"


def format_report(report: dict) -> str:
    """The report as a plain-text table."""
    batch = report["scope"]["batch_id"]
    lines = [f"评分一致性 Krippendorff's alpha（{'批次 ' + str(batch) if batch else '全部评分'}）", ""]
    for m in report["measures"]:
        lines.append(f"  {m['name']:<8} [{m['level']}]  {_value(m)}")
    lines.append("")
    lines.append("各评分者与其他人的共识相比（alpha，n = 可比较的项数）：")
    for rater in report["raters"]:
        parts = [f"{k}={v['alpha']:.3f}(n={v['n_items']})" if v["alpha"] is not None else f"{k}=—(n={v['n_items']})"
                 for k, v in rater["measures"].items()]
        lines.append(f"  {rater['rater']}: " + "  ".join(parts))
    if report["gold"]:
        lines.append("")
        lines.append("与标准答案（gold）一致：")
        for g in report["gold"]:
            rate = "—" if g["rate"] is None else f"{g['rate']:.0%}"
            lines.append(f"  {g['rater']}: {g['agree']}/{g['checks']} ({rate})")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, type=Path, help="the app's feedback database (feedback.db)")
    parser.add_argument("--batch", type=int, default=None, help="only the finished tasks of this rating batch (its id)")
    parser.add_argument("--include-demo", action="store_true", help="also count judgements of demo conversations")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from mvp.store import Store, StoreError

    if not args.db.is_file():
        print(f"错误 / error: 找不到数据库 / database not found: {args.db}", file=sys.stderr)
        return 2
    try:
        with Store(args.db) as store:
            report = store.agreement_report(args.batch, include_demo=args.include_demo)
    except StoreError as exc:
        print(f"错误 / error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
