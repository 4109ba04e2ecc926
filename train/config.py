"""Configuration of the training commands: the stage config dataclass, YAML + flags parsing, errors.

Used by every stage (`python -m train.sft --config FILE --max-steps 5`), the evaluation and the pipeline:

    cfg = parse_config(SFTStageConfig, argv, prog=..., description=...)   # YAML via --config, flags override
    cfg = config_from_dict(PipelineConfig, read_yaml(path), source=path)  # a YAML mapping

One schema: each config is a dataclass with help text and `__post_init__` checks; the fields that go to
TRL are mapped in `train.training.training_kwargs`, and anything else TRL accepts goes through
`trl_args`, checked against the TRL config class's own fields. Unknown keys and flags are errors that
name the key and suggest the closest one. (`trl.TrlParser` is not used: it cannot read the `dict`
fields that `trl_args` and the pipeline's stage sections need, its errors are argparse exits in English
without a suggestion, and taking TRL's TrainingArguments as the schema would change this project's
defaults, e.g. bf16=True that fails on the CPU.)

User errors (`ConfigError`, `DataError`, `mvp.model.loader.ModelLoadError`) are printed by `cli()` as one
line with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvp.model.loader import DEVICES, QUANTIZATIONS, ModelLoadError, check_choice

BAD_ROW_POLICIES = ("refuse", "skip")


class ConfigError(ValueError):
    """A bad setting: the message names the file or flag and the key."""


class DataError(ValueError):
    """A dataset that cannot be trained on (missing, empty, malformed rows); the message says how to fix it."""


USER_ERRORS = (ConfigError, DataError, ModelLoadError)


def log(stage: str, message: str) -> None:
    """One progress line on stderr (stdout stays free for tables and JSON)."""
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


def check_model_choices(cfg) -> None:
    """quantization and device, checked once with the loader's own rule (stage, evaluate and pipeline configs)."""
    check_choice("quantization", cfg.quantization, QUANTIZATIONS, ConfigError)
    check_choice("device", cfg.device, DEVICES, ConfigError)


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
    check_model_choices(cfg)
    if not cfg.output_dir:
        raise ConfigError("output_dir: 必须给出输出文件夹（--output-dir 或 YAML 中的 output_dir）")
    check_choice("bad_rows", cfg.bad_rows, BAD_ROW_POLICIES, ConfigError)
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


def suggest(key: str, known: Iterable[str]) -> str:
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
        raise ConfigError(f"{source}: 未知的配置项 {key!r}{suggest(str(key), names)}（可用：{', '.join(names)}）")
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
        raise ConfigError(f"命令行: 未知的参数 {flag!r}{suggest(key, names)}（用 --help 查看全部参数）")
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
