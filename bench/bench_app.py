"""App round trip vs the bare engine: one full streamed reply through gradio_client and the real app
(`python app.py`, login, queue, streaming, safety screening, storing the reply) against
`Engine.start` on the same prompt, the same model and the same number of new tokens.

    python -m bench.bench_app                           # models/demo (run `make demo-model` first)
    python -m bench.bench_app --model /path/to/model --tokens 128 --repeats 5

Both sides decode greedily and generate exactly --tokens tokens: the model folder is served through a
copy (weights linked, not copied) whose generation_config.json sets temperature 0, max_new_tokens =
min_new_tokens = TOKENS (end-of-turn is suppressed until then), and the app's stored metrics confirm
the count and the prompt length of every timed reply. Both use one torch thread (OMP_NUM_THREADS=1
for the app process): with two threads on a shared 2-core machine, generation speed depends on what
else runs. Runs alternate (app, engine, app, ...) so machine noise hits both alike; medians reported.

Goal: app / engine <= 1.15. Also reported: time to the first streamed update vs the engine's first
token, and the app's own server-side generation time (from the stored metrics), which splits the
overhead into generation inside the app and transport (HTTP, queue, SSE, gradio_client).
Prints a table and writes bench/results/app.json. Exit status 3 (skipped) when no model is available.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
GOAL_RATIO = 1.15
PROMPT = "我最近工作压力很大，晚上总是睡不着，白天也没有精神。"
ADMIN_PASSWORD = "bench-app-pass-123"
START_TIMEOUT_S = 180
SKIPPED = 3


def fixed_length_copy(model_dir: Path, out: Path, tokens: int) -> Path:
    """A view of `model_dir` (files symlinked) that decodes greedily and always generates `tokens` tokens."""
    out.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.name != "generation_config.json":
            (out / item.name).symlink_to(item.resolve())
    config_path = model_dir / "generation_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    for key in ("top_p", "top_k"):
        config.pop(key, None)
    config.update(do_sample=False, temperature=0.0, max_new_tokens=tokens, min_new_tokens=tokens)
    (out / "generation_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def start_app(model_dir: Path, workdir: Path, tokens: int) -> AppProcess:
    """`python app.py` on a free loopback port with one torch thread, a fresh database and an admin."""
    return AppProcess(
        ["--model", str(model_dir), "--db", str(workdir / "feedback.db"), "--quantization", "none",
         "--max-new-tokens", str(tokens)],
        log_path=workdir / "app.log", timeout_s=START_TIMEOUT_S,
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MVP_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )


def app_reply(client) -> dict:
    """One streamed reply in a fresh conversation (conversation creation is not timed)."""
    conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    start = time.perf_counter()
    job = client.submit(conversation_id=conv, message=PROMPT, stage_id="", api_name="/chat")
    first, final = None, None
    for update in job:
        if first is None:
            first = time.perf_counter() - start
        final = update
    wall = time.perf_counter() - start
    metrics = final["metrics"]
    return {"wall_s": wall, "first_update_s": first, "server_total_s": metrics["total_s"],
            "server_ttft_s": metrics["ttft_s"], "new_tokens": metrics["new_tokens"],
            "prompt_tokens": metrics["prompt_tokens"]}


def engine_reply(engine, messages) -> dict:
    start = time.perf_counter()
    gen = engine.start(messages, engine.default_params())
    for _ in gen:
        pass
    wall = time.perf_counter() - start
    r = gen.result
    return {"wall_s": wall, "ttft_s": r.ttft_s, "new_tokens": r.new_tokens, "prompt_tokens": r.prompt_tokens}


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def run(model_dir: Path, tokens: int, repeats: int) -> dict:
    import torch
    from gradio_client import Client

    from mvp.model.engine import Engine
    from mvp.model.loader import ModelSpec, load_model
    from mvp.counsel.stages import build_messages, load_stages

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        tmp = Path(tmp)
        bench_model = fixed_length_copy(model_dir, tmp / "model", tokens)
        started = time.perf_counter()
        app = start_app(bench_model, tmp, tokens)
        app_start_s = time.perf_counter() - started
        try:
            engine = Engine(load_model(ModelSpec(model=str(bench_model), quantization="none")))
            stage = load_stages().default  # what /new_conversation with an empty stage uses
            messages = build_messages(stage.instruction, [{"role": "user", "content": PROMPT}])
            client = Client(app.url, auth=("admin", ADMIN_PASSWORD), verbose=False)
            try:
                app_reply(client), engine_reply(engine, messages)  # warm-up
                app_runs, engine_runs = [], []
                for _ in range(repeats):
                    app_runs.append(app_reply(client))
                    engine_runs.append(engine_reply(engine, messages))
            finally:
                client.close()
        finally:
            app.stop()
    same_tokens = {r["new_tokens"] for r in app_runs + engine_runs} == {tokens}
    same_prompt = len({r["prompt_tokens"] for r in app_runs + engine_runs}) == 1
    app_s, engine_s = median(app_runs, "wall_s"), median(engine_runs, "wall_s")
    server_s = median(app_runs, "server_total_s")
    ratio = app_s / engine_s
    return {
        "model": str(model_dir), "tokens": tokens, "repeats": repeats, "prompt": PROMPT, "threads": 1,
        "app_start_s": round(app_start_s, 2),
        "same_new_tokens": same_tokens, "same_prompt_tokens": same_prompt,
        "prompt_tokens": app_runs[0]["prompt_tokens"],
        "app_wall_s": app_s, "engine_wall_s": engine_s, "ratio": ratio, "goal": GOAL_RATIO,
        "goal_met": bool(ratio <= GOAL_RATIO and same_tokens and same_prompt),
        "app_server_generation_s": server_s, "transport_overhead_s": app_s - server_s,
        "app_ms_per_token": app_s / tokens * 1e3, "engine_ms_per_token": engine_s / tokens * 1e3,
        "app_first_update_s": median(app_runs, "first_update_s"), "engine_ttft_s": median(engine_runs, "ttft_s"),
        "app_runs": app_runs, "engine_runs": engine_runs,
        "summary": [
            {"measure": f"app round trip vs bare engine ({tokens} tokens), s", "baseline": engine_s, "ours": app_s,
             "ratio": ratio, "goal": f"<= {GOAL_RATIO}", "pass": bool(ratio <= GOAL_RATIO and same_tokens)},
            {"measure": f"generation inside the app (stored metrics) vs bare engine, {tokens} tokens, s",
             "baseline": engine_s, "ours": server_s, "ratio": server_s / engine_s, "goal": f"<= {GOAL_RATIO}",
             "pass": bool(server_s / engine_s <= GOAL_RATIO and same_tokens)},
            {"measure": "app first streamed update vs engine first token, s",
             "baseline": median(engine_runs, "ttft_s"), "ours": median(app_runs, "first_update_s"),
             "ratio": median(app_runs, "first_update_s") / max(median(engine_runs, "ttft_s"), 1e-9),
             "goal": None, "pass": None},
        ],
    }


def print_table(r: dict) -> None:
    print(f"\nmodel {r['model']}, {r['tokens']} new tokens (greedy, exact: {r['same_new_tokens']}), "
          f"prompt {r['prompt_tokens']} tokens (same on both sides: {r['same_prompt_tokens']}), "
          f"median of {r['repeats']}, 1 torch thread")
    print(f"{'measure':<46}{'engine':>10}{'app':>10}{'ratio':>8}{'goal':>8}")
    print(f"{'full streamed reply, s':<46}{r['engine_wall_s']:>10.4f}{r['app_wall_s']:>10.4f}{r['ratio']:>8.3f}"
          f"{'<=' + str(GOAL_RATIO):>8}")
    print(f"{'per token, ms':<46}{r['engine_ms_per_token']:>10.3f}{r['app_ms_per_token']:>10.3f}")
    print(f"{'first token / first streamed update, s':<46}{r['engine_ttft_s']:>10.4f}{r['app_first_update_s']:>10.4f}")
    print(f"app: generation inside the server {r['app_server_generation_s']:.4f} s, transport and queue "
          f"{r['transport_overhead_s']:.4f} s per reply; app start {r['app_start_s']} s")
    print(f"goal met: {r['goal_met']}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="App round trip (gradio_client) vs the bare engine, same prompt and tokens.")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"model folder (default: {DEMO_DIR.relative_to(REPO)} when built)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per reply, forced on both sides (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed replies per side, alternating (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS / "app.json", help="results JSON (default bench/results/app.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    model = args.model or DEMO_DIR
    if not (model / "config.json").exists():
        print(f"skipped: no model at {model} (build it with `make demo-model` or pass --model PATH)", file=sys.stderr)
        return SKIPPED
    if args.tokens < 1 or args.repeats < 1:
        print("error: --tokens and --repeats must be at least 1", file=sys.stderr)
        return 2
    result = run(model.resolve(), args.tokens, args.repeats)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
