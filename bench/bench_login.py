"""A flood of wrong-password logins against the real app, while a clinician keeps working.

    python -m bench.bench_login                      # models/demo, 160 attempts from 8 threads
    python -m bench.bench_login --attempts 300 --threads 8 --calls 40

A logged-in clinician calls `/history` (gradio_client) --calls times before the flood and again
while --threads threads send --attempts wrong-password logins (spread over several accounts, some
that do not exist) to `/login`. Reported: median `/history` latency before and during, their ratio
(target <= 3: password checks run off the event loop, throttled per account and per client), and
how many logins were answered, refused early (locked) or checked. Writes bench/results/login.json.
Exit status 3 (skipped) when no model is available.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mvp.app.process import AppProcess  # noqa: E402

PASSWORD = "bench-login-pass-1"
RESULTS = REPO / "bench" / "results" / "login.json"


def history_latencies(client, conversation_id: int, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        client.predict(conversation_id=conversation_id, api_name="/history")
        out.append(time.perf_counter() - t)
    return out


def flood(url: str, attempts: int, threads: int, counts: dict) -> None:
    import httpx

    names = ["wang", "li", "admin", "nobody", "zhang"]

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(k, attempts, threads):
                status = http.post("/login", data={"username": names[i % len(names)], "password": f"x{i}"}).status_code
                counts[status] = counts.get(status, 0) + 1

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def run(model: Path, attempts: int, threads: int, calls: int) -> dict:
    from gradio_client import Client

    from mvp.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "feedback.db"
        store = Store(db)
        for name in ("admin", "wang", "li", "zhao"):
            store.add_user(name, PASSWORD, "admin" if name == "admin" else "clinician")
        app = AppProcess(["--model", str(model), "--db", str(db), "--max-new-tokens", "16"],
                         log_path=Path(tmp) / "app.log", env={"OMP_NUM_THREADS": "1"})
        try:
            client = Client(app.url, auth=("zhao", PASSWORD), verbose=False)
            conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
            client.predict(conversation_id=conv, message="最近睡不好", stage_id="", api_name="/chat")
            history_latencies(client, conv, 3)  # warm-up
            before = history_latencies(client, conv, calls)
            counts: dict[int, int] = {}
            flooder = threading.Thread(target=flood, args=(app.url, attempts, threads, counts))
            started = time.perf_counter()
            flooder.start()
            during = []
            while flooder.is_alive() or len(during) < calls:
                during += history_latencies(client, conv, 1)
                if len(during) >= 10 * calls:
                    break
            flooder.join()
            flood_s = time.perf_counter() - started
            client.close()
            log = app.output()
        finally:
            app.stop()
    result = {
        "attempts": attempts, "threads": threads, "flood_s": round(flood_s, 2),
        "login_status_counts": {str(k): v for k, v in sorted(counts.items())},
        "history_median_before_s": round(statistics.median(before), 4),
        "history_median_during_s": round(statistics.median(during), 4),
        "history_calls_during": len(during),
        "locked_log_lines": log.count("locked"),
        "password_in_log": "x1\n" in log or "'x1'" in log,
    }
    result["ratio"] = round(result["history_median_during_s"] / result["history_median_before_s"], 2)
    result["summary"] = [{
        "measure": f"/history median (s) during {attempts} wrong logins from {threads} threads vs before",
        "baseline": result["history_median_before_s"], "ours": result["history_median_during_s"],
        "ratio": result["ratio"], "goal": "<= 3", "pass": result["ratio"] <= 3,
    }]
    return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_login", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "demo", help="model folder (default models/demo)")
    parser.add_argument("--attempts", type=int, default=160, help="wrong-password logins in the flood (default 160)")
    parser.add_argument("--threads", type=int, default=8, help="threads sending them (default 8)")
    parser.add_argument("--calls", type=int, default=20, help="/history calls timed before and (at least) during")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if not (args.model / "config.json").exists():
        print(f"skipped: no model at {args.model} (run `make demo-model`)")
        return 3
    result = run(args.model, args.attempts, args.threads, args.calls)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    for key, value in result.items():
        if key != "summary":
            print(f"{key:28} {value}")
    print(f"/history during / before = {result['ratio']} (target <= 3)")
    return 0 if result["ratio"] <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
