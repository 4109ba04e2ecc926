"""The built-in offline demo model: a 1.3 M-parameter Qwen2 trained for a few minutes on data/.

    python -m train.demo                      # build models/demo/ unless it is already complete
    python -m train.demo --force --seed 1     # rebuild
    python -m train.demo --force --max-steps 1200 --budget-seconds 3600  # exactly 1200 steps
    python -m train.demo --quick --out /tmp/demo  # a reduced build in ~30 s (tests use its settings)

`make run` calls `ensure_demo_model()`. Everything comes from the bundled dialogues, offline:
a tokenizer trained with Qwen2's pipeline (`train.demo.tiny_lm`), a model of `SHAPES["demo"]`, and a short
SFT with TRL. The choices follow what STACK_NOTES measured in a 5-minute CPU budget: lr 6e-3, batch 8,
windows of at most 256 tokens made of whole turns, each opened by a system prompt, loss on all tokens.

Bounded time: the whole build, imports to saving, stays within `--budget-seconds` (default 285 s);
training stops on the wall clock, so the number of steps depends on the machine. It is recorded in
build_info.json, and `--max-steps N` (with a budget large enough) trains exactly N steps: the learning
rate is constant after warm-up, so the weights after N steps do not depend on when a wall-clock stop
would have come. Same seed + same number of steps -> the same weights.

The folder is written to a temporary sibling and renamed into place, so an interrupted build never
leaves a folder that `is_built` accepts. The model is for exercising the product offline: its replies
are generic and NOT clinically meaningful (the model card says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mvp.model.demo import BUILD_FORMAT, REQUIRED_FILES, is_built  # noqa: F401 - is_built re-exported
from mvp.paths import DEMO_MODEL_DIR
from train.demo import tiny_lm

DEFAULT_MODEL_DIR = DEMO_MODEL_DIR
# The whole build, imports to saving, fits in this many seconds (5 minutes is the promise); training
# gets what the tokenizer, data preparation and the two evaluations leave (~260 s on an idle 2-core box).
DEFAULT_BUDGET_S = 285.0
QUICK_BUDGET_S = 30.0
EVAL_THREADS = 1
HELDOUT_PER_MILLE = 50  # ~5% of dialogues, chosen by a hash of their id, are never trained on

GENERIC_SYSTEM_PROMPT = "你是一名温和、专业的心理咨询师，请耐心倾听来访者，用共情的语气回应。"
# Rotated over training windows so that the stage instructions the app sends look familiar.
STAGE_SYSTEM_PROMPTS = (
    GENERIC_SYSTEM_PROMPT,
    GENERIC_SYSTEM_PROMPT + "当前阶段：建立关系与初始访谈，了解来访原因，建立信任。",
    GENERIC_SYSTEM_PROMPT + "当前阶段：评估与问题澄清，询问困扰的表现、持续时间和影响。",
    GENERIC_SYSTEM_PROMPT + "当前阶段：干预，用认知行为疗法帮助来访者调整想法、练习应对方法。",
    GENERIC_SYSTEM_PROMPT + "当前阶段：巩固与结束，回顾收获，讨论今后的应对，温和地结束咨询。",
)

# Defaults stored in generation_config.json. Greedy and sampled decoding loop at this size without
# a repetition penalty (STACK_NOTES).
GENERATION_DEFAULTS = {
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "max_new_tokens": 128,
}


@dataclass(frozen=True)
class BuildSettings:
    """What a build trains on and how; `FULL` and `QUICK` below are the two used."""

    shape: str = "demo"  # a key of tiny_lm.SHAPES
    vocab_size: int = 4000
    max_length: int = 256  # tokens per training window
    batch_size: int = 8
    learning_rate: float = 6e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_train_dialogues: int | None = None  # None: every dialogue not held out
    max_eval_dialogues: int | None = None  # None: every held-out dialogue
    plain_loss: bool = True  # model(**inputs).loss, not TRL's fused LM head (slower on the CPU)
    logging_steps: int = 10


FULL = BuildSettings()
# Tests: a model of tiny_lm's "test" size learns much faster per step than the demo size (150 steps,
# ~5 s: held-out perplexity 0.15x untrained, where the demo size reached 0.47x in 80 steps).
QUICK = BuildSettings(
    shape="test", vocab_size=1000, max_length=128, learning_rate=1e-2, warmup_steps=5,
    max_train_dialogues=160, max_eval_dialogues=12,
)


class DemoBuildError(RuntimeError):
    """A build that cannot proceed (bad arguments, missing data); the message says how to fix it."""


# ---------------------------------------------------------------------------------------------
# Data


def is_heldout(dialogue_id: str) -> bool:
    """Deterministic ~5% eval split by a hash of the dialogue id (stable across Python runs)."""
    digest = hashlib.sha256(dialogue_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE


def heldout_dialogues() -> list[dict]:
    """The bundled dialogues held back from training (for evaluation)."""
    return [d for d in tiny_lm.iter_dialogues() if is_heldout(d["id"])]


def training_dialogues() -> list[dict]:
    """The bundled dialogues the demo model trains on (all but the held-out ones)."""
    return [d for d in tiny_lm.iter_dialogues() if not is_heldout(d["id"])]


class _ChatPieces:
    """Token ids of the ChatML pieces around a message, cached per role.

    A message is `<|im_start|>ROLE\\n` + content + `<|im_end|>` + `\\n` (tiny_lm.CHAT_TEMPLATE). Each
    piece is encoded on its own, as at inference, where the prompt ends with `<|im_start|>assistant\\n`
    and the reply is generated after it.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.end = tokenizer.convert_tokens_to_ids(tiny_lm.EOS_TOKEN)
        self.newline = self._encode("\n")
        self.headers: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def wrap(self, role: str, content_ids: list[int]) -> tuple[list[int], list[int]]:
        """(ids, mask) of one message; the mask is 1 on an assistant's content and <|im_end|>."""
        if role not in self.headers:
            self.headers[role] = self._encode(f"<|im_start|>{role}\n")
        header = self.headers[role]
        body = [*content_ids, self.end]
        scored = 1 if role == "assistant" else 0
        mask = [0] * len(header) + [scored] * len(body) + [0] * len(self.newline)
        return header + body + self.newline, mask


