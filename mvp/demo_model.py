"""The built-in offline demo model: a 1.3 M-parameter Qwen2 trained for a few minutes on data/.

    python -m mvp.demo_model                      # build models/demo/ unless it is already complete
    python -m mvp.demo_model --force --seed 1     # rebuild
    python -m mvp.demo_model --max-steps 600      # exactly 600 steps (reproducible on any machine)
    python -m mvp.demo_model --quick --out /tmp/demo  # a reduced build in ~15 s (tests)

`make run` calls `ensure_demo_model()`. Everything comes from the bundled dialogues, offline:
a tokenizer trained with Qwen2's pipeline (`mvp.tiny_lm`), a model of `SHAPES["demo"]`, and a short
SFT with TRL. The choices follow what STACK_NOTES measured in a 5-minute CPU budget: lr 6e-3, batch 8,
windows of at most 256 tokens made of whole turns, each opened by a system prompt, loss on all tokens.

Bounded time: training stops on the wall clock (`--budget-seconds`), so the number of steps depends on
the machine; it is recorded in build_info.json, and `--max-steps N` trains exactly N steps (the
learning rate is constant after warm-up, so the weights after N steps do not depend on when a
wall-clock stop would have come). Same seed + same steps -> the same weights.

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

from mvp import tiny_lm

DEFAULT_MODEL_DIR = tiny_lm.REPO_ROOT / "models" / "demo"
# Whole build <= 5 min on 2 cores: ~25 s go to imports, the tokenizer, two evaluations and saving.
DEFAULT_BUDGET_S = 260.0
HELDOUT_PER_MILLE = 50  # ~5% of dialogues, chosen by a hash of their id, are never trained on
BUILD_FORMAT = 1
# Files a complete build has; build_info.json is written last, inside the temporary folder.
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "MODEL_CARD.md",
    "build_info.json",
)

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
    plain_loss: bool = True  # model(**inputs).loss instead of TRL's fused LM head (1.7x faster on CPU)
    logging_steps: int = 10


FULL = BuildSettings()
QUICK = BuildSettings(
    vocab_size=1000, max_train_dialogues=160, max_eval_dialogues=12, warmup_steps=5, logging_steps=5
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


