"""Export benchmark: time of `train.export` at N and 2N ratings, and compact vs per-turn data size.

    python bench/bench_export.py                       # N = 100,000 ratings; a few minutes
    python bench/bench_export.py --ratings 10000 --dir /tmp/bench-export --keep

1. Two databases are seeded through the Store's public API (create_conversation, add_user_message,
   add_assistant_message, add_rating, add_comparison, set_thumb): conversations of `TURNS` turns with
   `ALTERNATIVES` replies per turn, each reply rated by `RATERS` clinicians (a rewrite on some, PII in
   some client messages), one comparison per turn, a thumb on some replies. The Store has no bulk
   path, so seeding runs with SQLite `synchronous=OFF` in this process only (one fsync per call would
   make seeding, which is not what is measured, take ~10x longer); it is timed separately.
2. `export(db, out)` with the default options (scrubbing on when mvp.safety.privacy is importable) is timed
   at N and at 2N ratings, alternately, `--repeats` times each; the best wall time of each counts
   (the dev machines are shared, so single runs are noisy); process CPU time is reported too.
   Goal: time(2N) / time(N) <= 2.3 (linear).
3. `train.convert` statistics on the bundled dialogues: total tokens of one compact sample per
   conversation vs the per-turn expansion, for the same supervised tokens.

Prints a table and writes bench/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mvp.store import Store, passwords, schema  # noqa: E402
from train import convert  # noqa: E402
from train.export import ExportOptions, export  # noqa: E402

RESULTS = REPO / "bench" / "results" / "export.json"
DEFAULT_RATINGS = 100_000
GOAL_RATIO = 2.3
DEFAULT_REPEATS = 2
TURNS = 5
ALTERNATIVES = 2
RATERS = ("li", "wang")
RATINGS_PER_CONVERSATION = TURNS * ALTERNATIVES * len(RATERS)
REWRITE_EVERY = 10  # one rating in ten carries a rewrite
PII_EVERY = 7  # one client message in seven carries a phone number and a name
CLIENT_LINES = ("最近总是睡不着，心里很乱。", "工作压力很大，老板总是批评我。", "和家里人的关系也不太好。",
                "有时候觉得自己什么都做不好。", "我想试着改变，但不知道从哪里开始。")


def seed(path: Path, ratings: int) -> dict:
    """A database with exactly `ratings` latest ratings, written through the Store."""
    conversations = -(-ratings // RATINGS_PER_CONVERSATION)
    store = Store(path)
    for name in RATERS:
        store.add_user(name, f"password-{name}", "clinician")
    mv1 = store.register_model_version("models/demo", label="base")
    mv2 = store.register_model_version("models/demo", adapter="runs/v1", label="v1")
    written = calls = 0
    for c in range(conversations):
        conv = store.create_conversation(RATERS[c % 2], "intake", mv1)
        for t in range(TURNS):
            text = f"{CLIENT_LINES[t]}（第{c}次会谈）"
            if (c * TURNS + t) % PII_EVERY == 0:
                text += f"我叫王{c % 97}，电话138{c:08d}。"
            user = store.add_user_message(conv, text)
            replies = [store.add_assistant_message(conv, user, f"听起来这让你很难受，能多说一点吗？（{c}-{t}-{a}）",
                                                   model_version_id=(mv1, mv2)[a], make_active=(a == 0))
                       for a in range(ALTERNATIVES)]
            calls += 1 + ALTERNATIVES
            for a, reply in enumerate(replies):
                for r, rater in enumerate(RATERS):
                    if written == ratings:
                        break
                    rewrite = "我能感受到你的压力，我们一起看看最难的是哪一部分。" if written % REWRITE_EVERY == 0 else None
                    store.add_rating(reply, rater, overall=(5 - 2 * a - r) if a == 0 else 2 - r % 2,
                                     rewrite=rewrite)
                    written += 1
                    calls += 1
            store.add_comparison(replies[0], replies[1], "a", RATERS[t % 2], shown_left=replies[t % 2],
                                 activate_choice=False)
            if t % 2 == 0:
                store.set_thumb(replies[0], RATERS[0], 1)
                calls += 1
            calls += 1
        calls += 1
    store.close()
    return {"ratings": written, "conversations": conversations, "store_calls": calls}


def scrub_available() -> bool:
    try:
        import mvp.safety.privacy  # noqa: F401
    except ImportError:
        return False
    return True


def timed_export(db: Path, out: Path, scrub: bool) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of this process, manifest); the output folder is removed after."""
    wall, cpu = time.perf_counter(), time.process_time()
    manifest = export(db, out, ExportOptions(scrub=scrub))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shutil.rmtree(out)
    return wall, cpu, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratings", type=int, default=DEFAULT_RATINGS, help="N (the second database has 2N)")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"exports timed per size, alternating N and 2N (default {DEFAULT_REPEATS})")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.dir))
    passwords.SCRYPT_N = 2**10  # account creation only; hashes carry their own parameters
    schema.SYNCHRONOUS = "OFF"  # seeding only (see the docstring); export reads
    scrub = scrub_available()
    sizes = (args.ratings, 2 * args.ratings)
    rows: dict[int, dict] = {}
    try:
        for n in sizes:
            started = time.perf_counter()
            rows[n] = {**seed(work / f"feedback-{n}.db", n), "seed_s": round(time.perf_counter() - started, 1),
                       "db_mb": round((work / f"feedback-{n}.db").stat().st_size / 2**20, 1),
                       "export_wall_s": [], "export_cpu_s": []}
            print(f"{n} ratings: seeded in {rows[n]['seed_s']} s", flush=True)
        for _ in range(args.repeats):
            for n in sizes:
                wall, cpu, manifest = timed_export(work / f"feedback-{n}.db", work / f"export-{n}", scrub)
                rows[n]["export_wall_s"].append(round(wall, 2))
                rows[n]["export_cpu_s"].append(round(cpu, 2))
                rows[n].update(
                    export_mb=round(sum(f["bytes"] for f in manifest["files"].values()) / 2**20, 1),
                    rows={k: v["total"] for k, v in manifest["counts"].items() if isinstance(v, dict)},
                    scrubbed=manifest["scrub"]["total"])
                print(f"{n} ratings: exported in {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
        stats = convert.run_stats()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for row in rows.values():
        row["export_s"] = min(row["export_wall_s"])
    small, large = rows[sizes[0]], rows[sizes[1]]
    ratio = large["export_s"] / small["export_s"]
    cpu_ratio = min(large["export_cpu_s"]) / min(small["export_cpu_s"])
    total = stats["sources"]["all"]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "scrub": scrub, "shape": {"turns": TURNS, "alternatives": ALTERNATIVES, "raters": len(RATERS)},
        "export": list(rows.values()), "ratio_2n_over_n": round(ratio, 3),
        "cpu_ratio_2n_over_n": round(cpu_ratio, 3), "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO,
        "expansion": stats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"\n{'ratings':>9} {'convs':>7} {'seed s':>8} {'export s':>9} {'CPU s':>7} {'db MB':>7} {'out MB':>7}  rows")
    for row in rows.values():
        print(f"{row['ratings']:>9} {row['conversations']:>7} {row['seed_s']:>8} {row['export_s']:>9} "
              f"{min(row['export_cpu_s']):>7} {row['db_mb']:>7} {row['export_mb']:>7}  {row['rows']}")
    print(f"export time 2N/N: {ratio:.2f} wall (best of {args.repeats}), {cpu_ratio:.2f} CPU (goal <= {GOAL_RATIO}); "
          f"scrubbing {'on' if scrub else 'OFF (mvp.safety.privacy missing)'}")
    print(f"\ncompact vs per-turn on the bundled dialogues ({stats['tokenizer']}):")
    print(convert.format_stats(stats))
    print(f"per-turn / compact total tokens: {total['per_turn_over_compact_tokens']} "
          f"(same {total['supervised_tokens']} supervised tokens)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
