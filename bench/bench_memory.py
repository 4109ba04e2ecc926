"""Resident memory of the app on the demo model: idle, and after a clinician day, against the bare model.

    python -m bench.bench_memory                     # models/demo (run `make demo-model` first)
    python -m bench.bench_memory --conversations 6 --turns 8 --tokens 64

Starts the real app (`python app.py`, a fresh database), drives it with gradio_client as a clinician
would (new conversations, messages, a regenerated reply, ratings, thumbs, history reloads, the
conversation list) and reads the app process's VmRSS / VmHWM from /proc. The baseline, measured in the
same run, is a plain Python process that only loads the same model with the same loader
(`mvp.model.loader.load_model`) and generates one reply: the ratio says how much the app (Gradio,
the store, the safety classifier, jieba, caches) adds on top of the model itself. This is the figure
the README's "memory" column reports. Linux only (reads /proc); exit status 3 where it cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mvp.app.process import AppProcess  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = REPO / "bench" / "results"
DEMO_DIR = REPO / "models" / "demo"
ADMIN_PASSWORD = "bench-memory-pass-123"
SKIPPED = 3
MESSAGES = ["我最近工作压力很大，晚上总是睡不着。", "和家里人也经常吵架，觉得没人理解我。",
            "白天上班注意力很难集中，领导已经批评过我两次。", "周末也不想出门，只想一个人待着。",
            "以前喜欢打球，现在完全提不起兴趣。", "有时候会想，是不是我自己哪里做得不好。",
            "晚上躺下脑子里就停不下来，一直在想工作的事。", "我不知道该怎么跟伴侣说这些。"]

BASELINE = r"""
import dataclasses, json, sys
from mvp.model.loader import ModelSpec, load_model
from mvp.model.engine import Engine
engine = Engine(load_model(ModelSpec(model=sys.argv[1], quantization="none", device="cpu")))
params = dataclasses.replace(engine.default_params(), max_new_tokens=int(sys.argv[2]))
gen = engine.start([{"role": "user", "content": "我最近工作压力很大，晚上总是睡不着。"}], params)
for _ in gen: pass
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM")}))
"""


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def baseline(model: Path, tokens: int) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", BASELINE, str(model), str(tokens)], cwd=REPO, check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def clinician_day(client, conversations: int, turns: int) -> int:
    """Drive the app as one clinician's day; returns the number of replies generated."""
    replies = 0
    for c in range(conversations):
        conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
        for t in range(turns):
            reply = client.predict(conversation_id=conv, message=MESSAGES[(c + t) % len(MESSAGES)],
                                   stage_id="", api_name="/chat")
            replies += 1
            client.predict(message_id=reply["message_id"], overall=4, empathy=3, api_name="/rate")
            client.predict(message_id=reply["message_id"], value=1, api_name="/thumb")
        client.predict(conversation_id=conv, api_name="/regenerate")
        replies += 1
        client.predict(conversation_id=conv, api_name="/history")
        client.predict(limit=100, api_name="/conversations")
    return replies


def run(model: Path, conversations: int, turns: int, tokens: int) -> dict:
    from gradio_client import Client

    base = baseline(model, tokens)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        app = AppProcess(["--model", str(model), "--db", str(Path(tmp) / "feedback.db"), "--quantization", "none",
                          "--max-new-tokens", str(tokens)], log_path=Path(tmp) / "app.log",
                         env={"OMP_NUM_THREADS": "1", "MVP_ADMIN_PASSWORD": ADMIN_PASSWORD})
        try:
            time.sleep(1.0)
            idle = proc_memory_kib(app.proc.pid)
            client = Client(app.url, auth=("admin", ADMIN_PASSWORD), verbose=False)
            try:
                started = time.perf_counter()
                replies = clinician_day(client, conversations, turns)
                day_s = time.perf_counter() - started
            finally:
                client.close()
            day = proc_memory_kib(app.proc.pid)
        finally:
            app.stop()
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    return {
        "model": str(model), "conversations": conversations, "turns": turns, "tokens": tokens,
        "replies": replies, "day_s": round(day_s, 1),
        "baseline_rss_mib": mib(base["VmRSS"]), "baseline_peak_mib": mib(base["VmHWM"]),
        "app_idle_rss_mib": mib(idle["VmRSS"]), "app_day_rss_mib": mib(day["VmRSS"]),
        "app_day_peak_mib": mib(day["VmHWM"]),
        "summary": [
            {"measure": "app RSS at start vs bare model (load + one reply), MiB", "baseline": mib(base["VmRSS"]),
             "ours": mib(idle["VmRSS"]), "ratio": idle["VmRSS"] / base["VmRSS"], "goal": None, "pass": None},
            {"measure": f"app RSS after a day ({replies} replies, ratings, history) vs bare model, MiB",
             "baseline": mib(base["VmRSS"]), "ours": mib(day["VmRSS"]), "ratio": day["VmRSS"] / base["VmRSS"],
             "goal": None, "pass": None},
            {"measure": "app peak RSS over the day vs bare model peak, MiB", "baseline": mib(base["VmHWM"]),
             "ours": mib(day["VmHWM"]), "ratio": day["VmHWM"] / base["VmHWM"], "goal": None, "pass": None},
        ],
    }


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="App resident memory (idle, after a clinician day) vs the bare model.")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: models/demo when built)")
    parser.add_argument("--conversations", type=int, default=5, help="conversations in the day (default 5)")
    parser.add_argument("--turns", type=int, default=8, help="client messages per conversation (default 8)")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per reply (default 48)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json", help="results JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    model = (args.model or DEMO_DIR).resolve()
    if not (model / "config.json").exists() or not Path("/proc/self/status").exists():
        print(f"skipped: needs Linux /proc and a model at {model} (`make demo-model`)", file=sys.stderr)
        return SKIPPED
    if min(args.conversations, args.turns, args.tokens) < 1:
        print("error: --conversations, --turns and --tokens must be at least 1", file=sys.stderr)
        return 2
    result = run(model, args.conversations, args.turns, args.tokens)
    for row in result["summary"]:
        print(f"{row['measure']:<72}{row['baseline']:>9}{row['ours']:>9}{row['ratio']:>7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
