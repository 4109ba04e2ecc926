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
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mvp.model.demo import BUILD_FORMAT, REQUIRED_FILES, is_built  # noqa: F401 - is_built re-exported
from mvp.paths import DEMO_MODEL_DIR
from train.demo import tiny_lm
from train.demo.card import GENERATION_DEFAULTS, model_card, versions
from train.demo.dialogues import (STAGE_SYSTEM_PROMPTS, DemoBuildError, encode_windows, eval_perplexity,
                                  heldout_dialogues, training_dialogues)
from train.demo.threads import ThreadTuner

DEFAULT_MODEL_DIR = DEMO_MODEL_DIR
# The whole build, imports to saving, fits in this many seconds (5 minutes is the promise); training
# gets what the tokenizer, data preparation and the two evaluations leave (~260 s on an idle 2-core box).
DEFAULT_BUDGET_S = 285.0
QUICK_BUDGET_S = 30.0

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


# ---------------------------------------------------------------------------------------------
# Training


def _make_trainer(model, tokenizer, dataset, settings: BuildSettings, *, seed: int, deadline: float,
                  max_steps: int | None, work_dir: Path):
    """An SFTTrainer that stops at `deadline` (time.monotonic()), shows a progress bar and tunes threads."""
    import warnings

    import torch
    from tqdm.auto import tqdm
    from transformers import ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from train.callbacks import WallClockStop
    from train.sft import plain_loss_trainer_class

    class BuildClock(WallClockStop):
        """The shared wall-clock stop (at `deadline`), plus a progress bar and the thread tuner."""

        def __init__(self):
            super().__init__(deadline=deadline)
            self.bar = None
            self.loss = None
            self.tuner = ThreadTuner([torch.get_num_threads(), 1])
            self.step_start = 0.0
            self.threads = torch.get_num_threads()

        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
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
            self.bar.n = min(round(now - self.start), self.bar.total) if max_steps is None else state.global_step
            postfix = {"step": state.global_step, "threads": self.threads}
            if self.loss is not None:
                postfix["loss"] = f"{self.loss:.3f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
            super().on_step_end(args, state, control, **kwargs)  # stops at the deadline

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

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
    # model(**inputs).loss, not TRL 1.16's fused LM head: 1.2-1.8x faster per step on our 2-core CPUs
    trainer_cls = plain_loss_trainer_class() if settings.plain_loss else SFTTrainer
    clock = BuildClock()
    trainer = trainer_cls(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock]
    )
    trainer.remove_callback(ProgressCallback)  # ours shows seconds of the budget, not steps of 1e6
    return trainer, clock


# ---------------------------------------------------------------------------------------------
# Building and installing the folder


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
            "stopped_by": "wall_clock" if clock.stopped else "max_steps",
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
            "versions": versions(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "MODEL_CARD.md").write_text(model_card(info), encoding="utf-8")
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
