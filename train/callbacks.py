"""TrainerCallbacks shared by the training stages and the offline demo build.

- `WallClockStop`: stops training at the end of the step that reaches a time limit (a budget in
  seconds from the start of training, or an absolute `time.monotonic()` deadline); the trainer then
  saves as usual. The stages use the budget (`time_budget_s`), `python -m train.demo` the deadline.
- `ProgressLines`: one line per log event on stderr, readable without a terminal.

Imported lazily (it imports transformers) by `train.training.stage_callbacks` and `train.demo.build`.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from train.config import log

PROGRESS_KEYS = ("loss", "eval_loss", "reward", "rewards/accuracies", "rewards/margins", "accuracy",
                 "learning_rate")


class WallClockStop(TrainerCallback):
    """Stop after `budget_s` seconds of training, or at `deadline` (time.monotonic()); None = no limit."""

    def __init__(self, budget_s: float | None = None, *, deadline: float | None = None,
                 stage: str | None = None) -> None:
        self.budget_s = budget_s
        self.deadline = deadline
        self.stage = stage  # when given, the stop is logged under this name
        self.start = time.monotonic()
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def out_of_time(self, now: float) -> bool:
        if self.deadline is not None and now >= self.deadline:
            return True
        return self.budget_s is not None and now - self.start >= self.budget_s

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopped and self.out_of_time(time.monotonic()):
            self.stopped = True
            if self.stage is not None:
                log(self.stage, f"到达时间上限 {self.budget_s:.0f} 秒，在第 {state.global_step} 步停止"
                    if self.budget_s is not None else f"到达截止时间，在第 {state.global_step} 步停止")
            control.should_training_stop = True


class ProgressLines(TrainerCallback):
    """Prints one line per log event (step, loss, elapsed) on stderr."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.start = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()
        log(self.stage, f"开始训练：共 {state.max_steps} 步")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        shown = {k: v for k, v in logs.items() if k in PROGRESS_KEYS}
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        log(self.stage, f"步 {state.global_step}/{state.max_steps} {text} ({time.monotonic() - self.start:.0f} 秒)")