def encode_windows(
    tokenizer, dialogues: list[dict], max_length: int, system_prompts=(GENERIC_SYSTEM_PROMPT,)
) -> list[dict]:
    """Split dialogues into windows of whole turns of at most max_length tokens.

    Each window opens with a system prompt (rotating over `system_prompts` window by window), then as
    many whole messages as fit. A message too long for a window of its own is skipped (rare in data/).
    Returns [{"input_ids": [...], "assistant_mask": [0|1, ...], "dialogue_id": str}].
    """
    pieces = _ChatPieces(tokenizer)
    systems = [pieces.wrap("system", pieces._encode(p)) for p in system_prompts]
    windows: list[dict] = []
    for dialogue in dialogues:
        messages = dialogue["messages"]
        contents = tokenizer([m["content"] for m in messages], add_special_tokens=False)["input_ids"]
        ids: list[int] = []
        mask: list[int] = []
        count = 0  # messages in the current window
        for message, content_ids in zip(messages, contents):
            m_ids, m_mask = pieces.wrap(message["role"], content_ids)
            if count and len(ids) + len(m_ids) > max_length:
                windows.append({"input_ids": ids, "assistant_mask": mask, "dialogue_id": dialogue["id"]})
                count = 0
            if not count:
                s_ids, s_mask = systems[len(windows) % len(systems)]
                ids, mask = list(s_ids), list(s_mask)
            if len(ids) + len(m_ids) > max_length:
                continue
            ids += m_ids
            mask += m_mask
            count += 1
        if count:
            windows.append({"input_ids": ids, "assistant_mask": mask, "dialogue_id": dialogue["id"]})
    return windows


# ---------------------------------------------------------------------------------------------
# Evaluation


