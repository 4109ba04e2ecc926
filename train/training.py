"""What every TRL trainer of a stage gets: the LoRA config, the TRL config arguments (CPU-safe
precision, no checkpoints, no reporting, `trl_args` checked against the TRL class), the callbacks, and
the model loaded through mvp.model.loader (base + adapter to continue, quantization: QLoRA on CUDA).

Used by `train.registry.run_stage` and the stages' `make_trainer`; nothing here trains by itself.
Pure helpers (`lora_config`, `training_kwargs`) need no model and are unit-tested.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from train.config import ConfigError, StageConfig, suggest
from train.outputs import TRAINER_WORK_SUBDIR, local_rank


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
                        f"trl_args: {config_cls.__name__} 没有参数 {key!r}{suggest(key, known)}"
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


def stage_callbacks(args: StageConfig, stage: str) -> list:
    """The callbacks every stage's trainer gets: the wall-clock stop and the progress lines."""
    from train.callbacks import ProgressLines, WallClockStop

    return [WallClockStop(args.time_budget_s, stage=stage), ProgressLines(stage)]


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
