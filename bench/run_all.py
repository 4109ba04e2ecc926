"""Run every benchmark, collect their results into one table, and write docs/benchmarks.md.

    make bench                                   # = python -m bench.run_all (builds models/demo first)
    python -m bench.run_all --only bench_app bench_engine
    python -m bench.run_all --model /path/to/model --skip bench_export
    python -m bench.run_all --full               # each script's own (larger) defaults
    python -m bench.run_all --no-doc             # print the table only

Each bench script runs as its own process (`python -m bench.<name> ARGS`) with a time limit; its
output goes to bench/results/logs/<name>.log and its JSON to bench/results/. Every figure in the table
is a ratio against a baseline measured in the same run of the same script; "goal" is what the issue
asked for, "pass" whether it was met (blank: reported, no goal). Scripts found in bench/ but not listed
here still run (no arguments) and appear with their status. The machine (CPU model, cores, RAM, torch
version, load average) and the date are recorded with the table, since the dev machines are shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import re
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
DOC = REPO / "docs" / "benchmarks.md"
DEMO_DIR = REPO / "models" / "demo"
SKIPPED_RC = 3  # a script's way of saying "cannot run here" (e.g. no model)
ARTIFACTS = REPO / "test-artifacts"


@dataclass
class Bench:
    name: str
    result: str  # JSON file name under bench/results/
    args: list[str] = field(default_factory=list)  # for `make bench`; --full drops them
    timeout_s: int = 300
    model: str = "none"  # "required": needs --model or models/demo; "optional": passes --model when given


BENCHES = [
    Bench("bench_engine", "engine.json", ["--tokens", "128", "--repeats", "5"], 300, "required"),
    Bench("bench_app", "app.json", ["--tokens", "128", "--repeats", "7"], 300, "required"),
    Bench("bench_serving", "serving.json", ["--clients", "8", "--tokens", "64", "--rounds", "2"], 600, "optional"),
    Bench("bench_store", "store.json", ["--threads", "8", "--ratings", "50", "--repeats", "2", "--sequential", "200",
                                        "--export-ratings", "20000"], 400),
    Bench("bench_safety", "safety.json", [], 180),
    Bench("bench_assessment", "assessment.json", [], 180),
    Bench("bench_export", "export.json", ["--ratings", "20000", "--repeats", "2"], 600),
    Bench("bench_login", "login.json", ["--attempts", "160", "--threads", "8"], 300, "required"),
    Bench("bench_memory", "memory.json", [], 300, "required"),
]
NOT_BENCHES = {"run_all", "gpu_check", "__init__"}  # gpu_check needs a CUDA GPU: run it by hand


# -- running ------------------------------------------------------------------------------------
def discover() -> list[Bench]:
    """The listed benches, then any other bench/bench_*.py (run without arguments)."""
    known = {b.name for b in BENCHES}
    extra = [Bench(p.stem, p.stem.removeprefix("bench_") + ".json") for p in sorted(BENCH.glob("bench_*.py"))
             if p.stem not in known | NOT_BENCHES]
    present = [b for b in BENCHES if (BENCH / f"{b.name}.py").exists()]
    return present + extra


def run_one(bench: Bench, model: Path | None, full: bool, timeout_scale: float) -> dict:
    args = [] if full else list(bench.args)
    if bench.model != "none" and model is not None:
        args += ["--model", str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model)]
    if bench.model == "required" and model is None:
        return {"name": bench.name, "status": "skipped", "detail": "no model: run `make demo-model` or pass --model",
                "seconds": 0.0, "args": args}
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{bench.name}.log"
    timeout = int(bench.timeout_s * timeout_scale)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    started, start_wall = time.perf_counter(), time.time()
    print(f"[run_all] {bench.name} {' '.join(args)} (limit {timeout} s) ...", flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", f"bench.{bench.name}", *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the script and anything it started (an app server, a model server)
            proc.wait()
            rc = None
    seconds = time.perf_counter() - started
    result_path = RESULTS / bench.result
    fresh = result_path.exists() and result_path.stat().st_mtime >= start_wall - 1
    if rc is None:
        status, detail = "timeout", f"stopped after {timeout} s"
    elif rc == SKIPPED_RC:
        status, detail = "skipped", last_line(log_path)
    elif rc != 0:
        status, detail = "failed", f"exit {rc}: {last_line(log_path)}"
    elif not fresh:
        status, detail = "no result", f"{bench.result} was not written"
    else:
        status, detail = "ok", ""
    print(f"[run_all] {bench.name}: {status} in {seconds:.0f} s {detail}", flush=True)
    return {"name": bench.name, "status": status, "detail": detail, "seconds": round(seconds, 1), "args": args,
            "log": str(log_path.relative_to(REPO)), "result": str(result_path.relative_to(REPO)) if fresh else None}


def earlier(bench: Bench) -> dict | None:
    """A script not run this time (--only / --skip): its last result, if there is one, marked as such."""
    path = RESULTS / bench.result
    if not path.exists():
        return None
    when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    previous = {}
    try:  # how it ran last time run_all ran it, when that is known
        summary = json.loads((RESULTS / "summary.json").read_text(encoding="utf-8"))
        previous = next((r for r in summary["runs"] if r["name"] == bench.name and r["status"] == "ok"), {})
    except (OSError, ValueError, KeyError):
        pass
    return {"name": bench.name, "status": "ok", "seconds": previous.get("seconds", 0.0),
            "args": previous.get("args", ["?"]), "detail": f"earlier result ({when})", "result": str(path.relative_to(REPO))}


def last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


# -- reading each script's JSON into rows --------------------------------------------------------
def row(measure: str, baseline=None, ours=None, ratio=None, goal: str | None = None, ok: bool | None = None) -> dict:
    return {"measure": measure, "baseline": baseline, "ours": ours, "ratio": ratio, "goal": goal, "pass": ok}


def rows_engine(d: dict) -> list[dict]:
    s, p = d["stream"], d["prompt_building"]
    return [
        row(f"engine stream vs bare model.generate ({s['tokens']} tokens), s", s["bare_generate_s"], s["engine_stream_s"],
            s["ratio"], f"<= {s['goal']}", s["ratio"] <= s["goal"]),
        row("prompt building per turn, 50 vs 500 turns of history, ms", p["turns_50"]["per_turn_s"] * 1e3,
            p["turns_500"]["per_turn_s"] * 1e3, p["ratio"], f"<= {p['goal']}", p["ratio"] <= p["goal"]),
    ] + [row("prompt building per turn with the session summary (updates included), 50 vs 500 turns, ms",
             m["turns_50"]["per_turn_s"] * 1e3, m["turns_500"]["per_turn_s"] * 1e3, m["ratio"], f"<= {m['goal']}",
             m["ratio"] <= m["goal"]) for m in [d.get("prompt_building_memory")] if m]


def rows_store(d: dict) -> list[dict]:
    seq, conc, exp = d["sequential"], d["concurrent"], d["export"]
    goal = d.get("goal_ratio", 3.0)
    out = [
        row("rating write, Store.add_rating vs bare sqlite3 INSERT (p50), ms", seq["bare"]["p50_ms"],
            seq["store"]["p50_ms"], seq["ratio_p50"], f"<= {goal}", seq["ratio_p50"] <= goal),
        row(f"concurrent rating writes, {conc['threads']} threads (p50), ms", conc["bare"]["p50_ms"],
            conc["store"]["p50_ms"], conc["ratio_p50"]),
        row(f"ratings lost under {conc['threads']} concurrent writers (integrity {conc['integrity_check']})", None,
            conc["lost"], None, "0", conc["lost"] == 0 and conc["integrity_check"] == "ok"),
    ]
    sizes = sorted((k for k in exp if str(k).isdigit()), key=int) if isinstance(exp, dict) else []
    if len(sizes) >= 2 and "export_ratings" in exp[sizes[0]]:
        a, b = exp[sizes[0]]["export_ratings"], exp[sizes[-1]]["export_ratings"]
        out.append(row(f"Store.export_ratings, {sizes[-1]} vs {sizes[0]} ratings, s", a, b, b / a if a else None,
                       "~2 (linear)"))
    return out


def rows_safety(d: dict) -> list[dict]:
    t, any_crisis = d["timing"], d["any_crisis"]
    return [
        row("crisis detection per message vs a bare chat payload copy, µs", t["baseline_us_per_message"],
            t["detect_us_per_message"], t["ratio_to_baseline"], f"< {t['goal_us']:.0f} µs", t["under_goal"]),
        row(f"crisis detection recall / precision ({d['messages']} labelled messages)", None,
            f"{any_crisis['recall']:.3f} / {any_crisis['precision']:.3f}"),
    ]


def rows_assessment(d: dict) -> list[dict]:
    out = []
    for layer, slices in d["layers"].items():
        m = slices["all"]
        mae = "-" if m["mae"] is None else f"{m['mae']:.3f}"
        out.append(row(f"screening answer scoring ({layer}, {m['n']} answers): exact / MAE", None,
                       f"{m['exact']:.3f} / {mae}"))
    return out


def rows_export(d: dict) -> list[dict]:
    e = d["export"]
    out = [row(f"train.export, {e[-1]['ratings']} vs {e[0]['ratings']} ratings, s", e[0]["export_s"], e[-1]["export_s"],
               d["ratio_2n_over_n"], f"<= {d['goal_ratio']}", d["goal_met"])]
    total = d.get("expansion", {}).get("sources", {}).get("all")
    if total:
        out.append(row("training data: per-turn vs compact samples, total tokens", total["compact_tokens"],
                       total["per_turn_tokens"], total["per_turn_over_compact_tokens"]))
    return out


def rows_serving(d: dict) -> list[dict]:
    runs = d["runs"]
    out = []
    for name, r in runs.items():
        base_name = "app-inprocess" if name.startswith("app-") else "inprocess"
        if name == base_name or base_name not in runs:
            continue
        base = runs[base_name]["tokens_per_s"]
        out.append(row(f"aggregate tokens/s, {name} vs {base_name} ({d.get('clients')} clients x {d.get('tokens')} "
                       "tokens)", base, r["tokens_per_s"], r["tokens_per_s"] / base if base else None))
    return out


def rows_summary(d: dict) -> list[dict]:
    """Scripts that write a ready-made "summary" list of rows (bench_app, and any new script)."""
    return [row(r["measure"], r.get("baseline"), r.get("ours"), r.get("ratio"), r.get("goal"), r.get("pass"))
            for r in d["summary"]]


ADAPTERS: dict[str, Callable[[dict], list[dict]]] = {
    "bench_engine": rows_engine, "bench_store": rows_store, "bench_safety": rows_safety,
    "bench_assessment": rows_assessment, "bench_export": rows_export, "bench_serving": rows_serving,
}


def collect_rows(run: dict) -> list[dict]:
    if run["status"] != "ok":
        return []
    try:
        data = json.loads((REPO / run["result"]).read_text(encoding="utf-8"))
        adapter = rows_summary if "summary" in data else ADAPTERS.get(run["name"])
        if adapter is None:
            return [row("(no summary rows: see the JSON)")]
        return adapter(data)
    except Exception as exc:  # a script changed its JSON: say so in the table instead of failing the run
        return [row(f"(could not read {run['result']}: {type(exc).__name__}: {exc})")]


# -- the machine ----------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass

    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    gpu = "none"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
        gpu = out or "none"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu, "cores": os.cpu_count(),
        "ram_gb": ram_gb, "gpu": gpu, "python": platform.python_version(), "torch": version("torch"),
        "transformers": version("transformers"), "gradio": version("gradio"), "platform": platform.platform(),
        "commit": commit, "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# -- output ---------------------------------------------------------------------------------------
def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def table(all_rows: list[dict]) -> list[list[str]]:
    return [[r["bench"], r["measure"], fmt(r["baseline"]), fmt(r["ours"]), fmt(r["ratio"]), r["goal"] or "",
             {True: "pass", False: "FAIL", None: ""}[r["pass"]]] for r in all_rows]


HEADER = ["script", "measure", "baseline", "ours", "ratio", "goal", "pass"]


def print_table(all_rows: list[dict]) -> None:
    cells = [HEADER] + table(all_rows)
    widths = [min(max(len(c[i]) for c in cells), 70) for i in range(len(HEADER))]
    for c in cells:
        print("  ".join(c[i][:70].ljust(widths[i]) for i in range(len(HEADER))))


def md_table(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def reliability_section() -> str:
    """The latest load / bad-input test figures, when the tests left them in test-artifacts/."""
    parts = []
    load = ARTIFACTS / "load.json"
    if load.exists():
        d = json.loads(load.read_text(encoding="utf-8"))
        body = [[k, str(v["n"]), fmt(v["p50_s"]), fmt(v["p99_s"]), fmt(v["max_s"])] for k, v in d["endpoints"].items()]
        parts.append(f"Load test (`tests/test_load.py`, {d['sessions']} concurrent gradio_client sessions x "
                     f"{d['turns_per_session']} turns, replies of {d['reply_tokens']} tokens from the tiny test model, "
                     f"{d['requests']} requests in {d['wall_s']} s, {len(d['errors'])} errors; latency as the client "
                     f"sees it, queueing included; file dated "
                     f"{dt.datetime.fromtimestamp(load.stat().st_mtime, dt.timezone.utc):%Y-%m-%d %H:%M UTC}):\n\n"
                     + md_table(["endpoint", "n", "p50 s", "p99 s", "max s"], body))
    fuzz = ARTIFACTS / "fuzz.json"
    if fuzz.exists():
        d = json.loads(fuzz.read_text(encoding="utf-8"))
        known = sorted({f["known_bug"] for f in d["findings"] if f.get("known_bug")})
        parts.append(f"Bad-input test (`tests/test_fuzz_api.py`): {d['inputs_tried_total']} inputs tried, "
                     f"{sum(d['accepted'].values())} accepted, {len(d['findings'])} findings"
                     + (f" (known bugs awaiting a fix: {', '.join(known)})" if known else "") + ".")
    return "\n\n".join(parts)


def gpu_section() -> str:
    path = RESULTS / "gpu_check.json"
    if not path.exists():
        return ("Not run yet: `bench/gpu_check.py` needs one CUDA GPU (an H100 finishes it in under 8 minutes). "
                "Run `python bench/gpu_check.py` there and `python -m bench.run_all --only none` to refresh this page.")
    d = json.loads(path.read_text(encoding="utf-8"))
    body = [[r["measure"], fmt(r.get("nf4")), fmt(r.get("bf16")), r.get("unit", "")] for r in d.get("table", [])]
    return (f"GPU: {d.get('gpu')}, torch {d.get('torch')}, {d.get('date')}; Qwen2.5-7B-Instruct shape, random "
            f"weights.\n\n" + md_table(["measure", "4-bit NF4", "bf16", "unit"], body))


def write_doc(path: Path, info: dict, runs: list[dict], all_rows: list[dict], started_load: list[float]) -> None:
    m = info
    status = [[r["name"], r["status"], fmt(r["seconds"]), " ".join(r["args"]) or "(defaults)", r.get("detail", "")]
              for r in runs]
    text = f"""# Benchmarks

