"""Serving benchmark: N clinicians ask at the same moment, each for a T-token reply (CPU).

    python bench/bench_serving.py                           # models/demo if built, else a demo-shaped model
    python bench/bench_serving.py --model models/demo --clients 8 --tokens 64 --rounds 3
    python bench/bench_serving.py --no-app                  # engine interface only (faster)

Backends, all measured in this run on the same prompts and thread count, all up at once with their
timed rounds interleaved (the dev machine is shared: load from other processes hits each alike):

1. `inprocess`: `mvp.model.engine.Engine` (the baseline: one generation at a time on the model, a lock).
2. `serve-cb`: `transformers serve --continuous-batching` through `mvp.model.openai_backend.OpenAIEngine`.
3. With `--plain-serve`: `transformers serve` without continuous batching, for reference.
4. Unless `--no-app`: `app-inprocess` vs `app-openai-cb`, the app itself (`python app.py --backend
   inprocess|openai`, N gradio_client sessions calling /chat), i.e. with the app's own queue in the way.

Per round: aggregate tokens/s = all new tokens / wall time from the first request to the last token;
time to first token measured at the client from its request (queueing included); p50/p99 over all
requests of all rounds. Engine runs generate exactly T tokens (end-of-turn suppressed on both
sides, greedy); app runs use the app's defaults (replies end at end of turn, up to T tokens) and count
the tokens stored with each reply, so compare their replies/s as well.
Prints a table with the ratio against the in-process baseline and writes bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
APP_PASSWORD = "bench-pass-123"
APP_START_TIMEOUT_S = 180

QUESTIONS = [
    "我最近工作压力很大，晚上总是睡不着。", "和父母吵架以后，我一直很内疚。", "考试快到了，我特别焦虑，脑子一片空白。",
    "分手三个月了，我还是走不出来。", "我觉得同事都在背后议论我。", "孩子不愿意上学，我不知道该怎么办。",
    "我经常莫名其妙地想哭。", "换了新城市工作，感觉很孤独。", "我对什么都提不起兴趣。", "我害怕在很多人面前讲话。",
]


def messages_for(i: int) -> list[dict]:
    return [{"role": "system", "content": "你是一名温和、专业的心理咨询师。"},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summarise(rounds: list[list[dict]]) -> dict:
    """Aggregate tokens/s per round (median over rounds) and TTFT percentiles over all requests."""
    rates = [sum(r["tokens"] for r in rnd) / max(r["end"] for r in rnd) for rnd in rounds]
    replies = [len(rnd) / max(r["end"] for r in rnd) for rnd in rounds]
    ttfts = [r["ttft_s"] for rnd in rounds for r in rnd if r["ttft_s"] is not None]
    tokens = [r["tokens"] for rnd in rounds for r in rnd]
    return {
        "tokens_per_s": statistics.median(rates),
        "tokens_per_s_rounds": rates,
        "replies_per_s": statistics.median(replies),
        "ttft_p50_s": percentile(ttfts, 50) if ttfts else None,
        "ttft_p99_s": percentile(ttfts, 99) if ttfts else None,
        "mean_new_tokens": statistics.mean(tokens),
        "requests": len(tokens),
    }


def concurrent_round(clients: int, ask) -> list[dict]:
    """Start `clients` threads at once; ask(i, t0) -> (ttft_s, tokens); returns per-request rows."""
    rows: list[dict] = [{} for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        barrier.wait()
        try:
            ttft, tokens = ask(i, t0)
            rows[i] = {"ttft_s": ttft, "tokens": tokens, "end": time.perf_counter() - t0}
        except BaseException as exc:  # reported after the round
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]}") from errors[0]
    return rows


# -- through the engine interface ------------------------------------------------------------------
def engine_ask(engine, tokens: int):
    from mvp.model.engine import GenerationParams

    def ask(i: int, t0: float):
        sent = time.perf_counter()
        gen = engine.start(messages_for(i), GenerationParams(max_new_tokens=tokens, temperature=0))
        first = None
        for _ in gen:
            if first is None:
                first = time.perf_counter() - sent
        return first, gen.result.new_tokens

    return ask


def fixed_length_openai_engine(base_url: str, model: str, tokens: int):
    """An OpenAIEngine that asks transformers serve for exactly `tokens` tokens, like the in-process run
    with end-of-turn suppressed: min_new_tokens (honoured without continuous batching) and the pad
    token, which the model never writes, as the only end-of-turn id (continuous batching ignores
    min_new_tokens but takes eos_token_id per request)."""
    from mvp.model.openai_backend import OpenAIEngine

    class FixedLength(OpenAIEngine):
        def request_kwargs(self, params, dialect):
            kwargs = super().request_kwargs(params, dialect)
            if dialect == "transformers":
                config = json.loads(kwargs["extra_body"]["generation_config"])
                config["min_new_tokens"] = tokens
                if "pad_token_id" in config:
                    config["eos_token_id"] = [config["pad_token_id"]]
                kwargs["extra_body"]["generation_config"] = json.dumps(config)
            return kwargs

    return FixedLength(base_url, model, timeout_s=600)


def interleaved(asks: dict, clients: int, rounds: int) -> dict:
    """One warm-up round each (continuous batching sets up its cache on first use), then the timed
    rounds in turn (A B C, B C A, ...) so that load from other processes hits every backend alike."""
    for ask in asks.values():
        concurrent_round(clients, ask)
    names = list(asks)
    rows: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rows[name].append(concurrent_round(clients, asks[name]))
    return {name: summarise(rows[name]) for name in names}


def inprocess_engine(model: str, threads: int):
    import torch

    from mvp.model.engine import Engine
    from mvp.model.loader import ModelSpec, load_model

    torch.set_num_threads(threads)
    engine = Engine(load_model(ModelSpec(model=model, quantization="none", device="cpu")))
    engine.eos_ids = []  # exactly `tokens` new tokens, like min_new_tokens on the server
    return engine


def run_engines(model: str, clients: int, tokens: int, rounds: int, threads: int, plain_serve: bool,
                tmp: Path) -> dict:
    """In-process Engine vs transformers serve (continuous batching; optionally also without)
    through OpenAIEngine: all up at once, rounds interleaved."""
    from mvp.model.openai_backend import LocalServer

    servers = {"serve-cb": LocalServer(model, continuous_batching=True, log=tmp / "serve-cb.log", threads=threads)}
    if plain_serve:
        servers["serve"] = LocalServer(model, log=tmp / "serve.log", threads=threads)
    starts = {}
    try:
        for name, server in servers.items():
            t = time.perf_counter()
            server.start()
            starts[name] = time.perf_counter() - t
        asks = {"inprocess": engine_ask(inprocess_engine(model, threads), tokens)}
        for name, server in servers.items():
            asks[name] = engine_ask(fixed_length_openai_engine(server.base_url, server.model, tokens), tokens)
        try:
            out = interleaved(asks, clients, rounds)
        except RuntimeError as exc:  # say whether a server died under the load
            codes = {name: server.proc.poll() for name, server in servers.items()}
            raise RuntimeError(f"{exc} (server exit codes, None = running: {codes})") from exc
    finally:
        for server in servers.values():
            server.stop()
    for name, seconds in starts.items():
        out[name]["server_start_s"] = seconds
    return out


# -- through the app -----------------------------------------------------------------------------
def start_app(model: str, db: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    from mvp.app.process import AppProcess
    from mvp.store import Store

    store = Store(db)
    for n in range(64):
        if store.get_user(f"c{n}") is None:
            store.add_user(f"c{n}", APP_PASSWORD, "clinician")
    app = AppProcess(["--model", model, "--db", str(db), *extra], log_path=log, timeout_s=APP_START_TIMEOUT_S)
    return app.proc, app.url


def app_ask(url: str, db: Path, clients: int):
    """ask(i, t0) for N logged-in gradio_client sessions, one conversation each, calling /chat."""
    import sqlite3

    from gradio_client import Client

    sessions = [Client(url, auth=(f"c{i}", APP_PASSWORD), verbose=False) for i in range(clients)]
    convs = [s.predict(stage_id="", case_id="", api_name="/new_conversation")["id"] for s in sessions]

    def ask(i: int, t0: float):
        sent = time.perf_counter()
        job = sessions[i].submit(conversation_id=convs[i], message=QUESTIONS[i % len(QUESTIONS)], stage_id="",
                                 api_name="/chat")
        first = None
        while not job.done():
            if first is None and any(o.get("text") for o in job.outputs() or []):
                first = time.perf_counter() - sent
            time.sleep(0.01)
        result = job.result()
        if first is None:
            first = time.perf_counter() - sent
        conn = sqlite3.connect(db)
        try:
            row = conn.execute("SELECT metrics FROM messages WHERE id = ?", (result["message_id"],)).fetchone()
        finally:
            conn.close()
        return first, json.loads(row[0])["new_tokens"]

    return ask


def run_apps(model: str, clients: int, tokens: int, rounds: int, threads: int, tmp: Path) -> dict:
    """The app on the in-process backend vs the app with --backend openai on transformers serve
    --continuous-batching: both up at once, rounds interleaved."""
    from mvp.model.openai_backend import LocalServer

    server = LocalServer(model, continuous_batching=True, log=tmp / "serve-app.log", threads=threads)
    procs = []
    extra = ["--max-new-tokens", str(tokens), "--quantization", "none", "--device", "cpu", "--threads", str(threads)]
    try:
        server.start()
        asks = {}
        for name, more in (("app-inprocess", []),
                           ("app-openai-cb", ["--backend", "openai", "--base-url", server.base_url])):
            db = tmp / f"{name}.db"
            proc, url = start_app(model, db, tmp / f"{name}.log", *extra, *more)
            procs.append(proc)
            asks[name] = app_ask(url, db, clients)
        return interleaved(asks, clients, rounds)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        server.stop()


# -- main ----------------------------------------------------------------------------------------
def resolve_model(model: str | None, tmp: Path) -> tuple[str, str]:
    """(folder, description): the given folder, models/demo when built, else an untrained demo-shaped model."""
    if model:
        return str(Path(model).resolve()), model
    demo = REPO / "models" / "demo"
    if (demo / "config.json").exists():
        return str(demo), "models/demo (trained demo model)"
    from train.demo.tiny_lm import build_untrained

    folder = build_untrained(tmp / "demo-shape", shape="demo", vocab_size=4000)
    return str(folder), "untrained model of the demo shape (models/demo not built)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: models/demo if built, else a demo-shaped model)")
    parser.add_argument("--clients", type=int, default=8, help="clinicians asking at the same moment")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per reply")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per backend after one warm-up round")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the model, every backend (1: on 2 shared cores 2 threads thrash)")
    parser.add_argument("--plain-serve", action="store_true", help="also transformers serve without continuous batching")
    parser.add_argument("--no-app", action="store_true", help="skip the runs through the app")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model, described = resolve_model(args.model, tmp)
    common = (model, args.clients, args.tokens, args.rounds, args.threads)
    print(f"model: {described}; {args.clients} clients x {args.tokens} tokens, {args.rounds} rounds", flush=True)
    runs = run_engines(*common, plain_serve=args.plain_serve, tmp=tmp)
    print("  engine runs done", flush=True)
    if not args.no_app:
        runs.update(run_apps(*common, tmp=tmp))
        print("  app runs done", flush=True)

    print(f"\n{'backend':<16}{'tokens/s':>10}{'ratio':>8}{'replies/s':>11}{'TTFT p50 s':>12}{'TTFT p99 s':>12}"
          f"{'tokens/reply':>14}")
    for name, r in runs.items():
        ref = runs["app-inprocess"] if name.startswith("app") else runs["inprocess"]
        r["ratio_vs_baseline"] = r["tokens_per_s"] / ref["tokens_per_s"]
        print(f"{name:<16}{r['tokens_per_s']:>10.1f}{r['ratio_vs_baseline']:>8.2f}{r['replies_per_s']:>11.2f}{r['ttft_p50_s']:>12.3f}"
              f"{r['ttft_p99_s']:>12.3f}{r['mean_new_tokens']:>14.1f}")
    result = {
        "model": described, "clients": args.clients, "tokens": args.tokens, "rounds": args.rounds,
        "threads": args.threads, "cpu_count": os.cpu_count(), "load_avg_end": os.getloadavg(), "runs": runs,
        "ratio_serve_cb_vs_inprocess": runs["serve-cb"]["ratio_vs_baseline"],
    }
    if "app-openai-cb" in runs:
        result["ratio_app_openai_cb_vs_app_inprocess"] = runs["app-openai-cb"]["ratio_vs_baseline"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nwrote {RESULTS / 'serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
