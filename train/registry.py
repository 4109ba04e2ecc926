"""The stage registry and the one run skeleton shared by every training stage.

A stage (pt, sft, rm, dpo, rl) is a module with a config dataclass and a `Stage` subclass that says
only what is its own: its name, config class, the kind of export data it reads, how it loads that
data and how it makes its TRL trainer. `run_stage(stage, cfg)` does the rest, the same for all:

    load data -> digest of the inputs -> prepare output_dir -> load the model (mvp.model.loader)
    -> make the trainer -> train -> metrics -> save adapter, tokenizer, train_config.json -> done marker

The pipeline reads the registry (`stages()`): which names exist, in which order they are listed,
what data each needs in an export, whether it trains the dialogue policy. To add a stage: write
`train/NAME.py` (a config, a `Stage` subclass as `STAGE`, a thin `main()`) and add its module name to
`STAGE_MODULES` below. Tests and plugins may `register()` a stage at run time.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train import data as data_mod
from train import outputs, training
from train.config import ConfigError, StageConfig, log

# The registration: one module per stage, each with a `STAGE` attribute. This order is the canonical
# order of the stages (help texts, error messages, the pipeline's list of choices).
STAGE_MODULES = ("train.pt", "train.sft", "train.rm", "train.dpo", "train.rl")

_REGISTERED: dict[str, Stage] = {}


@dataclass
class StageData:
    """What a stage's `load_data` hands to the skeleton."""

    train_rows: list[dict]
    eval_rows: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # recorded as train_config.json "data"
    manifest: Path | None = None  # the export manifest, copied next to the adapter
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level train_config.json keys
    held: list = field(default_factory=list)  # other models make_trainer loaded (freed at the end)


class Stage:
    """One training stage. Subclasses set the class attributes and override the methods they need."""

    name: str = ""
    config_cls: type[StageConfig] = StageConfig
    policy: bool = True  # trains the dialogue model: the pipeline carries its adapter on to the next one
    makes_reward_model: bool = False  # its output is the reward model later stages and the evaluation use (rm)
    uses_export: bool = True  # the pipeline points `data` at its export (False: pt reads its own text)
    needs_reward_model: bool = False  # the pipeline passes the reward model (rl)
    model_class: str = "causal_lm"  # as mvp.model.loader.load_model(model_class=)
    task_type: str = "CAUSAL_LM"  # peft task type of a new LoRA
    padding_side: str = "right"
    saved_what: str = "适配器"
    help: str = ""  # the one-line description of `python -m train.NAME --help`

    # -- what the stage reads ------------------------------------------------------------------
    def data_kind(self, cfg) -> str | None:
        """The export file it trains on (trl/KIND_train.jsonl), or None if it reads no export (pt)."""
        raise NotImplementedError

    def input_files(self, cfg) -> Sequence[Path | None]:
        """The files its output depends on (hashed by content for the skip check)."""
        files = data_mod.resolve_data(cfg.data, cfg.eval_data, self.data_kind(cfg))
        return [files.train, files.eval]

    def hash_extra(self, cfg) -> dict | None:
        return None

    def load_data(self, cfg) -> StageData:
        raise NotImplementedError

    # -- how it trains ---------------------------------------------------------------------------
    def make_trainer(self, cfg, loaded, peft_config, data: StageData, callbacks: list):
        raise NotImplementedError

    def label(self, cfg) -> str:
        """Recorded as train_config.json "stage" (e.g. dpo:kto)."""
        return self.name

    def log_name(self, cfg) -> str:
        return self.name

    def describe(self, cfg, loaded, trainable: int, total: int) -> str:
        return f"可训练参数 {trainable:,} / {total:,}（{loaded.device}，量化 {loaded.quantization}）"

    def extra_metrics(self, trainer) -> dict:
        return {}

    # -- the entry points every stage module exposes -------------------------------------------------
    def digest(self, cfg) -> str:
        return data_mod.inputs_hash(cfg, self.input_files(cfg), extra=self.hash_extra(cfg))

    def run(self, cfg) -> Path:
        return run_stage(self, cfg)


def register(stage: Stage) -> Stage:
    """Add a stage that does not live in STAGE_MODULES (a test, a plugin)."""
    if not stage.name:
        raise ValueError("a stage needs a name")
    _REGISTERED[stage.name] = stage
    return stage


def stages() -> dict[str, Stage]:
    """Every stage by name: STAGE_MODULES in order, then the ones register()ed."""
    found = {}
    for module_name in STAGE_MODULES:
        stage = importlib.import_module(module_name).STAGE
        found[stage.name] = stage
    for name, stage in _REGISTERED.items():
        found.setdefault(name, stage)
    return found


def get(name: str) -> Stage:
    known = stages()
    if name not in known:
        raise ConfigError(f"stages: 未知的阶段 {name!r}（可选 {', '.join(known)}）")
    return known[name]


def run_stage(stage: Stage, cfg) -> Path:
    """The skeleton every stage runs: data, digest, model, trainer, train, save, metrics."""
    started = time.monotonic()
    name = stage.log_name(cfg)
    data = stage.load_data(cfg)
    digest = stage.digest(cfg)
    outputs.prepare_output_dir(cfg.output_dir)

    loaded, peft_config = training.load_for_training(cfg, model_class=stage.model_class,
                                                     task_type=stage.task_type, padding_side=stage.padding_side)
    callbacks = training.stage_callbacks(cfg, name)
    trainer = stage.make_trainer(cfg, loaded, peft_config, data, callbacks)
    trainable, total = training.count_parameters(trainer.model)
    log(name, stage.describe(cfg, loaded, trainable, total))
    result = trainer.train()
    metrics = outputs.train_metrics(result, trainer, len(data.eval_rows), cfg.eval_at_end)
    metrics.update(stage.extra_metrics(trainer))
    out = outputs.save_stage_output(trainer.model, loaded.tokenizer, cfg, stage=stage.label(cfg), loaded=loaded,
                                    data=data.info, metrics=metrics, manifest=data.manifest, started=started,
                                    digest=digest, extra=data.extra)
    log(name, f"完成：{stage.saved_what}已保存到 {out}（{time.monotonic() - started:.1f} 秒）")
    outputs.free_memory(trainer, loaded, *data.held)
    return out


def main_for(stage: Stage, argv=None) -> int:
    """The `main()` of a stage module: parse flags and YAML into its config, run it, one-line errors."""
    from train.config import cli

    return cli(stage.run, stage.config_cls, argv, prog=f"python -m train.{stage.name}", description=stage.help)