Generated by `make bench` (`python -m bench.run_all`) on {m['date']}; do not edit by hand. Every ratio is
against a baseline measured in the same run of the same script, on the same machine. The dev machines
are shared: the load average is recorded below, and timings of a few milliseconds move with it.

## Machine

| | |
|---|---|
| CPU | {m['cpu']} |
| cores | {m['cores']} |
| RAM | {m['ram_gb']} GB |
| GPU | {m['gpu']} |
| torch / transformers / gradio | {m['torch']} / {m['transformers']} / {m['gradio']} |
| Python / OS | {m['python']} / {m['platform']} |
| commit | {m['commit']} |
| load average (1, 5, 15 min) at start / end | {', '.join(map(str, started_load))} / {', '.join(map(str, m['load_average']))} |

## Results

{md_table(HEADER, table(all_rows)) if all_rows else "No results."}

## Scripts

{md_table(["script", "status", "seconds", "arguments", "detail"], status)}

Logs: `bench/results/logs/`; raw results: `bench/results/*.json` (not committed).

## Reliability tests

{reliability_section() or "Run `python -m pytest tests/test_load.py tests/test_fuzz_api.py -s` to fill this section."}

## GPU check (Qwen2.5-7B shape)

{gpu_section()}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + kept_sections(path), encoding="utf-8")