def eval_perplexity(model, tokenizer, dialogues: list[dict], max_length: int = FULL.max_length,
                    batch_size: int = 8) -> float:
    """Perplexity of the assistant tokens (content + <|im_end|>) of dialogues.

    The dialogues are cut into the same whole-turn windows as in training, with the generic system
    prompt; every token before an assistant token is context. Returns exp(mean negative log-likelihood).
    """
    import torch
    import torch.nn.functional as F

    windows = encode_windows(tokenizer, dialogues, max_length)
    if not windows:
        raise DemoBuildError("eval_perplexity: the dialogues gave no window to score")
    windows.sort(key=lambda w: len(w["input_ids"]))  # less padding per batch
    pad = tokenizer.convert_tokens_to_ids(tiny_lm.PAD_TOKEN)
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    threads = torch.get_num_threads()
    # One thread: as fast on an idle 2-core machine, many times faster on a busy one (ThreadTuner).
    torch.set_num_threads(EVAL_THREADS)
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                width = max(len(w["input_ids"]) for w in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                for row, w in enumerate(batch):
                    n = len(w["input_ids"])
                    ids[row, :n] = torch.tensor(w["input_ids"])
                    attention[row, :n] = 1
                    scored = torch.tensor(w["assistant_mask"], dtype=torch.bool)
                    labels[row, :n] = torch.where(scored, ids[row, :n], -100)
                logits = model(input_ids=ids, attention_mask=attention).logits.float()
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)),
                    labels[:, 1:].reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
                total_nll += nll.item()
                total_tokens += int((labels[:, 1:] != -100).sum())
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    if total_tokens == 0:
        raise DemoBuildError("eval_perplexity: the dialogues have no assistant tokens to score")
    return math.exp(total_nll / total_tokens)


# ---------------------------------------------------------------------------------------------
# Training


class ThreadTuner:
    """Chooses the faster torch thread count during training by timing a few steps of each now and then.

    On our 2-core machines shared with other jobs, a step with 2 threads took 8x longer than with 1
    (the OpenMP threads wait for each other whenever one is descheduled); on an idle machine 2 threads
    are faster. Every `every_s` seconds the other count runs `probe` steps, right after `probe` steps of
    the current one, and the faster (by median) is kept. On this stack the weights came out bitwise the
    same with 1 and 2 threads, so tuning does not break determinism.
    """

    def __init__(self, candidates: list[int], every_s: float = 45.0, probe: int = 3):
        self.candidates = list(dict.fromkeys(candidates))
        self.best = self.candidates[0]
        self.every_s, self.probe = every_s, probe
        self.phase: list[int] = []  # thread counts of the steps of the probe in progress
        self.times: list[tuple[int, float]] = []
        self.last_probe = None
        self.history: list[tuple[int, int]] = []  # (step, threads) at each change

    def threads_for_next_step(self, step: int, now: float) -> int:
        if len(self.candidates) < 2 or step == 0:  # the first step warms up: not timed
            return self.best
        if not self.phase and (self.last_probe is None or now - self.last_probe >= self.every_s):
            others = [c for c in self.candidates if c != self.best]
            self.phase = [self.best] * self.probe + [t for t in others for _ in range(self.probe)]
            self.times = []
            self.last_probe = now
        return self.phase[len(self.times)] if self.phase else self.best

    def record(self, threads: int, seconds: float, step: int) -> None:
        if not self.phase:
            return
        self.times.append((threads, seconds))
        if len(self.times) < len(self.phase):
            return
        medians = {
            t: sorted(s for tt, s in self.times if tt == t)[self.probe // 2]
            for t in dict.fromkeys(self.phase)
        }
        fastest = min(medians, key=medians.get)
        if fastest != self.best:
            self.best = fastest
            self.history.append((step, fastest))
        self.phase = []


def _make_trainer(model, tokenizer, dataset, settings: BuildSettings, *, seed: int, deadline: float,
                  max_steps: int | None, work_dir: Path):
    """An SFTTrainer that stops at `deadline` (time.monotonic()), shows a progress bar and tunes threads."""
    import warnings

    import torch
    from tqdm.auto import tqdm
    from transformers import ProgressCallback, Trainer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class BuildClock(TrainerCallback):
        """Wall-clock stop (checked after every step), a progress bar, and the thread tuner."""

        def __init__(self):
            self.stopped_by_clock = False
            self.bar = None
            self.loss = None
            self.tuner = ThreadTuner([torch.get_num_threads(), 1])
            self.step_start = 0.0
            self.threads = torch.get_num_threads()

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()
            if max_steps is None:
                total, unit = max(1, round(deadline - self.start)), "s"
            else:
                total, unit = max_steps, "step"
            self.bar = tqdm(total=total, unit=unit, desc="training", dynamic_ncols=True)

        def on_step_begin(self, args, state, control, **kwargs):
            self.step_start = time.monotonic()
            threads = self.tuner.threads_for_next_step(state.global_step, self.step_start)
            if threads != self.threads:
                torch.set_num_threads(threads)
                self.threads = threads

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            self.tuner.record(self.threads, now - self.step_start, state.global_step)
            if max_steps is None:
                self.bar.n = min(round(now - self.start), self.bar.total)
            else:
                self.bar.n = state.global_step
            postfix = {"step": state.global_step, "threads": self.threads}
            if self.loss is not None:
                postfix["loss"] = f"{self.loss:.3f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
            if now >= deadline:
                self.stopped_by_clock = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    class PlainLossSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is the model's own `model(**inputs).loss`.

        TRL 1.16 patches the model with a fused, tiled LM head that also computes entropy and top-1
        accuracy for its metrics, and no SFTConfig flag turns it off. On our 2-core CPUs a step took
        1.2-1.8x longer with it (wall clock, six paired runs; 2x the CPU time). The patched forward without `fused_lm_head=True` is the original one, so
        generation and saving are unaffected.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    with warnings.catch_warnings():
        # SFTConfig itself sets the deprecated `gradient_checkpointing`; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        config = SFTConfig(
            output_dir=str(work_dir),
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            # Constant after warm-up: the weights after N steps do not depend on when the clock stops
            # (and a cosine decay over 150 steps ended worse: perplexity 804 vs 655).
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=settings.warmup_steps,
            weight_decay=settings.weight_decay,
            max_steps=max_steps if max_steps is not None else 1_000_000,
            max_length=settings.max_length,
            packing=False,
            logging_steps=settings.logging_steps,
            logging_first_step=True,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
        )
    trainer_cls = PlainLossSFTTrainer if settings.plain_loss else SFTTrainer
    clock = BuildClock()
    trainer = trainer_cls(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock]
    )
    trainer.remove_callback(ProgressCallback)  # ours shows seconds of the budget, not steps of 1e6
    return trainer, clock


