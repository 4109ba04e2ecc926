"""Supervised fine-tuning (SFT) with LoRA on whole multi-turn conversations ({"messages": [...]}).

    python -m train.sft --config train/configs/sft_qlora_7b.yaml
    python -m train.sft --model demo --data exports/NAME --output-dir runs/sft --max-steps 20

The data is an export folder (trl/sft_train.jsonl and trl/sft_eval.jsonl) or a JSONL file of
{"messages": [{"role": ..., "content": ...}, ...]} rows. Every row must be [system?] user, assistant, ...
ending with an assistant turn; other rows are refused (or skipped and counted with --bad-rows skip).
The loss covers assistant tokens only when the chat template marks them ({% generation %}) or TRL has a
marked training copy of it (Qwen2.5/Qwen3, Llama 3, Gemma, ...); otherwise all tokens, with a warning,
recorded in train_config.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from train import common
from train.common import StageConfig

STAGE = "sft"


@dataclass
class SFTStageConfig(StageConfig):
    assistant_only_loss: bool = field(default=True, metadata={"help": "只在咨询师（assistant）回复上计算损失（需要模板有 {% generation %} 标记）"})
    plain_loss: bool = field(default=True, metadata={"help": "用模型自己的损失代替 TRL 的融合 LM 头（CPU 上快约 1.7 倍；结果相同）"})

    def __post_init__(self) -> None:
        common.check_stage_config(self)


def data_files(cfg: SFTStageConfig) -> common.DataFiles:
    return common.resolve_data(cfg.data, cfg.eval_data, "sft")


def digest(cfg: SFTStageConfig) -> str:
    files = data_files(cfg)
    return common.inputs_hash(cfg, [files.train, files.eval])


def plain_loss_trainer_class():
    """SFTTrainer whose loss is the model's own `model(**inputs).loss` (same value, no fused LM head).

    TRL 1.16 patches the model with a tiled LM head that also computes entropy/top-1 metrics; on the
    CPU each step is ~1.7x slower (STACK_NOTES) and no SFTConfig flag turns it off.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return PlainLossSFTTrainer


def train_lm(cfg: StageConfig, stage: str, train_rows: list[dict], eval_rows: list[dict], *,
             sft_kwargs, plain_loss: bool):
    """Load, train with TRL's SFTTrainer (LoRA), return (trainer, loaded, metrics). Shared with pt.

    sft_kwargs(tokenizer) -> dict of extra SFTConfig arguments (decided once the tokenizer is loaded).
    """
    from trl import SFTConfig, SFTTrainer

    loaded, peft_config = common.load_for_training(cfg, padding_side="right")
    args = common.make_trl_config(SFTConfig, cfg, loaded.device, max_length=cfg.max_length,
                                  packing=False, **sft_kwargs(loaded.tokenizer))
    trainer_cls = plain_loss_trainer_class() if plain_loss else SFTTrainer
    trainer = trainer_cls(
        model=loaded.model,
        args=args,
        train_dataset=common.to_dataset(train_rows),
        eval_dataset=common.to_dataset(eval_rows) if eval_rows else None,
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
        callbacks=common.stage_callbacks(cfg, stage),
    )
    trainable, total = common.count_parameters(trainer.model)
    common.log(stage, f"可训练参数 {trainable:,} / {total:,}（{loaded.device}，量化 {loaded.quantization}）")
    result = trainer.train()
    metrics = common.train_metrics(result, trainer, len(eval_rows), cfg.eval_at_end)
    return trainer, loaded, metrics


def run(cfg: SFTStageConfig) -> common.Path:
    started = time.monotonic()
    files = data_files(cfg)
    train_rows, train_report = common.load_rows(files.train, "sft", bad_rows=cfg.bad_rows,
                                                max_samples=cfg.max_samples, keep=["messages"])
    eval_rows, eval_report = common.load_eval_rows(files.eval, "sft", bad_rows=cfg.bad_rows, keep=["messages"])
    common.log(STAGE, f"训练样本 {len(train_rows)}，评估样本 {len(eval_rows)}")
    d = digest(cfg)
    common.prepare_output_dir(cfg.output_dir)

    loss_on = {}

    def sft_kwargs(tokenizer) -> dict:
        supported, how = common.assistant_mask_supported(tokenizer)
        assistant_only = cfg.assistant_only_loss and supported
        if cfg.assistant_only_loss and not assistant_only:
            common.log(STAGE, f"警告：无法只在助手回复上计算损失（{how}），改为在全部 token 上计算")
        loss_on.update(assistant_only_loss=assistant_only, assistant_mask=how)
        return {"assistant_only_loss": assistant_only}

    trainer, loaded, metrics = train_lm(cfg, STAGE, train_rows, eval_rows, sft_kwargs=sft_kwargs,
                                        plain_loss=cfg.plain_loss)
    data = {"train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else None,
            **loss_on}
    out = common.save_stage_output(trainer.model, loaded.tokenizer, cfg, stage=STAGE, loaded=loaded, data=data,
                                   metrics=metrics, manifest=files.manifest, started=started, digest=d)
    common.log(STAGE, f"完成：适配器已保存到 {out}（{time.monotonic() - started:.1f} 秒）")
    common.free_memory(trainer, loaded)
    return out


def main(argv=None) -> int:
    return common.cli(run, SFTStageConfig, argv, prog="python -m train.sft",
                      description="SFT：在多轮对话（messages）上用 LoRA/QLoRA 监督微调")


if __name__ == "__main__":
    raise SystemExit(main())