_SECTION = re.compile(r"<!-- (\w+):start.*?-->.*?<!-- \1:end -->", re.S)


def kept_sections(path: Path) -> str:
    """Sections that a bench script writes itself between `<!-- NAME:start -->` and `<!-- NAME:end -->`
    markers (the safety and privacy figures): kept as they are when the page is rebuilt."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return "".join(f"\n{m.group(0)}\n" for m in _SECTION.finditer(old))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run every benchmark and write docs/benchmarks.md.")
    parser.add_argument("--only", nargs="*", default=None, help="run only these scripts (e.g. bench_app); the others "
                        "keep their last results, marked as earlier; 'none' runs nothing and rebuilds the page")
    parser.add_argument("--skip", nargs="*", default=[], help="scripts not to run")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder for the model benchmarks (default: models/demo when built)")
    parser.add_argument("--full", action="store_true", help="each script's own defaults instead of the make-bench sizes")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every per-script time limit")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"page to write (default {DOC.relative_to(REPO)})")
    parser.add_argument("--no-doc", action="store_true", help="do not write the page")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    model = args.model or (DEMO_DIR if (DEMO_DIR / "config.json").exists() else None)
    benches = [b for b in discover() if b.name not in args.skip]
    reuse = args.only == ["none"]
    if args.only is not None:
        unknown = set(args.only) - {b.name for b in benches} - {"none"}
        if unknown:
            print(f"error: unknown scripts {sorted(unknown)}; known: {[b.name for b in benches]}", file=sys.stderr)
            return 2
        benches = [b for b in benches if b.name in args.only]
    started_load = [round(x, 2) for x in os.getloadavg()]
    fresh = {} if reuse else {b.name: run_one(b, model, args.full, args.timeout_scale) for b in benches}
    runs = [fresh.get(b.name) or earlier(b) for b in discover()]
    runs = [r for r in runs if r is not None]
    all_rows = [{"bench": r["name"].removeprefix("bench_"), **x} for r in runs for x in collect_rows(r)]
    info = machine()
    print()
    print_table(all_rows)
    summary = {"machine": info, "load_average_start": started_load, "runs": runs, "rows": all_rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not args.no_doc:
        write_doc(args.doc, info, runs, all_rows, started_load)
        print(f"\nwrote {args.doc}")
    failed = [r["name"] for r in runs if r["status"] in ("failed", "timeout", "no result")]
    if failed:
        print(f"scripts that did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
