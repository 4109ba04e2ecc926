"""Engine benchmarks, each a ratio against a baseline measured in the same run.

    python bench/bench_engine.py [--model demo] [--tokens 128] [--repeats 5]

1. Streaming through `Engine.start` vs a bare `model.generate` of the same prompt and the same number
   of new tokens (greedy, min_new_tokens = max_new_tokens so both produce exactly N tokens).
   Goal: ratio <= 1.05.
2. Prompt building (context budget + rendering + token counting) for one new turn at 50 vs 500
   turns of history, with the model's real context budget, plain and with a pinned risk note and a
   session summary in place of the dropped turns. Goal: per-turn cost ratio <= 2 (ideally ~1: the
   budget walks back from the newest turn and stops, earlier turns are never re-tokenised).

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, a local folder or a hub id")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per reply")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median reported)")
    args = parser.parse_args(argv)

    import torch

    from mvp.model.factory import EngineSettings, build_engine

    torch.set_num_threads(1)  # steadier timings on a 2-core machine
    engine = build_engine(EngineSettings(model=args.model, quantization="none", threads=1))
    stream = bench_stream(engine, args.tokens, args.repeats)
    prompt = bench_prompt(engine, max(args.repeats, 20))
    noted = bench_prompt(engine, max(args.repeats, 20), pinned=PINNED, summary=SUMMARY)
    result = {"model": args.model, "device": engine.loaded.device, "stream": stream, "prompt_building": prompt,
              "prompt_building_pinned_summary": noted}
    print(f"{'measure':<44}{'baseline':>12}{'ours':>12}{'ratio':>8}{'goal':>7}")
    print(f"{'stream vs bare generate (' + str(args.tokens) + ' tokens), s':<44}"
          f"{stream['bare_generate_s']:>12.4f}{stream['engine_stream_s']:>12.4f}{stream['ratio']:>8.3f}{'<=1.05':>7}")
    print(f"{'prompt building per turn, 50 vs 500 turns, ms':<44}"
          f"{prompt['turns_50']['per_turn_s'] * 1e3:>12.3f}{prompt['turns_500']['per_turn_s'] * 1e3:>12.3f}"
          f"{prompt['ratio']:>8.3f}{'<=2':>7}")
    print(f"{'  same, with pinned note + summary, ms':<44}"
          f"{noted['turns_50']['per_turn_s'] * 1e3:>12.3f}{noted['turns_500']['per_turn_s'] * 1e3:>12.3f}"
          f"{noted['ratio']:>8.3f}{'<=2':>7}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