# ---------------------------------------------------------------------------------------------
# Building and installing the folder


def _versions() -> dict:
    import tokenizers
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "tokenizers": tokenizers.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def _model_card(info: dict) -> str:
    d, st, gen = info["data"], info["settings"], GENERATION_DEFAULTS
    quick = " --quick" if info["quick"] else ""
    return f"""# Built-in demo model (离线演示模型)

A {info["parameters"] / 1e6:.1f} M-parameter Qwen2-architecture language model, trained from scratch
for {info["steps"]} steps ({info["train_seconds"]:.0f} s on the CPU) on {d["train_dialogues"]} synthetic
Chinese counselling and diagnostic dialogues bundled in `data/`. It exists so that the app runs and
can be tested offline.

**It is NOT clinically meaningful.** Its replies are short, in a counselling register and end cleanly,
but they are generic and only loosely related to what the client said. Do not use it with real
clients, and do not judge counselling quality by it. 本模型仅用于离线演示，不具备任何临床意义。

- Built by `python -m train.demo` with seed {info["seed"]}; this command gives the same weights again:
  `python -m train.demo --force --seed {info["seed"]} --max-steps {info["steps"]} --budget-seconds 3600{quick}`
- Architecture: Qwen2, shape `{st["shape"]}` of `train/demo/tiny_lm.py`; byte-level BPE tokenizer of
  {info["vocab_size"]} tokens trained with Qwen2's pipeline; ChatML chat template; end of turn `<|im_end|>`.
- Training: SFT with TRL, lr {st["learning_rate"]} (constant after {st["warmup_steps"]} warm-up steps),
  batch {st["batch_size"]}, windows of whole turns up to {st["max_length"]} tokens, each opened by a
  counselling system prompt, loss on all tokens. Train loss {info["train_loss_first"]:.2f} ->
  {info["train_loss_last"]:.2f}.
- Evaluation: perplexity of the counsellor's tokens in {d["eval_dialogues"]} held-out dialogues (never
  trained on): {info["eval_perplexity_trained"]:.1f} trained,
  {info["eval_perplexity_untrained"]:.1f} untrained.
- Default generation (generation_config.json): temperature {gen["temperature"]}, top_p {gen["top_p"]},
  repetition_penalty {gen["repetition_penalty"]} (needed at this size: without it decoding loops),
  max_new_tokens {gen["max_new_tokens"]}.

## Data and attribution
All dialogues are synthetic (generated by LLMs); see `data/SOURCES.md`.
- CPsyCounD from CPsyCoun (Zhang et al., ACL 2024 Findings),
  https://github.com/CAS-SIAT-XinHai/CPsyCoun, CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/);
  parsed to JSONL and sampled.
- MDD-5k (Yin et al., AAAI 2025), https://github.com/lemonsis/MDD-5k, MIT, Copyright (c) 2024 Congchi Yin;
  doctor-led diagnostic interviews, including talk of self-harm and suicidal ideation.
"""



