"""Feedback-store benchmark: rating writes through the Store vs bare sqlite3, and bulk export reads.

    python bench/bench_store.py                      # defaults below; writes bench/results/store.json
    python bench/bench_store.py --threads 16 --ratings 200 --export-ratings 100000 --dir /tmp

Everything is measured in one run, on the same disk and with the same SQLite settings (WAL,
synchronous=FULL, the Store's default), so the ratios hold even where absolute disk latency drifts:
1. sequential: one Store.add_rating vs one bare sqlite3 INSERT+COMMIT of a rating-shaped row into an
   unindexed WAL table, alternating write by write; ratio of medians (goal <= 3x);
2. concurrent: THREADS writer threads each writing RATINGS ratings through one Store (none may be
   lost; p50/p99 latency, throughput), and the same load as bare INSERT+COMMITs, one connection per
   thread, run alternately;
3. export: export_ratings() and export_snapshot() at N and 2N synthetic ratings (bulk-seeded with
   raw SQL, which is not what is measured); the 2N/N time ratio shows whether it is linear.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mvp.store import Store, passwords, schema  # noqa: E402

RESULTS = REPO / "bench" / "results" / "store.json"
GOAL_RATIO = 3.0
TAGS = ["说教", "过长", "不准确", "有风险", "跑题"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "mean_ms": round(statistics.fmean(latencies) * 1e3, 3),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 3),
        "max_ms": round(max(latencies) * 1e3, 3),
    }


# -- fixtures -------------------------------------------------------------------------------------
def make_store(folder: Path, raters: int, replies: int) -> tuple[Store, list[str], list[int]]:
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder / "store.db")
    names = [f"rater{i:02d}" for i in range(raters)]
    for name in names:
        store.add_user(name, "bench-password", "clinician")
    mv = store.register_model_version("models/demo")
    conv = store.create_conversation(names[0], "intake", mv)
    user_msg = store.add_user_message(conv, "最近总是睡不着")
    ids = [store.add_assistant_message(conv, user_msg, f"回复 {i}", make_active=False) for i in range(replies)]
    return store, names, ids


class Bare:
    """The baseline: a plain sqlite3 connection, WAL, one INSERT + COMMIT per rating."""

    DDL = ("CREATE TABLE IF NOT EXISTS ratings (id INTEGER PRIMARY KEY, message_id INTEGER, rater TEXT,"
           " overall INTEGER, empathy INTEGER, tags TEXT, comment TEXT, created_at TEXT)")

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(self.DDL)
        conn.commit()
        self.anchor = conn  # like the Store, keep the WAL open between writes

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=schema.BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous = {schema.SYNCHRONOUS}")
        return conn

    @staticmethod
    def write(conn: sqlite3.Connection, message_id: int, rater: str, i: int) -> None:
        conn.execute(
            "INSERT INTO ratings (message_id, rater, overall, empathy, tags, comment, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (message_id, rater, 1 + i % 5, 1 + (i + 2) % 5, json.dumps([TAGS[i % 5]], ensure_ascii=False),
             "评语", schema.utc_now()),
        )
        conn.commit()


def store_write(store: Store, message_id: int, rater: str, i: int) -> None:
    store.add_rating(message_id, rater, overall=1 + i % 5, empathy=1 + (i + 2) % 5, tags=[TAGS[i % 5]],
                     comment="评语", allowed_tags=TAGS)


# -- 1. sequential --------------------------------------------------------------------------------
def bench_sequential(folder: Path, writes: int) -> dict[str, Any]:
    """One bare write, then one Store write, alternately: disk-latency drift hits both alike."""
    replies_count = 100
    store, names, replies = make_store(folder / "seq", 1, replies_count)
    bare = Bare(folder / "seq" / "bare.db")
    conn = bare.connect()
    store_lat: list[float] = []
    bare_lat: list[float] = []
    for i in range(writes):
        t = time.perf_counter()
        Bare.write(conn, replies[i % replies_count], names[0], i)
        bare_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        store_write(store, replies[i % replies_count], names[0], i)
        store_lat.append(time.perf_counter() - t)
    conn.close()
    bare.anchor.close()
    store.close()
    s, b = summary_ms(store_lat), summary_ms(bare_lat)
    return {"store": s, "bare": b, "ratio_p50": round(s["p50_ms"] / b["p50_ms"], 2),
            "ratio_mean": round(s["mean_ms"] / b["mean_ms"], 2)}


# -- 2. concurrent --------------------------------------------------------------------------------
def _run_threads(worker: Any, count: int) -> tuple[list[list[float]], list[BaseException], float]:
    latencies: list[list[float]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(count + 1)

    def run(index: int) -> None:
        try:
            barrier.wait()
            worker(index, latencies[index])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def bench_concurrent(folder: Path, threads: int, ratings: int, repeats: int) -> dict[str, Any]:
    store_lat: list[float] = []
    bare_lat: list[float] = []
    store_wall = bare_wall = 0.0
    lost = 0
    errors: list[str] = []
    integrity = "ok"
    for rep in range(repeats):
        rep_dir = folder / f"conc{rep}"
        rep_dir.mkdir()
        bare = Bare(rep_dir / "bare.db")

        def bare_worker(index: int, out: list[float]) -> None:
            conn = bare.connect()
            for i in range(ratings):
                t = time.perf_counter()
                Bare.write(conn, i + 1, f"rater{index:02d}", i)
                out.append(time.perf_counter() - t)
            conn.close()

        lat, errs, wall = _run_threads(bare_worker, threads)
        bare_lat += [x for per in lat for x in per]
        bare_wall += wall
        errors += [f"bare: {e!r}" for e in errs]
        bare.anchor.close()

        store, names, replies = make_store(rep_dir, threads, ratings)

        def store_worker(index: int, out: list[float]) -> None:
            for i in range(ratings):
                t = time.perf_counter()
                store_write(store, replies[i], names[index], i)
                out.append(time.perf_counter() - t)

        lat, errs, wall = _run_threads(store_worker, threads)
        store_lat += [x for per in lat for x in per]
        store_wall += wall
        errors += [f"store: {e!r}" for e in errs]
        check = sqlite3.connect(store.path)
        stored = check.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
        lost += threads * ratings - stored
        result = check.execute("PRAGMA integrity_check").fetchone()[0]
        integrity = integrity if result == "ok" else result
        check.close()
        store.close()
    total = threads * ratings * repeats
    s, b = summary_ms(store_lat), summary_ms(bare_lat)
    store_rate, bare_rate = len(store_lat) / store_wall, len(bare_lat) / bare_wall
    return {
        "threads": threads, "ratings_per_thread": ratings, "repeats": repeats,
        "store": {**s, "writes_per_s": round(store_rate, 1)},
        # A bare writer thread that waits past the busy timeout dies with "database is locked":
        # its remaining writes never happen, and are counted here.
        "bare": {**b, "writes_per_s": round(bare_rate, 1), "failed_writes": total - len(bare_lat)},
        "lost": lost, "store_errors": [e for e in errors if e.startswith("store")][:5],
        "bare_errors": [e for e in errors if e.startswith("bare")][:5], "integrity_check": integrity,
        "ratio_p50": round(s["p50_ms"] / b["p50_ms"], 2),
        "ratio_throughput": round(bare_rate / store_rate, 2),
    }


# -- 3. export ------------------------------------------------------------------------------------
def seed_ratings(store: Store, count: int, raters: list[str]) -> None:
    """Bulk-insert ``count`` ratings (two raters per reply, 5 turns per conversation) with raw SQL."""
    conn = sqlite3.connect(store.path)
    now = schema.utc_now()
    replies_needed = count // 2
    with conn:
        mv = conn.execute("SELECT MIN(id) FROM model_versions").fetchone()[0]
        next_msg = (conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]) + 1
        messages, ratings = [], []
        conv = None
        for k in range(replies_needed):
            if k % 5 == 0:
                conv = conn.execute(
                    "INSERT INTO conversations (user_name, stage_id, model_version_id, created_at, updated_at)"
                    " VALUES (?, 'intake', ?, ?, ?)", (raters[k % len(raters)], mv, now, now)).lastrowid
                parent = None
            user_id, reply_id = next_msg, next_msg + 1
            next_msg += 2
            messages.append((user_id, conv, "user", f"来访者第 {k} 句", parent, None, "{}", now))
            messages.append((reply_id, conv, "assistant", f"咨询师回复 {k}", user_id, mv,
                             '{"temperature": 0.7}', now))
            parent = reply_id
            for j in range(2):
                ratings.append((reply_id, raters[(k + j) % len(raters)], json.dumps({"overall": 1 + (k + j) % 5}),
                                json.dumps([TAGS[k % 5]], ensure_ascii=False), now))
        conn.executemany(
            "INSERT INTO messages (id, conversation_id, role, content, stage_id, parent_id, model_version_id,"
            " gen_params, created_at) VALUES (?, ?, ?, ?, 'intake', ?, ?, ?, ?)", messages)
        conn.executemany(
            "INSERT INTO ratings (message_id, rater, revision, is_latest, scores, tags, created_at)"
            " VALUES (?, ?, 1, 1, ?, ?, ?)", ratings)
    conn.close()


def bench_export(folder: Path, base_count: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for count in (base_count, 2 * base_count):
        store, names, _ = make_store(folder / f"export{count}", 20, 1)
        seed_ratings(store, count, names)
        timings = {}
        for name, call in (("export_ratings", store.export_ratings), ("export_snapshot", store.export_snapshot),
                           ("clinician_activity", store.clinician_activity),
                           ("mean_scores_by_version", store.mean_scores_by_version)):
            best = float("inf")
            for _ in range(3):  # best of three: the machine may be shared
                gc.collect()
                t = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - t)
            timings[name] = round(best, 3)
        timings["rows"] = len(store.export_ratings())
        result[str(count)] = timings
        store.close()
    result["ratio_2n_vs_n"] = {
        k: round(result[str(2 * base_count)][k] / result[str(base_count)][k], 2)
        for k in ("export_ratings", "export_snapshot")
    }
    return result


def print_table(report: dict[str, Any]) -> None:
    seq, conc, exp = report["sequential"], report["concurrent"], report["export"]
    print(f"\nSQLite {report['env']['sqlite']}  WAL  synchronous={report['env']['synchronous']}  "
          f"folder={report['env']['folder']}")
    print(f"{'':38}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'writes/s':>10}")
    rows = [("sequential  bare INSERT+COMMIT", seq["bare"]), ("sequential  Store.add_rating", seq["store"]),
            (f"{conc['threads']} threads bare INSERT+COMMIT", conc["bare"]),
            (f"{conc['threads']} threads Store.add_rating", conc["store"])]
    for label, row in rows:
        print(f"{label:38}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['mean_ms']:>9.3f}"
              f"{row.get('writes_per_s', ''):>10}")
    print(f"\nsequential cost ratio (p50): {seq['ratio_p50']}x   (goal <= {GOAL_RATIO}x)")
    print(f"concurrent p50 ratio: {conc['ratio_p50']}x   throughput ratio bare/store: {conc['ratio_throughput']}x")
    print(f"Store: lost ratings {conc['lost']}, errors {len(conc['store_errors'])}, integrity_check "
          f"{conc['integrity_check']}   bare: writes never made {conc['bare']['failed_writes']} "
          f"({len(conc['bare_errors'])} threads hit 'database is locked')")
    for count, t in exp.items():
        if count != "ratio_2n_vs_n":
            print(f"export {int(count):>7} ratings: export_ratings {t['export_ratings']:.3f}s  "
                  f"export_snapshot {t['export_snapshot']:.3f}s  clinician_activity "
                  f"{t['clinician_activity']:.3f}s  mean_scores {t['mean_scores_by_version']:.3f}s")
    print(f"export time ratio 2N/N: {exp['ratio_2n_vs_n']}")
    print(f"\nwritten: {RESULTS.relative_to(REPO)}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark the feedback store (writes and exports).")
    parser.add_argument("--threads", type=int, default=16, help="concurrent writer threads (default 16)")
    parser.add_argument("--ratings", type=int, default=200, help="ratings written per thread (default 200)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating bare/store repetitions of the concurrent phase (default 2)")
    parser.add_argument("--sequential", type=int, default=500,
                        help="writes of each kind in the sequential phase, alternating (default 500)")
    parser.add_argument("--export-ratings", type=int, default=100_000,
                        help="N for the export timing at N and 2N ratings (0 skips it; default 100000)")
    parser.add_argument("--dir", default=None, help="folder for the temporary databases (default: system temp)")
    return parser


def main() -> int:
    args = make_parser().parse_args()
    passwords.SCRYPT_N = 2**10  # account creation is not what is measured
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_store_") as tmp:
        folder = Path(tmp)
        report: dict[str, Any] = {
            "env": {"sqlite": sqlite3.sqlite_version, "python": platform.python_version(),
                    "cpus": os.cpu_count(), "synchronous": schema.SYNCHRONOUS, "folder": str(folder.parent)},
            "sequential": bench_sequential(folder, args.sequential),
            "concurrent": bench_concurrent(folder, args.threads, args.ratings, args.repeats),
        }
        report["export"] = bench_export(folder, args.export_ratings) if args.export_ratings else {}
    report["goal_ratio"] = GOAL_RATIO
    conc = report["concurrent"]
    report["goal_met"] = (report["sequential"]["ratio_p50"] <= GOAL_RATIO and conc["lost"] == 0
                          and not conc["store_errors"] and conc["integrity_check"] == "ok")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if report["export"]:
        print_table(report)
    else:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0 if report["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
