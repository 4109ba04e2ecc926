"""GPU check: what a Qwen2.5-7B-Instruct-sized model costs on one CUDA GPU, 4-bit NF4 vs bf16.

    python bench/gpu_check.py                     # one CUDA GPU (an H100 finishes in under 8 minutes)
    python bench/gpu_check.py --workdir /scratch  # where the 15 GB random checkpoint is written
    python bench/gpu_check.py --dry-run           # the same code path on the CPU with a tiny shape (tests)

No download is possible on the GPU machines, so the model is built from Qwen2.5-7B-Instruct's config
(values below) with random weights, initialised directly on the GPU in bf16, saved once as safetensors
to a local folder, and loaded back the way the app loads a model: bf16, and NF4 through the app's own
`mvp.model.loader.quantization_config("4bit", "cuda")` (double quantization, bf16 compute). Measured:

1. load time and GPU memory (resident and peak) for NF4 vs bf16;
2. time to first token (prefill) and decode tokens/s for one stream and for 8 concurrent streams
   (one batch), each at a 2k-token context, greedy, eager attention kernels as `model.generate` uses;
3. one QLoRA DPO training step on the NF4 model (one preference pair, 1k tokens each: 512 prompt +
   512 completion; LoRA r=16 on all linear layers, gradient checkpointing, paged 8-bit AdamW, sigmoid
   loss with beta 0.1, reference = the adapter disabled, as train/dpo.py with TRL does): time and peak.

Random weights give the same compute and memory as trained ones (not the same text). Field reference:
a 7B model in 4-bit needs about 6 GB for inference and for QLoRA training. A global time budget
(--budget-seconds) skips what would not fit. Prints a table; writes bench/results/gpu_check.json
(--dry-run: gpu_check_dry_run.json), which `python -m bench.run_all` puts into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

RESULTS = REPO / "bench" / "results"
GIB = 2**30

# Qwen/Qwen2.5-7B-Instruct config.json (the values that decide compute and memory).
QWEN25_7B_INSTRUCT = {
    "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768, "rope_theta": 1e6,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu", "use_sliding_window": False,
    "bos_token_id": 151643, "eos_token_id": 151645,
}
# --dry-run: the same architecture, tiny (built and run on the CPU in seconds).
TINY = {**QWEN25_7B_INSTRUCT, "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "bos_token_id": 0, "eos_token_id": 1}


@dataclass(frozen=True)
class Workload:
    context: int = 2048  # prompt tokens per stream
    streams: int = 8  # concurrent streams (one batch)
    new_tokens_one: int = 128  # decoded tokens, one stream
    new_tokens_many: int = 64  # decoded tokens per stream, 8 streams
    dpo_prompt: int = 512
    dpo_completion: int = 512  # prompt + completion = 1k tokens per sequence
    lora_r: int = 16
    beta: float = 0.1
    learning_rate: float = 5e-6


FULL = Workload()
DRY_RUN = Workload(context=48, streams=8, new_tokens_one=8, new_tokens_many=4, dpo_prompt=16, dpo_completion=16,
                   lora_r=4)
# Rough seconds each phase needs on an H100 (to skip what the budget cannot fit, not to predict).
ESTIMATE_S = {"build": 60, "load_bf16": 40, "infer": 40, "load_nf4": 90, "dpo": 40}


def make_config(shape: dict):
    from transformers import Qwen2Config

    values = dict(shape)
    theta = values.pop("rope_theta")
    return Qwen2Config(**values, rope_parameters={"rope_type": "default", "rope_theta": theta})


def count_parameters(shape: dict) -> int:
    """Parameters of a Qwen2 model of this shape (q/k/v carry biases; untied lm_head unless tied)."""
    h, i, layers, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    attention = h * h + h + 2 * (h * kv + kv) + h * h  # q (+bias), k and v (+bias), o
    per_layer = attention + 3 * h * i + 2 * h  # gate, up, down; two RMSNorms
    embeddings = v * h * (1 if shape["tie_word_embeddings"] else 2)
    return layers * per_layer + embeddings + h


class Device:
    """Synchronisation and memory figures for CUDA (allocator peak) or the CPU (process RSS)."""

    def __init__(self, name: str):
        import torch

        self.name, self.torch, self.cuda = name, torch, name == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / GIB
        return self.resident_gib()

    def resident_gib(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated() / GIB
        import psutil

        return psutil.Process().memory_info().rss / GIB

    def describe(self) -> str:
        if self.cuda:
            props = self.torch.cuda.get_device_properties(0)
            return f"{props.name}, {props.total_memory / GIB:.0f} GiB"
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def build_and_save(shape: dict, folder: Path, dev: Device, dtype) -> dict:
    """Random weights of the given shape, initialised on the device in `dtype`, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    started = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev.name):
            model = AutoModelForCausalLM.from_config(make_config(shape))
    finally:
        torch.set_default_dtype(previous)
    dev.sync()
    built = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    model.save_pretrained(folder)
    saved = time.perf_counter() - started
    del model
    dev.reset_peak()
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"build_s": built, "save_s": saved, "parameters": params, "checkpoint_gib": size / GIB}