def _check_replaceable(out: Path) -> None:
    # Never delete a folder that is not ours: --out . would otherwise remove the repository.
    if not out.exists():
        return
    if not out.is_dir():
        raise DemoBuildError(f"{out} exists and is not a folder: remove it or choose another --out")
    ours = set(REQUIRED_FILES) | {"chat_template.jinja", "special_tokens_map.json"}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        raise DemoBuildError(
            f"{out} holds files a demo build does not make ({', '.join(foreign[:5])}); "
            "refusing to replace it: remove it or choose another --out"
        )


def _remove_stale_temp(out: Path) -> None:
    """Remove temporary folders left by builds that were killed (their process is gone)."""
    for tmp in out.parent.glob(f".{out.name}.*-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _install(tmp: Path, out: Path) -> None:
    """Move a finished build into place; an existing folder is replaced, never merged."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_demo(
    out_dir: str | Path = DEFAULT_MODEL_DIR,
    budget_s: float | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    quick: bool = False,
    settings: BuildSettings | None = None,
) -> Path:
    """Build the demo model into out_dir (replacing a previous build) and return out_dir.

    budget_s bounds the whole build on the wall clock (default DEFAULT_BUDGET_S, or QUICK_BUDGET_S
    with quick=True): training stops early enough for the final evaluation and saving to fit.
    max_steps, when given, trains exactly that many steps unless the budget runs out first.
    quick=True uses the reduced QUICK settings (tests); `settings` overrides both.
    """
    build_start = time.monotonic()
    if budget_s is None:
        budget_s = QUICK_BUDGET_S if quick else DEFAULT_BUDGET_S
    if not budget_s > 0:
        raise DemoBuildError(f"budget_s must be positive, got {budget_s}")
    if max_steps is not None and max_steps < 1:
        raise DemoBuildError(f"max_steps must be at least 1, got {max_steps}")
    settings = settings or (QUICK if quick else FULL)
    if settings.shape not in tiny_lm.SHAPES:
        raise DemoBuildError(f"unknown shape {settings.shape!r}; known: {', '.join(tiny_lm.SHAPES)}")
    out = Path(out_dir).resolve()
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp(out)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, GenerationConfig

    train = training_dialogues()
    heldout = heldout_dialogues()
    if not train or not heldout:
        raise DemoBuildError(f"no bundled dialogues found under {tiny_lm.DATA_DIR}")
    train = train[: settings.max_train_dialogues]
    evaluated = heldout[: settings.max_eval_dialogues]

    # The tokenizer sees the training split only, so the held-out perplexity owes nothing to it.
    tokenizer = tiny_lm.train_tokenizer(tiny_lm.dialogue_texts(train), vocab_size=settings.vocab_size)
    windows = encode_windows(tokenizer, train, settings.max_length, STAGE_SYSTEM_PROMPTS)
    dataset = Dataset.from_list([{"input_ids": w["input_ids"]} for w in windows])

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_lm.make_config(tokenizer, tiny_lm.SHAPES[settings.shape]))
    eval_start = time.monotonic()
    ppl_untrained = eval_perplexity(model, tokenizer, evaluated, settings.max_length)
    # What must fit after training: the same evaluation again, saving and the card (a few seconds).
    reserve_s = 1.5 * (time.monotonic() - eval_start) + 3.0

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    threads = torch.get_num_threads()
    try:
        trainer, clock = _make_trainer(
            model, tokenizer, dataset, settings, seed=seed, max_steps=max_steps,
            deadline=build_start + budget_s - reserve_s, work_dir=tmp / "_trainer",
        )
        train_start = time.monotonic()
        trainer.train()
        train_seconds = time.monotonic() - train_start
        torch.set_num_threads(threads)  # the tuner may have changed it
        shutil.rmtree(tmp / "_trainer", ignore_errors=True)
        model = trainer.model
        losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
        ppl_trained = eval_perplexity(model, tokenizer, evaluated, settings.max_length)

        model.generation_config = GenerationConfig(
            **GENERATION_DEFAULTS,
            eos_token_id=tokenizer.convert_tokens_to_ids(tiny_lm.EOS_TOKEN),
            pad_token_id=tokenizer.convert_tokens_to_ids(tiny_lm.PAD_TOKEN),
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "format": BUILD_FORMAT,
            "seed": seed,
            "quick": quick,
            "steps": trainer.state.global_step,
            "max_steps": max_steps,
            "budget_s": budget_s,
            "stopped_by": "wall_clock" if clock.stopped_by_clock else "max_steps",
            "train_seconds": round(train_seconds, 1),
            "train_threads": {"start": threads, "changes": clock.tuner.history},
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "settings": dataclasses.asdict(settings),
            "train_loss_first": losses[0][1] if losses else float("nan"),
            "train_loss_last": losses[-1][1] if losses else float("nan"),
            "train_loss_history": losses,
            "eval_perplexity_trained": round(ppl_trained, 2),
            "eval_perplexity_untrained": round(ppl_untrained, 2),
            "data": {
                "train_dialogues": len(train),
                "heldout_dialogues": len(heldout),
                "eval_dialogues": len(evaluated),
                "train_windows": len(windows),
                "train_tokens": sum(len(w["input_ids"]) for w in windows),
                "eval_dialogue_ids": [d["id"] for d in evaluated],
                "train_dialogue_ids": sorted({w["dialogue_id"] for w in windows}),
            },
            "versions": _versions(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "MODEL_CARD.md").write_text(_model_card(info), encoding="utf-8")
        info["build_seconds"] = round(time.monotonic() - build_start, 1)
        info["complete"] = True  # written last: is_built() trusts a folder only with this
        (tmp / "build_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
        _install(tmp, out)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_demo_model(path: str | Path = DEFAULT_MODEL_DIR, **build_kwargs) -> Path:
    """Return path, building the demo model there first unless a complete build is already there."""
    path = Path(path)
    if is_built(path):
        return path
    print(f"Building the offline demo model in {path} (about 5 minutes, once) ...", file=sys.stderr)
    return build_demo(path, **build_kwargs)


# ---------------------------------------------------------------------------------------------
# CLI


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.demo", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR,
                        help="folder to build into (default: %(default)s)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="wall-clock limit of the whole build; training gets what the rest leaves "
                             f"(default: {DEFAULT_BUDGET_S:.0f}, or {QUICK_BUDGET_S:.0f} with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train exactly this many steps (reproducible on any machine), unless the "
                             "budget runs out first")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument("--quick", action="store_true",
                        help="reduced build for tests: fewer dialogues, a much smaller model and vocabulary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if is_built(args.out) and not args.force:
        print(f"{args.out} is already built (use --force to rebuild)")
        return 0
    try:
        out = build_demo(args.out, args.budget_seconds, args.seed, args.max_steps, args.quick)
    except DemoBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {args.out} was left as it was", file=sys.stderr)
        return 130
    info = json.loads((out / "build_info.json").read_text(encoding="utf-8"))
    print(
        f"Built {out} in {info['build_seconds']:.0f} s: {info['steps']} steps, train loss "
        f"{info['train_loss_first']:.2f} -> {info['train_loss_last']:.2f}, held-out perplexity "
        f"{info['eval_perplexity_trained']:.1f} (untrained {info['eval_perplexity_untrained']:.1f})"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    sys.exit(main())
