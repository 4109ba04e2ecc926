"""Supervised fine-tuning (SFT) with LoRA on whole multi-turn conversations ({"messages": [...]}).

    python -m train.sft --config train/configs/sft_qlora_7b.yaml
    python -m train.sft --model demo --data exports/NAME --output-dir runs/sft --max-steps 20

The data is an export folder (trl/sft_train.jsonl and trl/sft_eval.jsonl) or a JSONL file of
{"messages": [{"role": ..., "content": ...}, ...]} rows. Every row must be [system?] user, assistant, ...
ending with an assistant turn; other rows are refused (or skipped and counted with --bad-rows skip).
The loss covers assistant tokens only when the chat template marks them ({% generation %}) or TRL has a
marked training copy of it (Qwen2.5/Qwen3, Llama 3, Gemma, ...); otherwise all tokens, with a warning,
recorded in train_config.json. The run itself is `train.registry.run_stage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from train import data as data_mod
from train import training
from train.config import StageConfig, check_stage_config, log
from train.registry import Stage, StageData, main_for


@dataclass
class SFTStageConfig(StageConfig):
    assistant_only_loss: bool = field(default=True, metadata={"help": "只在咨询师（assistant）回复上计算损失（需要模板有 {% generation %} 标记）"})
    plain_loss: bool = field(default=True, metadata={"help": "用模型自己的损失代替 TRL 的融合 LM 头（CPU 上快约 1.7 倍；结果相同）"})

    def __post_init__(self) -> None:
        check_stage_config(self)


def plain_loss_trainer_class():
    """SFTTrainer whose loss is the model's own `model(**inputs).loss` (same value, no fused LM head).

    TRL 1.16 patches the model with a tiled LM head that also computes entropy/top-1 metrics; on the
    CPU each step is ~1.2-1.8x slower (STACK_NOTES) and no SFTConfig flag turns it off. The patched
    forward without `fused_lm_head=True` is the original one, so generation and saving are unaffected.
    Used by the sft and pt stages and by the demo build.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return PlainLossSFTTrainer


def lm_trainer(cfg: StageConfig, loaded, peft_config, data: StageData, callbacks: list, *, plain_loss: bool,
               **sft_kwargs):
    """TRL's SFTTrainer (or its plain-loss variant) with LoRA on data.train_rows. Shared with pt."""
    from trl import SFTConfig, SFTTrainer

    args = training.make_trl_config(SFTConfig, cfg, loaded.device, max_length=cfg.max_length, packing=False,
                                    **sft_kwargs)
    trainer_cls = plain_loss_trainer_class() if plain_loss else SFTTrainer
    return trainer_cls(
        model=loaded.model,
        args=args,
        train_dataset=data_mod.to_dataset(data.train_rows),
        eval_dataset=data_mod.to_dataset(data.eval_rows) if data.eval_rows else None,
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


class SFTStage(Stage):
    name = "sft"
    config_cls = SFTStageConfig
    help = "SFT：在多轮对话（messages）上用 LoRA/QLoRA 监督微调"

    def data_kind(self, cfg) -> str:
        return "sft"

    def load_data(self, cfg: SFTStageConfig) -> StageData:
        files = data_mod.resolve_data(cfg.data, cfg.eval_data, "sft")
        train_rows, train_report = data_mod.load_rows(files.train, "sft", bad_rows=cfg.bad_rows,
                                                      max_samples=cfg.max_samples, keep=["messages"])
        eval_rows, eval_report = data_mod.load_eval_rows(files.eval, "sft", bad_rows=cfg.bad_rows,
                                                         keep=["messages"])
        log(self.name, f"训练样本 {len(train_rows)}，评估样本 {len(eval_rows)}")
        info = {"train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else None}
        return StageData(train_rows, eval_rows, info, manifest=files.manifest)

    def make_trainer(self, cfg: SFTStageConfig, loaded, peft_config, data: StageData, callbacks: list):
        supported, how = training.assistant_mask_supported(loaded.tokenizer)
        assistant_only = cfg.assistant_only_loss and supported
        if cfg.assistant_only_loss and not assistant_only:
            log(self.name, f"警告：无法只在助手回复上计算损失（{how}），改为在全部 token 上计算")
        data.info.update(assistant_only_loss=assistant_only, assistant_mask=how)
        return lm_trainer(cfg, loaded, peft_config, data, callbacks, plain_loss=cfg.plain_loss,
                          assistant_only_loss=assistant_only)


STAGE = SFTStage()
run = STAGE.run
digest = STAGE.digest


def main(argv=None) -> int:
    return main_for(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