def load(folder: Path, mode: str, dev: Device, dense_dtype):
    """(model, figures): from_pretrained as the app does, bf16 (dense) or 4-bit NF4."""
    from transformers import AutoModelForCausalLM

    from mvp.model.loader import quantization_config

    dev.reset_peak()
    before = dev.resident_gib()
    started = time.perf_counter()
    if mode == "nf4":
        qc = quantization_config("4bit", dev.name)
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=qc, dtype=qc.bnb_4bit_compute_dtype,
                                                     device_map=dev.name)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dense_dtype, device_map=dev.name)
    dev.sync()
    seconds = time.perf_counter() - started
    model.eval()
    return model, {"load_s": seconds, "resident_gib": dev.resident_gib() - (0 if dev.cuda else before),
                   "peak_gib": dev.peak_gib()}


def decode(model, dev: Device, vocab: int, batch: int, context: int, new_tokens: int) -> dict:
    """Prefill `batch` random prompts of `context` tokens, then greedy-decode `new_tokens` tokens each."""
    import torch

    gen = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, vocab, (batch, context), generator=gen).to(dev.name)

    def step(input_ids, cache):  # transformers 5: `cache` (was past_key_values)
        out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1:].argmax(-1), out.cache

    with torch.inference_mode():
        token, past = step(ids[:, :16], None)  # warm-up: kernels, allocator
        step(token, past)
        del past
        dev.reset_peak()
        dev.sync()
        started = time.perf_counter()
        token, past = step(ids, None)
        dev.sync()
        ttft = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(new_tokens - 1):
            token, past = step(token, past)
        dev.sync()
        seconds = time.perf_counter() - started
    del past
    decoded = new_tokens - 1
    return {"streams": batch, "context": context, "new_tokens": new_tokens, "ttft_s": ttft,
            "tokens_per_s_per_stream": decoded / seconds, "tokens_per_s_total": batch * decoded / seconds,
            "peak_gib": dev.peak_gib()}


