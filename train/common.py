"""Helpers shared by every training stage (pt, sft, rm, rl, dpo), the evaluation and the pipeline.

Nothing here trains by itself. A stage module is a config dataclass + `run(config)` + `main(argv)`:

    config = parse_config(SFTConfig, argv)        # YAML via --config, flags override, typos are errors
    loaded, peft_config = load_for_training(config, model_class="causal_lm", task_type="CAUSAL_LM")
    ... a TRL trainer with training_kwargs(config, loaded.device) ...
    save_stage_output(trainer.model, loaded.tokenizer, config, ...)

Errors the user can fix (a bad key, a missing file, an empty or malformed dataset, a model that will not
load) are `ConfigError`, `DataError` or `mvp.model.loader.ModelLoadError`; `cli()` prints them as one line
and exits with status 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvp.model.loader import DEVICES, QUANTIZATIONS, ModelLoadError

TRAIN_CONFIG_FILE = "train_config.json"
DATA_MANIFEST_FILE = "data_manifest.json"
DONE_FILE = "stage_done.json"  # written last: its presence and hash mean "this output is complete"
TRAINER_WORK_SUBDIR = "_trainer"  # TRL's scratch output_dir (checkpoints if asked), inside output_dir
BAD_ROW_POLICIES = ("refuse", "skip")
SHOWN_BAD_ROWS = 5  # how many bad rows an error message lists
HASH_CHUNK = 1 << 20
ROLES = ("system", "user", "assistant")


class ConfigError(ValueError):
    """A bad setting: the message names the file or flag and the key."""


class DataError(ValueError):
    """A dataset that cannot be trained on (missing, empty, malformed rows); the message says how to fix it."""


USER_ERRORS = (ConfigError, DataError, ModelLoadError)


def log(stage: str, message: str) -> None:
    """One progress line on stderr (stdout stays free for tables and JSON)."""
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Configuration: dataclass <- YAML <- flags


@dataclass
class StageConfig:
    """Fields every training stage has. Stages subclass it and add their own (with other defaults)."""

    model: str = field(default="demo", metadata={"help": "基座模型：demo、本地文件夹或 Hugging Face 模型 id（经 mvp.model.loader 加载）"})
    adapter: str | None = field(default=None, metadata={"help": "在这个 LoRA 适配器上继续训练（例如 SFT 的输出）；不给则新建 LoRA"})
    quantization: str = field(default="auto", metadata={"help": "auto（CUDA 上 4-bit = QLoRA，CPU 上不量化）|4bit|8bit|none"})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda"})
    data: str = field(default="", metadata={"help": "导出文件夹（exports/NAME，读取其中 trl/ 下的文件）或一个 JSONL 文件"})
    eval_data: str | None = field(default=None, metadata={"help": "评估集 JSONL；data 是导出文件夹时自动使用其 eval 划分"})
    output_dir: str = field(default="", metadata={"help": "输出文件夹：适配器、分词器、train_config.json、data_manifest.json"})
    bad_rows: str = field(default="refuse", metadata={"help": "格式错误的行（角色顺序错、缺字段）：refuse 报错并列出，skip 跳过并计数"})
    max_samples: int | None = field(default=None, metadata={"help": "最多使用多少条训练样本（小规模试跑）"})
    lora_r: int = field(default=16, metadata={"help": "LoRA 秩 r"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha（缩放 = alpha / r）"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={"help": "LoRA 作用的模块名，all-linear 表示除输出层外的所有线性层"})
    learning_rate: float = field(default=2e-4, metadata={"help": "学习率"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "训练轮数（max_steps > 0 时以步数为准）"})
    max_steps: int = field(default=-1, metadata={"help": "训练步数上限；-1 表示按轮数"})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "每个设备的批大小"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "梯度累积步数"})
    max_length: int = field(default=1024, metadata={"help": "序列最大长度（token）"})
    warmup_steps: int = field(default=0, metadata={"help": "学习率预热步数"})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "学习率调度：linear、cosine、constant、constant_with_warmup 等"})
    logging_steps: int = field(default=10, metadata={"help": "每多少步记录一次损失"})
    seed: int = field(default=42, metadata={"help": "随机种子（LoRA 初始化、数据顺序）"})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "梯度检查点：省显存、慢约 20%；默认 CUDA 上开、CPU 上关"})
    time_budget_s: float | None = field(default=None, metadata={"help": "墙钟时间上限（秒）：到点后在当前步结束时停止并照常保存"})
    eval_at_end: bool = field(default=True, metadata={"help": "训练结束后在评估集上算一次损失（有评估集时）"})
    trl_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "直接传给 TRL 配置类的其他参数（名字必须是该类的字段），例如 {optim: paged_adamw_8bit}"})

    def __post_init__(self) -> None:
        check_stage_config(self)


def check_stage_config(cfg: StageConfig) -> None:
    """Checks shared by every stage (each stage's __post_init__ calls this first)."""
    if not isinstance(cfg.model, str) or not cfg.model.strip():
        raise ConfigError("model: 不能为空（demo、本地模型文件夹或模型 id）")
    if cfg.quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization: {cfg.quantization!r} 无效，可选 {', '.join(QUANTIZATIONS)}")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device: {cfg.device!r} 无效，可选 {', '.join(DEVICES)}")
    if not cfg.output_dir:
        raise ConfigError("output_dir: 必须给出输出文件夹（--output-dir 或 YAML 中的 output_dir）")
    if cfg.bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"bad_rows: {cfg.bad_rows!r} 无效，可选 {', '.join(BAD_ROW_POLICIES)}")
    positive = {
        "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps, "max_length": cfg.max_length,
        "logging_steps": cfg.logging_steps,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: 必须大于 0，收到 {value!r}")
    if not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"lora_dropout: 必须在 [0, 1) 之间，收到 {cfg.lora_dropout!r}")
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        raise ConfigError(f"max_steps: 必须是正数或 -1（按轮数），收到 {cfg.max_steps!r}")
    if cfg.max_steps == -1 and cfg.num_train_epochs <= 0:
        raise ConfigError("num_train_epochs: 必须大于 0（或给出 max_steps）")
    if cfg.max_samples is not None and cfg.max_samples <= 0:
        raise ConfigError(f"max_samples: 必须大于 0，收到 {cfg.max_samples!r}")
    if cfg.time_budget_s is not None and cfg.time_budget_s <= 0:
        raise ConfigError(f"time_budget_s: 必须大于 0，收到 {cfg.time_budget_s!r}")
    if not cfg.lora_target_modules:
        raise ConfigError("lora_target_modules: 不能为空（例如 [all-linear] 或 [q_proj, v_proj]）")


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"；是不是 {close[0]}？" if close else ""


