"""Preference optimisation with LoRA: DPO (default), KTO or ORPO, chosen with --loss.

    python -m train.dpo --config train/configs/dpo_qlora_7b.yaml
    python -m train.dpo --model demo --adapter runs/sft --data exports/NAME --output-dir runs/dpo
    python -m train.dpo --loss kto --model demo --adapter runs/sft --data exports/NAME --output-dir runs/kto
    python -m train.dpo --loss orpo --model demo --data exports/NAME --output-dir runs/orpo

- dpo: trl.DPOTrainer on trl/dpo_{train,eval}.jsonl ({"prompt", "chosen", "rejected"}).
- kto: trl.KTOTrainer on trl/kto_{train,eval}.jsonl ({"prompt", "completion", "label": true|false}):
  unpaired thumbs and ratings; labels must be JSON booleans (a string "true" is refused here, where
  TRL would crash deep inside).
- orpo: trl.experimental.orpo.ORPOTrainer on the DPO pairs: no reference model (SFT + odds-ratio
  penalty in one loss), so it can start from the base.

With --adapter (the SFT output) training CONTINUES that adapter and the reference model is a frozen
copy of it (TRL adds a "ref" adapter), i.e. the SFT policy, as DPO intends; only the trained
"default" adapter is saved. Without --adapter a fresh LoRA is trained and the reference is the base.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from train import common
from train.common import StageConfig

STAGE = "dpo"
LOSSES = ("dpo", "kto", "orpo")


@dataclass
class DPOStageConfig(StageConfig):
    loss: str = field(default="dpo", metadata={"help": "dpo（成对偏好）| kto（单条好/坏，来自点赞和评分）| orpo（无需参考模型）"})
    beta: float = field(default=0.1, metadata={"help": "DPO/KTO 的 beta（偏离参考模型的代价）；ORPO 中为比值损失的权重 lambda"})
    learning_rate: float = field(default=5e-5, metadata={"help": "学习率（LoRA 上 DPO 常用 5e-6 到 5e-5）"})
    dpo_loss_type: str = field(default="sigmoid", metadata={"help": "DPO 的损失类型：sigmoid、ipo、hinge 等（TRL DPOConfig.loss_type）"})
    desirable_weight: float = field(default=1.0, metadata={"help": "KTO：好样本的损失权重（好坏数量悬殊时调整）"})
    undesirable_weight: float = field(default=1.0, metadata={"help": "KTO：坏样本的损失权重"})

    def __post_init__(self) -> None:
        common.check_stage_config(self)
        if self.loss not in LOSSES:
            raise common.ConfigError(f"loss: {self.loss!r} 无效，可选 {', '.join(LOSSES)}")
        if self.beta <= 0:
            raise common.ConfigError(f"beta: 必须大于 0，收到 {self.beta!r}")
        if self.loss == "kto" and self.per_device_train_batch_size < 2:
            raise common.ConfigError(
                "per_device_train_batch_size: KTO 需要每个设备至少 2 条样本（用同批其他样本估计 KL 项）"
            )


def data_kind(cfg: DPOStageConfig) -> str:
    return "kto" if cfg.loss == "kto" else "dpo"


def data_files(cfg: DPOStageConfig) -> common.DataFiles:
    return common.resolve_data(cfg.data, cfg.eval_data, data_kind(cfg))


def digest(cfg: DPOStageConfig) -> str:
    files = data_files(cfg)
    return common.inputs_hash(cfg, [files.train, files.eval])


def _trainer(cfg: DPOStageConfig, loaded, peft_config, train_ds, eval_ds):
    """The TRL trainer for the chosen loss."""
    callbacks = common.stage_callbacks(cfg, cfg.loss)
    kwargs = dict(model=loaded.model, train_dataset=train_ds, eval_dataset=eval_ds,
                  processing_class=loaded.tokenizer, peft_config=peft_config, callbacks=callbacks)
    if cfg.loss == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = common.make_trl_config(DPOConfig, cfg, loaded.device, beta=cfg.beta, max_length=cfg.max_length,
                                      loss_type=[cfg.dpo_loss_type])
        return DPOTrainer(ref_model=None, args=args, **kwargs)
    if cfg.loss == "kto":
        from trl import KTOConfig, KTOTrainer

        args = common.make_trl_config(KTOConfig, cfg, loaded.device, beta=cfg.beta, max_length=cfg.max_length,
                                      desirable_weight=cfg.desirable_weight,
                                      undesirable_weight=cfg.undesirable_weight)
        return KTOTrainer(ref_model=None, args=args, **kwargs)
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    args = common.make_trl_config(ORPOConfig, cfg, loaded.device, beta=cfg.beta, max_length=cfg.max_length)
    return ORPOTrainer(args=args, **kwargs)


def run(cfg: DPOStageConfig) -> Path:
    started = time.monotonic()
    files = data_files(cfg)
    kind = data_kind(cfg)
    keep = ["prompt", "completion", "label"] if kind == "kto" else ["prompt", "chosen", "rejected"]
    train_rows, train_report = common.load_rows(files.train, kind, bad_rows=cfg.bad_rows,
                                                max_samples=cfg.max_samples, keep=keep)
    eval_rows, eval_report = common.load_eval_rows(files.eval, kind, bad_rows=cfg.bad_rows, keep=keep)
    if kind == "kto":
        labels = {label: sum(1 for r in train_rows if r["label"] is label) for label in (True, False)}
        common.log(cfg.loss, f"KTO 样本：好 {labels[True]}，坏 {labels[False]}；评估 {len(eval_rows)}")
        if not labels[True] or not labels[False]:
            common.log(cfg.loss, "警告：只有一种标签，KTO 只能朝一个方向推动模型")
    else:
        common.log(cfg.loss, f"偏好对：训练 {len(train_rows)}，评估 {len(eval_rows)}（loss={cfg.loss}）")
    d = digest(cfg)
    common.prepare_output_dir(cfg.output_dir)

    loaded, peft_config = common.load_for_training(cfg, padding_side="right")
    trainer = _trainer(cfg, loaded, peft_config, common.to_dataset(train_rows),
                       common.to_dataset(eval_rows) if eval_rows else None)
    trainable, total = common.count_parameters(trainer.model)
    reference = "无（ORPO）" if cfg.loss == "orpo" else ("继续训练的适配器的冻结副本" if cfg.adapter else "基座模型")
    common.log(cfg.loss, f"可训练参数 {trainable:,} / {total:,}；参考模型：{reference}")
    result = trainer.train()
    metrics = common.train_metrics(result, trainer, len(eval_rows), cfg.eval_at_end)
    data = {"kind": kind, "train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else None}
    out = common.save_stage_output(trainer.model, loaded.tokenizer, cfg, stage=f"{STAGE}:{cfg.loss}",
                                   loaded=loaded, data=data, metrics=metrics, manifest=files.manifest,
                                   started=started, digest=d, extra={"reference": reference})
    common.log(cfg.loss, f"完成：适配器已保存到 {out}（{time.monotonic() - started:.1f} 秒）")
    common.free_memory(trainer, loaded)
    return out


def main(argv=None) -> int:
    return common.cli(run, DPOStageConfig, argv, prog="python -m train.dpo",
                      description="DPO/KTO/ORPO：在临床评分得到的偏好数据上用 LoRA/QLoRA 优化")


if __name__ == "__main__":
    raise SystemExit(main())