def dpo_step(model, dev: Device, vocab: int, w: Workload, steps: int = 2) -> dict:
    """QLoRA DPO on one preference pair (chosen and rejected, one batch of 2), `steps` optimizer steps."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=w.lora_r, lora_alpha=2 * w.lora_r, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if dev.cuda:
        import bitsandbytes as bnb

        optimizer = bnb.optim.PagedAdamW8bit(trainable, lr=w.learning_rate)
    else:  # paged optimizers need CUDA
        optimizer = torch.optim.AdamW(trainable, lr=w.learning_rate)
    length = w.dpo_prompt + w.dpo_completion
    gen = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, vocab, (1, w.dpo_prompt), generator=gen)
    pair = torch.cat([prompt.repeat(2, 1), torch.randint(0, vocab, (2, w.dpo_completion), generator=gen)], 1)
    ids = pair.to(dev.name)
    completion = torch.zeros(2, length - 1, dtype=torch.bool, device=dev.name)
    completion[:, w.dpo_prompt - 1:] = True  # targets that are completion tokens

    def logps(m) -> torch.Tensor:
        logits = m(input_ids=ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return -(nll * completion).sum(-1)

    model.train()
    times, peaks, losses = [], [], []
    for _ in range(steps):
        dev.reset_peak()
        dev.sync()
        started = time.perf_counter()
        with torch.no_grad(), model.disable_adapter():
            ref = logps(model)
        policy = logps(model)
        margin = w.beta * ((policy[0] - ref[0]) - (policy[1] - ref[1]))
        loss = -F.logsigmoid(margin)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dev.sync()
        times.append(time.perf_counter() - started)
        peaks.append(dev.peak_gib())
        losses.append(float(loss.detach()))
    return {"tokens_per_sequence": length, "steps": steps, "step_s": times, "peak_gib": max(peaks),
            "trainable_parameters": sum(p.numel() for p in trainable), "loss": losses}


def run(args, w: Workload, shape: dict, dev: Device) -> dict:
    import torch

    dense_dtype = torch.bfloat16 if dev.cuda else torch.float32
    dense = "bf16" if dev.cuda else "fp32"
    deadline = time.monotonic() + args.budget_seconds
    phases: dict = {}
    skipped: list[str] = []

    def fits(name: str) -> bool:
        ok = args.dry_run or time.monotonic() + ESTIMATE_S[name] <= deadline
        if not ok:
            skipped.append(name)
            print(f"[gpu_check] skipped {name}: the time budget would run out", flush=True)
        return ok

    def say(text: str) -> None:
        print(f"[gpu_check] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.workdir) as tmp:
        folder = Path(tmp) / "qwen2.5-7b-shape"
        say(f"building {count_parameters(shape) / 1e9:.2f} B parameters in {dense_dtype} on {dev.name} ...")
        phases["build"] = build_and_save(shape, folder, dev, dense_dtype)
        say(f"built in {phases['build']['build_s']:.1f} s, saved {phases['build']['checkpoint_gib']:.1f} GiB in "
            f"{phases['build']['save_s']:.1f} s")
        for mode in ("bf16", "nf4"):
            if not fits(f"load_{mode}"):
                continue
            model, figures = load(folder, mode, dev, dense_dtype)
            phases[mode] = {"load": figures}
            label = dense if mode == "bf16" else mode
            say(f"{label}: loaded in {figures['load_s']:.1f} s, {figures['resident_gib']:.2f} GiB resident")
            if fits("infer"):
                phases[mode]["one"] = decode(model, dev, shape["vocab_size"], 1, w.context, w.new_tokens_one)
                phases[mode]["many"] = decode(model, dev, shape["vocab_size"], w.streams, w.context, w.new_tokens_many)
                say(f"{label}: 1 stream {phases[mode]['one']['tokens_per_s_per_stream']:.1f} tok/s, "
                    f"{w.streams} streams {phases[mode]['many']['tokens_per_s_total']:.1f} tok/s")
            if mode == "nf4" and fits("dpo"):
                if not dev.cuda:
                    # bitsandbytes on the CPU repacks 4-bit weights for inference on first use, and that
                    # layout has no backward: train a fresh copy (on CUDA the same model trains as loaded).
                    del model
                    model, _ = load(folder, mode, dev, dense_dtype)
                phases["dpo"] = dpo_step(model, dev, shape["vocab_size"], w)
                say(f"QLoRA DPO step {phases['dpo']['step_s'][-1]:.2f} s, peak {phases['dpo']['peak_gib']:.2f} GiB")
            del model  # the only reference: the next load starts from an empty GPU
            dev.reset_peak()
    return {"phases": phases, "skipped": skipped}


def table(phases: dict, w: Workload, dense: str) -> list[dict]:
    def get(mode, *keys):
        value = phases.get(mode)
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return value

    rows = [
        ("load time from local safetensors", "s", ("load", "load_s"), None),
        ("memory after load", "GiB", ("load", "resident_gib"), "~6 GB for 4-bit inference"),
        ("peak memory while loading", "GiB", ("load", "peak_gib"), None),
        (f"time to first token, 1 stream x {w.context} tokens", "s", ("one", "ttft_s"), None),
        ("decode, 1 stream", "tokens/s", ("one", "tokens_per_s_per_stream"), None),
        (f"time to first token, {w.streams} streams x {w.context} tokens", "s", ("many", "ttft_s"), None),
        (f"decode, {w.streams} streams, all together", "tokens/s", ("many", "tokens_per_s_total"), None),
        (f"decode, {w.streams} streams, per stream", "tokens/s", ("many", "tokens_per_s_per_stream"), None),
        (f"peak memory, {w.streams} streams x {w.context} tokens", "GiB", ("many", "peak_gib"), None),
    ]
    out = [{"measure": m, "unit": u, "nf4": get("nf4", *k), "bf16": get("bf16", *k), "reference": ref, "dense": dense}
           for m, u, k, ref in rows]
    dpo = phases.get("dpo")
    length = w.dpo_prompt + w.dpo_completion
    out.append({"measure": f"QLoRA DPO step, 1 pair x {length} tokens (second step)", "unit": "s",
                "nf4": dpo["step_s"][-1] if dpo else None, "bf16": None, "reference": None, "dense": dense})
    out.append({"measure": f"QLoRA DPO step peak memory, 1 pair x {length} tokens", "unit": "GiB",
                "nf4": dpo["peak_gib"] if dpo else None, "bf16": None, "reference": "~6 GB for QLoRA training",
                "dense": dense})
    return out


def print_table(rows: list[dict], dense: str) -> None:
    print(f"\n{'measure':<52}{'4-bit NF4':>12}{dense:>12}  unit      reference")
    for r in rows:
        cells = [("-" if r[k] is None else f"{r[k]:.3f}") for k in ("nf4", "bf16")]
        print(f"{r['measure']:<52}{cells[0]:>12}{cells[1]:>12}  {r['unit']:<9} {r['reference'] or ''}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Qwen2.5-7B-Instruct-shaped model on one CUDA GPU: NF4 vs bf16 load, memory, prefill, decode "
                    "(1 and 8 streams at 2k context) and one QLoRA DPO step.")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code path on the CPU with a tiny shape (checks the script without a GPU)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary checkpoint (bf16: about 15 GB); "
                        "default: the system temp folder")
    parser.add_argument("--budget-seconds", type=float, default=450.0,
                        help="skip phases that would end after this many seconds (default 450: under 8 minutes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/gpu_check.json, or gpu_check_dry_run.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_check needs a CUDA GPU, and torch {torch.__version__} sees none "
              f"(torch.cuda.is_available() is False). Run it on a GPU machine with the CUDA build of torch, "
              f"or use --dry-run to check the script on the CPU with a tiny model.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    dev = Device("cpu" if args.dry_run else "cuda")
    w, shape = (DRY_RUN, TINY) if args.dry_run else (FULL, QWEN25_7B_INSTRUCT)
    dense = "fp32" if args.dry_run else "bf16"
    if args.dry_run:
        torch.set_num_threads(1)
    result = run(args, w, shape, dev)
    rows = table(result["phases"], w, dense)
    import bitsandbytes
    import transformers

    report = {
        "gpu": dev.describe(), "dry_run": args.dry_run, "dense_dtype": dense,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
        "transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__,
        "shape": shape, "parameters": count_parameters(shape), "workload": asdict(w),
        "seconds_total": time.perf_counter() - started, "skipped": result["skipped"], "table": rows,
        "phases": result["phases"],
    }
    print_table(rows, dense)
    print(f"\n{report['gpu']}; {report['parameters'] / 1e9:.2f} B parameters; total {report['seconds_total']:.0f} s"
          + (f"; skipped: {', '.join(result['skipped'])}" if result["skipped"] else ""))
    out = args.out or RESULTS / ("gpu_check_dry_run.json" if args.dry_run else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