def _is_none_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "null", "~")


def coerce(value: Any, hint: Any, key: str, *, from_text: bool = False) -> Any:
    """Check (YAML) or convert (flag text, from_text=True) one value to a field's type; errors name the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_text and _is_none_text(value)):
            if type(None) in args:
                return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key, from_text=from_text)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: 无效的值 {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key}: 应为 true 或 false，收到 {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: 应为整数，收到 {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: 应为数字，收到 {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `parent: 3`
        raise ConfigError(f"{key}: 应为字符串，收到 {value!r}")
    if origin is list:
        inner = args[0] if args else Any
        if isinstance(value, str) and from_text:
            text = value.strip()
            value = yaml.safe_load(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: 应为列表，收到 {value!r}")
        return [coerce(v, inner, f"{key}[{i}]", from_text=from_text) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if isinstance(value, str) and from_text:
            value = yaml.safe_load(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: 应为映射（YAML 字典，命令行可写 JSON），收到 {value!r}")
        return dict(value)
    return value


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(cls, values: dict[str, Any], *, source: str = "配置"):
    """Build a config dataclass from a dict; an unknown key is a ConfigError that names it."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: 顶层必须是 YAML 映射（key: value），收到 {type(values).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in values if k not in names]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{source}: 未知的配置项 {key!r}{_suggest(str(key), names)}（可用：{', '.join(names)}）")
    kwargs = {k: coerce(v, hints[k], k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - all fields have defaults
        raise ConfigError(f"{source}: {exc}") from exc


def config_to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: 找不到配置文件 {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: 不是有效的 YAML：{str(exc).splitlines()[0]}") from exc
    return data or {}


def make_parser(cls, *, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with --config and one flag per dataclass field (--kebab-case or --snake_case)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--config", help="YAML 配置文件；命令行参数覆盖其中的值")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        flags = ["--" + f.name.replace("_", "-")]
        if "_" in f.name:
            flags.append("--" + f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f"{f.metadata.get('help', '')}（默认 {default!r}）".replace("%", "%%")  # argparse formats %
        parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, metavar="VALUE", help=help_text)
    return parser


def parse_config(cls, argv: Sequence[str] | None, *, prog: str, description: str, extra_flags=None):
    """YAML (--config) gives values, flags override; unknown keys and flags are ConfigErrors.

    extra_flags(parser) may add flags that are not config fields (e.g. --force); they are returned
    in the second element of the result.
    """
    parser = make_parser(cls, prog=prog, description=description)
    if extra_flags is not None:
        extra_flags(parser)
    ns, unknown = parser.parse_known_args(list(argv) if argv is not None else None)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        names = [f.name for f in dataclasses.fields(cls)]
        key = flag.lstrip("-").split("=")[0].replace("-", "_")
        raise ConfigError(f"命令行: 未知的参数 {flag!r}{_suggest(key, names)}（用 --help 查看全部参数）")
    given = vars(ns)
    values = read_yaml(given.pop("config")) if given.get("config") else {}
    source = given.pop("config", None) or "配置"
    field_names = {f.name for f in dataclasses.fields(cls)}
    extras = {k: given.pop(k) for k in list(given) if k not in field_names}
    if values and not isinstance(values, dict):
        raise ConfigError(f"{source}: 顶层必须是 YAML 映射（key: value）")
    hints = _hints(cls)
    for key, text in given.items():
        values[key] = coerce(text, hints[key], f"--{key.replace('_', '-')}", from_text=True)
    cfg = config_from_dict(cls, values, source=source)
    return (cfg, extras) if extra_flags is not None else cfg


def cli(run: Callable[[Any], Any], cls, argv: Sequence[str] | None, *, prog: str, description: str) -> int:
    """main() of a stage: parse, run, and turn user errors into one line on stderr and exit status 2."""
    try:
        cfg = parse_config(cls, argv, prog=prog, description=description)
        run(cfg)
    except USER_ERRORS as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------
# LoRA, training arguments, callbacks


def lora_config(args: StageConfig, task_type: str):
    """The peft LoraConfig for a stage ("CAUSAL_LM" or "SEQ_CLS"). Pure: no model needed."""
    from peft import LoraConfig

    targets: str | list[str] = list(args.lora_target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type=task_type,
    )


def precision_kwargs(device: str) -> dict[str, Any]:
    """bf16/fp16/use_cpu for a device. TRL configs default to bf16=True, which fails on the CPU."""
    if device == "cpu":
        return {"use_cpu": True, "bf16": False, "fp16": False}
    import torch

    bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return {"use_cpu": False, "bf16": bf16, "fp16": not bf16}


def training_kwargs(args: StageConfig, device: str, config_cls=None) -> dict[str, Any]:
    """Keyword arguments for a TRL config class: CPU-safe precision, no checkpoints, no reporting.

    `trl_args` are merged last after checking each name is a field of `config_cls`.
    """
    gradient_checkpointing = args.gradient_checkpointing
    if gradient_checkpointing is None:
        gradient_checkpointing = device == "cuda"
    kwargs: dict[str, Any] = {
        "output_dir": str(Path(args.output_dir) / TRAINER_WORK_SUBDIR),
        "learning_rate": args.learning_rate,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "per_device_eval_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "warmup_steps": args.warmup_steps,
        "lr_scheduler_type": args.lr_scheduler_type,
        "logging_steps": args.logging_steps,
        "logging_first_step": True,
        "seed": args.seed,
        "data_seed": args.seed,
        "gradient_checkpointing": gradient_checkpointing,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        **precision_kwargs(device),
    }
    if gradient_checkpointing:
        kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if args.trl_args:
        if config_cls is not None:
            known = {f.name for f in dataclasses.fields(config_cls)}
            for key in args.trl_args:
                if key not in known:
                    raise ConfigError(
                        f"trl_args: {config_cls.__name__} 没有参数 {key!r}{_suggest(key, known)}"
                    )
        kwargs.update(args.trl_args)
    return kwargs


def make_trl_config(config_cls, args: StageConfig, device: str, **stage_kwargs):
    """Instantiate a TRL config; a bad combination becomes a ConfigError that says which class refused."""
    kwargs = training_kwargs(args, device, config_cls)
    trl_keys = set(args.trl_args)
    for key, value in stage_kwargs.items():
        if key not in trl_keys:  # trl_args win over the stage's own choices
            kwargs[key] = value
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config_cls.__name__} 拒绝了这些参数：{str(exc).splitlines()[0]}") from exc


def wall_clock_callback(budget_s: float | None, stage: str):
    """A TrainerCallback that stops training after budget_s seconds (the output is saved as usual)."""
    from transformers import TrainerCallback

    class WallClockStop(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.stopped = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if budget_s is not None and time.monotonic() - self.start >= budget_s and not self.stopped:
                self.stopped = True
                log(stage, f"到达时间上限 {budget_s:.0f} 秒，在第 {state.global_step} 步停止")
                control.should_training_stop = True

    return WallClockStop()


def progress_callback(stage: str):
    """Prints one line per log event (step, loss, elapsed) on stderr, readable without a terminal."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()
            log(stage, f"开始训练：共 {state.max_steps} 步")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            shown = {k: v for k, v in logs.items() if k in ("loss", "eval_loss", "reward", "rewards/accuracies",
                                                            "rewards/margins", "accuracy", "learning_rate")}
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            log(stage, f"步 {state.global_step}/{state.max_steps} {text} ({time.monotonic() - self.start:.0f} 秒)")

    return ProgressLines()


def stage_callbacks(args: StageConfig, stage: str) -> list:
    return [wall_clock_callback(args.time_budget_s, stage), progress_callback(stage)]


# ---------------------------------------------------------------------------------------------
# Loading through mvp.model.loader


def assistant_mask_supported(tokenizer) -> tuple[bool, str]:
    """Whether SFT can put the loss on assistant tokens only, and how.

    TRL needs {% generation %} markers in the chat template; for templates it knows (Qwen2.5, Qwen3,
    Llama 3, Gemma, ...) it swaps in a marked copy itself. Any other template: loss on all tokens.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False, "no chat template"
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(template):
        return True, "template has {% generation %} markers"
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        return False, "chat template has no {% generation %} markers and TRL has no training copy of it"
    return True, "TRL's training copy of the model's template" if patched else "template is usable as is"


def load_for_training(args: StageConfig, *, model_class: str = "causal_lm", task_type: str = "CAUSAL_LM",
                      padding_side: str = "right"):
    """Load base (+ adapter to continue) through mvp.model.loader; return (LoadedModel, peft_config or None).

    A given adapter is loaded trainable and training continues it (peft_config None); otherwise a fresh
    LoRA is created by the trainer from the returned peft_config. On CUDA with quantization auto the base
    is 4-bit NF4, so this is QLoRA.
    """
    from transformers import set_seed

    from mvp.model.loader import ModelSpec, load_model

    set_seed(args.seed)  # a new LoRA and a new score head are initialised at random
    rank = local_rank()
    if rank is not None and args.device != "cpu":
        import torch

        if torch.cuda.is_available():  # one GPU per process under accelerate launch / torchrun
            torch.cuda.set_device(rank)
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"adapter: {args.adapter} 不是 LoRA 适配器文件夹（没有 adapter_config.json）")
    spec = ModelSpec(model=args.model, adapter=args.adapter, quantization=args.quantization, device=args.device)
    loaded = load_model(spec, model_class=model_class, for_training=True, num_labels=1)
    loaded.tokenizer.padding_side = padding_side
    if args.adapter:
        return loaded, None
    return loaded, lora_config(args, task_type)


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# ---------------------------------------------------------------------------------------------
# Data: JSONL files, role-order checks, export folders


@dataclass
class DataFiles:
    """Where a stage's data comes from: train file, optional eval file, optional export manifest."""

    train: Path
    eval: Path | None
    manifest: Path | None


def resolve_data(data: str, eval_data: str | None, kind: str) -> DataFiles:
    """An export folder (exports/NAME with trl/KIND_{train,eval}.jsonl) or a JSONL file."""
    if not data:
        raise ConfigError("data: 必须给出数据：导出文件夹（exports/NAME）或 JSONL 文件")
    path = Path(data)
    if path.is_dir():
        train = path / "trl" / f"{kind}_train.jsonl"
        if not train.is_file():
            if (path / "manifest.json").is_file():  # train.export writes no file for a kind without rows
                raise DataError(f"data: 导出 {data} 里没有 {kind} 训练数据（trl/{kind}_train.jsonl 不存在，"
                                f"即 0 行；各类数量和丢弃原因见 manifest.json）")
            raise DataError(f"data: {data} 里没有 trl/{kind}_train.jsonl；请先用 `python -m train.export` 导出")
        ev = Path(eval_data) if eval_data else path / "trl" / f"{kind}_eval.jsonl"
        manifest = path / "manifest.json"
        return DataFiles(train, ev if ev.is_file() else None, manifest if manifest.is_file() else None)
    if not path.is_file():
        raise DataError(f"data: 找不到文件或文件夹 {data}")
    manifest = next((p / "manifest.json" for p in (path.parent, path.parent.parent)
                     if (p / "manifest.json").is_file()), None)
    ev = Path(eval_data) if eval_data else None
    if ev is not None and not ev.is_file():
        raise DataError(f"eval_data: 找不到文件 {eval_data}")
    return DataFiles(path, ev, manifest)


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line; a line that is not JSON is a DataError."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} 第 {number} 行不是有效的 JSON：{exc.msg}") from exc
    return rows


def check_messages(messages: Any, *, ends_with: str) -> str | None:
    """None if `messages` is [system?] user, assistant, user, ... ending with `ends_with`; else why not.

    TRL 1.16 trains on prompts whose roles do not alternate without any warning, so we check here.
    """
    if not isinstance(messages, list) or not messages:
        return "消息列表为空或不是列表"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"第 {i + 1} 条消息的 role 无效：{(m.get('role') if isinstance(m, dict) else m)!r}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"第 {i + 1} 条消息（{m['role']}）内容为空"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns:
        return "只有 system 消息，没有对话"
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            return f"角色顺序错误：第 {i + 1} 轮应为 {expected}，实为 {m['role']}（system 只能在最前面）"
    if turns[-1]["role"] != ends_with:
        return f"最后一条消息应为 {ends_with}，实为 {turns[-1]['role']}"
    return None


def _one_assistant(value: Any, name: str) -> str | None:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        return f"{name} 应为恰好一条 assistant 消息的列表"
    m = value[0]
    if m.get("role") != "assistant":
        return f"{name} 的角色应为 assistant，实为 {m.get('role')!r}"
    if not isinstance(m.get("content"), str) or not m["content"].strip():
        return f"{name} 内容为空"
    return None


def check_row(row: Any, kind: str) -> str | None:
    """Why a row of a TRL-format file is unusable for `kind` (sft|dpo|kto|prompt|text), or None."""
    if not isinstance(row, dict):
        return "不是 JSON 对象"
    if kind == "sft":
        return check_messages(row.get("messages"), ends_with="assistant")
    if kind == "text":
        return None if isinstance(row.get("text"), str) and row["text"].strip() else "text 为空"
    why = check_messages(row.get("prompt"), ends_with="user")
    if why:
        return f"prompt: {why}"
    if kind == "dpo":
        return _one_assistant(row.get("chosen"), "chosen") or _one_assistant(row.get("rejected"), "rejected")
    if kind == "kto":
        if not isinstance(row.get("label"), bool):
            return f"label 必须是 JSON 布尔值 true/false，收到 {row.get('label')!r}"
        return _one_assistant(row.get("completion"), "completion")
    if kind == "prompt":
        return None
    raise ValueError(f"unknown row kind {kind!r}")


@dataclass
class RowReport:
    """Rows read, used and refused for one file (recorded in train_config.json)."""

    file: str
    rows_in: int = 0
    rows_used: int = 0
    bad_rows: list[dict] = field(default_factory=list)  # {"line": n, "why": ...}
    truncated_to: int | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "rows_in": self.rows_in, "rows_used": self.rows_used,
                "rows_skipped": len(self.bad_rows), "bad_rows": self.bad_rows[:50],
                "truncated_to": self.truncated_to}


def load_rows(path: Path, kind: str, *, bad_rows: str = "refuse", max_samples: int | None = None,
              keep: Sequence[str] | None = None) -> tuple[list[dict], RowReport]:
    """Read and check a TRL JSONL file. Bad rows are refused (DataError listing them) or skipped and counted.

    An empty file, or one without a single usable row, is a DataError. `keep` limits the columns.
    """
    report = RowReport(str(path))
    rows = []
    for number, row in read_jsonl(path):
        report.rows_in += 1
        why = check_row(row, kind)
        if why:
            report.bad_rows.append({"line": number, "why": why})
            continue
        rows.append({k: row[k] for k in keep} if keep else row)
    if report.bad_rows and bad_rows == "refuse":
        shown = "；".join(f"第 {b['line']} 行：{b['why']}" for b in report.bad_rows[:SHOWN_BAD_ROWS])
        raise DataError(
            f"{path}: {len(report.bad_rows)}/{report.rows_in} 行格式错误（{shown}）。"
            "修正数据，或用 --bad-rows skip 跳过这些行（跳过的行数会记录在 train_config.json）"
        )
    if report.rows_in == 0:
        raise DataError(f"{path}: 数据集为空（没有任何行）；请检查导出是否有评分数据")
    if not rows:
        raise DataError(f"{path}: {report.rows_in} 行全部格式错误，没有可训练的样本")
    if max_samples is not None and len(rows) > max_samples:
        rows = rows[:max_samples]
        report.truncated_to = max_samples
    report.rows_used = len(rows)
    return rows, report


def load_eval_rows(path: Path | None, kind: str, *, bad_rows: str = "refuse",
                   keep: Sequence[str] | None = None) -> tuple[list[dict], RowReport | None]:
    """Like load_rows for an optional eval file: a missing or empty file gives no rows (not an error)."""
    if path is None:
        return [], None
    if not any(line.strip() for line in open(path, encoding="utf-8")):
        return [], RowReport(str(path))
    return load_rows(path, kind, bad_rows=bad_rows, keep=keep)


def to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# Outputs: adapter + tokenizer + train_config.json + data manifest, and the "done" marker


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(model: str) -> dict[str, Any]:
    """What identifies a base model for the skip hash: a folder's config and weight files, or the hub id."""
    from mvp.model.loader import resolve_model_path

    try:
        path, _ = resolve_model_path(model)
    except ModelLoadError:
        return {"model": model}
    folder = Path(path)
    if not folder.is_dir():
        return {"model": model}
    files = {}
    for p in sorted(folder.iterdir()):
        if p.suffix in (".json", ".safetensors", ".bin", ".model", ".txt") and p.is_file():
            # Hashing multi-GB weights on every run is slow: name + size + mtime identify a build.
            st = p.stat()
            files[p.name] = [st.st_size, int(st.st_mtime)] if st.st_size > 64 * HASH_CHUNK else file_sha256(p)
    return {"model": model, "files": files}


def adapter_identity(adapter: str | None) -> str | None:
    if not adapter:
        return None
    weights = Path(adapter) / "adapter_model.safetensors"
    return file_sha256(weights) if weights.is_file() else str(Path(adapter).resolve())


def inputs_hash(cfg, data_files: Iterable[str | os.PathLike | None], extra: dict | None = None) -> str:
    """sha256 over the config, the data files' contents, the base model and the adapter.

    Paths are hashed by what they contain (data files, adapter weights), not by name; output_dir and
    time_budget_s are not inputs.
    """
    by_content = ("output_dir", "data", "eval_data", "adapter", "reward_model")
    # time_budget_s is an operational guard (the pipeline shares its deadline out), not an input:
    # a stage the clock stopped early still counts as done for the same data and settings.
    config = {k: v for k, v in config_to_dict(cfg).items() if k not in by_content + ("time_budget_s",)}
    payload = {
        "config": config,
        "data": {str(Path(p).name): file_sha256(p) for p in data_files if p},
        "model": model_identity(cfg.model),
        "adapter": adapter_identity(getattr(cfg, "adapter", None)),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def is_done(output_dir: str | os.PathLike, digest: str) -> bool:
    marker = Path(output_dir) / DONE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("inputs_hash") == digest
    except (OSError, json.JSONDecodeError):
        return False


def mark_done(output_dir: str | os.PathLike, digest: str) -> None:
    marker = Path(output_dir) / DONE_FILE
    marker.write_text(json.dumps({"inputs_hash": digest, "finished_at": utc_now()}), encoding="utf-8")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    return out


def is_main_process() -> bool:
    """True in a single process, and in process 0 under `accelerate launch` / torchrun (RANK is set)."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


def prepare_output_dir(output_dir: str | os.PathLike) -> Path:
    """Empty output_dir of a previous (possibly interrupted) run's files; create it (main process only)."""
    out = Path(output_dir)
    if not is_main_process():
        return out
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"output_dir: {out} 已存在且不是文件夹")
        marker_known = (out / DONE_FILE).exists() or (out / TRAIN_CONFIG_FILE).exists() or \
            (out / "adapter_config.json").exists() or (out / TRAINER_WORK_SUBDIR).exists()
        if any(out.iterdir()) and not marker_known:
            raise ConfigError(f"output_dir: {out} 不是空文件夹，也不是之前的训练输出；请换一个文件夹")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def save_stage_output(model, tokenizer, cfg, *, stage: str, loaded, data: dict, metrics: dict,
                      manifest: Path | None, started: float, digest: str, extra: dict | None = None) -> Path:
    """Save the "default" adapter (not TRL's frozen "ref" copy) and tokenizer, train_config.json, manifest."""
    out = Path(cfg.output_dir)
    if not is_main_process():  # under accelerate launch: process 0 writes everything
        return out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), selected_adapters=["default"])
    tokenizer.save_pretrained(str(out))
    if manifest is not None:
        shutil.copyfile(manifest, out / DATA_MANIFEST_FILE)
    info = {
        "stage": stage,
        "config": config_to_dict(cfg),
        "resolved": {"model_path": loaded.model_path, "device": loaded.device,
                     "quantization": loaded.quantization, "continued_adapter": cfg.adapter},
        "data": data,
        "data_manifest": DATA_MANIFEST_FILE if manifest is not None else None,
        "metrics": metrics,
        "elapsed_s": round(time.monotonic() - started, 2),
        "created_at": utc_now(),
        "inputs_hash": digest,
        "versions": versions(),
        **(extra or {}),
    }
    (out / TRAIN_CONFIG_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2, default=str),
                                        encoding="utf-8")
    work = out / TRAINER_WORK_SUBDIR
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    mark_done(out, digest)
    return out


def train_metrics(train_output, trainer, eval_rows: int, eval_at_end: bool) -> dict[str, Any]:
    """Loss and speed from the trainer, plus an eval loss when an eval set was given."""
    metrics = {k: v for k, v in (train_output.metrics or {}).items() if isinstance(v, (int, float))}
    metrics["global_step"] = trainer.state.global_step
    history = [h for h in trainer.state.log_history if "loss" in h]
    if history:
        metrics["first_loss"] = history[0]["loss"]
        metrics["last_loss"] = history[-1]["loss"]
    if eval_rows and eval_at_end:
        ev = trainer.evaluate()
        metrics.update({k: v for k, v in ev.items() if isinstance(v, (int, float))})
    return metrics


def free_memory(*objects) -> None:
    """Drop references and return accelerator memory between stages run in one process."""
    import gc

    del objects
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
