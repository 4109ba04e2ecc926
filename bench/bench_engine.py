"""Engine benchmarks, each a ratio against a baseline measured in the same run.

    python bench/bench_engine.py [--model demo] [--tokens 128] [--repeats 5] [--doc docs/benchmarks.md]

1. Streaming through `Engine.start` vs a bare `model.generate` of the same prompt and the same number
   of new tokens (greedy, min_new_tokens = max_new_tokens so both produce exactly N tokens).
   Goal: ratio <= 1.05.
2. Prompt building (context budget + rendering + token counting) for one new turn at 50 vs 500
   turns of history, with the model's real context budget, plain and with a pinned risk note and a
   session summary in place of the dropped turns. Goal: per-turn cost ratio <= 2 (ideally ~1: the
   budget walks back from the newest turn and stops, earlier turns are never re-tokenised).
3. The same with session memory as the app runs it (issue 17): the extractive 会谈摘要 of the dropped
   turns + the risk line in place, the summary covering the turns before the window
   (`ContextBudget.fit(covered=...)`), and the summary updated over the newly dropped turns only when
   the window moves (its cost is part of the per-turn figure). `--doc` writes these figures into the
   `memory` section of docs/benchmarks.md.

Prints a table and writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"


def conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "你是一名心理咨询师。"}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"第{i}轮：我最近工作压力很大，晚上总是睡不着，白天也没有精神。"})
        messages.append({"role": "assistant", "content": "听起来你这段时间很辛苦。能具体说说压力主要来自哪里吗？"})
    messages.append({"role": "user", "content": "今天又失眠了，我该怎么办？"})
    return messages


def bench_stream(engine, tokens: int, repeats: int) -> dict:
    import torch

    from mvp.model.engine import GenerationParams

    messages = conversation(3)
    model, tok = engine.loaded.model, engine.tokenizer
    prompt = engine.format.render(messages)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)

    def bare():
        with torch.inference_mode():
            model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                           repetition_penalty=1.1, pad_token_id=tok.pad_token_id)

    params = GenerationParams(max_new_tokens=tokens, temperature=0)
    # Same number of tokens for the engine: suppress end-of-turn through min_new_tokens as well.
    engine_eos = engine.eos_ids

    def streamed():
        engine.eos_ids = []  # both runs generate exactly `tokens` tokens
        try:
            gen = engine.start(messages, params)
            for _ in gen:
                pass
            assert gen.result.new_tokens == tokens, gen.result.new_tokens
        finally:
            engine.eos_ids = engine_eos

    bare(), streamed()  # warm up
    t_bare, t_engine = [], []
    for _ in range(repeats):  # interleaved so that machine noise hits both alike
        start = time.perf_counter(); bare(); t_bare.append(time.perf_counter() - start)
        start = time.perf_counter(); streamed(); t_engine.append(time.perf_counter() - start)
    b, e = statistics.median(t_bare), statistics.median(t_engine)
    return {"tokens": tokens, "bare_generate_s": b, "engine_stream_s": e, "ratio": e / b, "goal": 1.05}


PINNED = ("风险提示：来访者在第 3 轮提到“有时候觉得活着没意思”，请在回应中持续关注安全。",)
SUMMARY = "来访者因工作压力长期失眠，白天精神差；已约定先记录一周睡眠，再讨论放松练习。"


def bench_prompt(engine, repeats: int, pinned=(), summary=None) -> dict:
    from mvp.model.dialogue import ContextBudget

    out = {}
    for turns in (50, 500):
        budget = ContextBudget(engine.format, engine.count_tokens, engine.budget.context_tokens)
        messages = conversation(turns)
        budget.fit(messages, 256, pinned=pinned, summary=summary)  # a running session: earlier turns are counted
        times = []
        for i in range(repeats):
            messages = messages + [{"role": "assistant", "content": f"回复{i}：嗯，我在听。"},
                                   {"role": "user", "content": f"新消息{i}：我还是睡不着。"}]
            start = time.perf_counter()
            fit = budget.fit(messages, 256, pinned=pinned, summary=summary)
            times.append(time.perf_counter() - start)
        out[turns] = {"per_turn_s": statistics.median(times), "dropped_turns": fit.dropped_turns,
                      "first_visible": fit.first_visible, "summary_used": fit.summary_used,
                      "prompt_tokens": fit.prompt_tokens}
    return {"turns_50": out[50], "turns_500": out[500],
            "ratio": out[500]["per_turn_s"] / out[50]["per_turn_s"], "goal": 2.0}


RISK_LINE = "风险（安全标记，始终保留）：第 3 轮表达过自杀风险（「有时候觉得活着没意思」）"
LOOKAHEAD_TURNS = 3  # as mvp/app/service/memory.py: the summary moves a few turns past the cut


def bench_memory(engine, repeats: int) -> dict:
    """Per-turn prompt building with the session summary in place, at 50 vs 500 turns."""
    from mvp.counsel import memory
    from mvp.model.dialogue import ContextBudget

    out = {}
    for turns in (50, 500):
        budget = ContextBudget(engine.format, engine.count_tokens, engine.budget.context_tokens)
        session = {"state": memory.empty_state(), "covered": 0, "updates": 0, "fit": None}

        def step(messages):
            history = messages[1:]
            for _ in range(3):
                text = memory.for_model(memory.render(session["state"]), RISK_LINE) if session["covered"] else None
                fit = budget.fit(messages, 256, pinned=PINNED, summary=text, covered=session["covered"])
                if fit.first_visible <= session["covered"]:
                    break
                target = min(len(history) - 1, fit.first_visible + 2 * LOOKAHEAD_TURNS)
                while target > fit.first_visible and history[target]["role"] != "user":
                    target -= 1
                first_turn = sum(m["role"] == "user" for m in history[:session["covered"]]) + 1
                session["state"] = memory.update(session["state"], history[session["covered"]:target], first_turn)
                session["covered"], session["updates"] = target, session["updates"] + 1
            session["fit"] = fit

        messages = conversation(turns)
        step(messages)  # a running session: earlier turns are counted and summarised once
        times, updates = [], session["updates"]
        for i in range(repeats):
            messages = messages + [{"role": "assistant", "content": f"回复{i}：嗯，我在听。"},
                                   {"role": "user", "content": f"新消息{i}：我还是睡不着，家里的事也让我烦。"}]
            start = time.perf_counter()
            step(messages)
            times.append(time.perf_counter() - start)
        fit = session["fit"]
        out[turns] = {"per_turn_s": statistics.median(times), "mean_per_turn_s": statistics.fmean(times),
                      "summary_updates_in_timed_turns": session["updates"] - updates, "timed_turns": repeats,
                      "dropped_turns": fit.dropped_turns, "summary_used": fit.summary_used,
                      "summary_chars": len(memory.render(session["state"])), "prompt_tokens": fit.prompt_tokens}
    return {"turns_50": out[50], "turns_500": out[500],
            "ratio": out[500]["per_turn_s"] / out[50]["per_turn_s"],
            "mean_ratio": out[500]["mean_per_turn_s"] / out[50]["mean_per_turn_s"], "goal": 2.0}


DOC_START, DOC_END = "<!-- memory:start (python bench/bench_engine.py --doc docs/benchmarks.md) -->", "<!-- memory:end -->"


def doc_section(result: dict) -> str:
    m, p = result["prompt_building_memory"], result["prompt_building"]
    a, b = m["turns_50"], m["turns_500"]
    return "\n".join([
        DOC_START, "## Session memory: prompt building with the summary in place (issue 17)", "",
        f"Model `{result['model']}` ({result['device']}), context {result['context_tokens']} tokens, 256 reserved for the "
        "reply. One new turn appended to a running session, timed over "
        f"{a['timed_turns']} turns; the per-turn figure includes updating the extractive 会谈摘要 over the newly "
        "dropped turns whenever the window moves.", "",
        "| history | per turn, median ms | per turn, mean ms | summary updates | turns dropped | summary chars | prompt tokens |",
        "|---|---|---|---|---|---|---|",
        *(f"| {n} turns | {r['per_turn_s'] * 1e3:.3f} | {r['mean_per_turn_s'] * 1e3:.3f} | "
          f"{r['summary_updates_in_timed_turns']} of {r['timed_turns']} | {r['dropped_turns']} | {r['summary_chars']} | "
          f"{r['prompt_tokens']} |" for n, r in ((50, a), (500, b))),
        "",
        f"Ratio 500 / 50 turns: **{m['ratio']:.2f}** median, {m['mean_ratio']:.2f} mean (goal <= {m['goal']}: the cost "
        "does not grow with the length of the session). Without the summary, same run: "
        f"{p['turns_50']['per_turn_s'] * 1e3:.3f} vs {p['turns_500']['per_turn_s'] * 1e3:.3f} ms (ratio {p['ratio']:.2f}).",
        DOC_END])


def write_doc(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if DOC_START in text and DOC_END in text:
        head, rest = text.split(DOC_START, 1)
        text = head + section + rest.split(DOC_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, a local folder or a hub id")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per reply")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--doc", type=Path, default=None, help="also rewrite the session-memory section of this Markdown file")
    args = parser.parse_args(argv)

    import torch

    from mvp.model.factory import EngineSettings, build_engine

    torch.set_num_threads(1)  # steadier timings on a 2-core machine
    engine = build_engine(EngineSettings(model=args.model, quantization="none", threads=1))
    stream = bench_stream(engine, args.tokens, args.repeats)
    prompt = bench_prompt(engine, max(args.repeats, 20))
    noted = bench_prompt(engine, max(args.repeats, 20), pinned=PINNED, summary=SUMMARY)
    with_memory = bench_memory(engine, max(args.repeats, 20))
    result = {"model": args.model, "device": engine.loaded.device, "context_tokens": engine.budget.context_tokens,
              "stream": stream, "prompt_building": prompt, "prompt_building_pinned_summary": noted,
              "prompt_building_memory": with_memory}
    print(f"{'measure':<44}{'baseline':>12}{'ours':>12}{'ratio':>8}{'goal':>7}")
    print(f"{'stream vs bare generate (' + str(args.tokens) + ' tokens), s':<44}"
          f"{stream['bare_generate_s']:>12.4f}{stream['engine_stream_s']:>12.4f}{stream['ratio']:>8.3f}{'<=1.05':>7}")
    print(f"{'prompt building per turn, 50 vs 500 turns, ms':<44}"
          f"{prompt['turns_50']['per_turn_s'] * 1e3:>12.3f}{prompt['turns_500']['per_turn_s'] * 1e3:>12.3f}"
          f"{prompt['ratio']:>8.3f}{'<=2':>7}")
    print(f"{'  same, with pinned note + summary, ms':<44}"
          f"{noted['turns_50']['per_turn_s'] * 1e3:>12.3f}{noted['turns_500']['per_turn_s'] * 1e3:>12.3f}"
          f"{noted['ratio']:>8.3f}{'<=2':>7}")
    print(f"{'  same, session memory as the app runs it, ms':<44}"
          f"{with_memory['turns_50']['per_turn_s'] * 1e3:>12.3f}{with_memory['turns_500']['per_turn_s'] * 1e3:>12.3f}"
          f"{with_memory['ratio']:>8.3f}{'<=2':>7}")
    if args.doc:
        write_doc(args.doc, doc_section(result))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
