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

from dataclasses import dataclass, field

from train import data as data_mod
from train import training
from train.config import ConfigError, StageConfig, check_stage_config, log
from train.registry import Stage, StageData, main_for

LOSSES = ("dpo", "kto", "orpo")
COLUMNS = {"kto": ["prompt", "completion", "label"], "dpo": ["prompt", "chosen", "rejected"]}


@dataclass
class DPOStageConfig(StageConfig):
    loss: str = field(default="dpo", metadata={"help": "dpo（成对偏好）| kto（单条好/坏，来自点赞和评分）| orpo（无需参考模型）"})
    beta: float = field(default=0.1, metadata={"help": "DPO/KTO 的 beta（偏离参考模型的代价）；ORPO 中为比值损失的权重 lambda"})
    learning_rate: float = field(default=5e-5, metadata={"help": "学习率（LoRA 上 DPO 常用 5e-6 到 5e-5）"})
    dpo_loss_type: str = field(default="sigmoid", metadata={"help": "DPO 的损失类型：sigmoid、ipo、hinge 等（TRL DPOConfig.loss_type）"})
    desirable_weight: float = field(default=1.0, metadata={"help": "KTO：好样本的损失权重（好坏数量悬殊时调整）"})
    undesirable_weight: float = field(default=1.0, metadata={"help": "KTO：坏样本的损失权重"})

    def __post_init__(self) -> None:
        check_stage_config(self)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: {self.loss!r} 无效，可选 {', '.join(LOSSES)}")
        if self.beta <= 0:
            raise ConfigError(f"beta: 必须大于 0，收到 {self.beta!r}")
        if self.loss == "kto" and self.per_device_train_batch_size < 2:
            raise ConfigError(
                "per_device_train_batch_size: KTO 需要每个设备至少 2 条样本（用同批其他样本估计 KL 项）"
            )


def data_kind(cfg: DPOStageConfig) -> str:
    return "kto" if cfg.loss == "kto" else "dpo"


def reference(cfg: DPOStageConfig) -> str:
    """What the frozen reference model is (recorded in train_config.json)."""
    return "无（ORPO）" if cfg.loss == "orpo" else ("继续训练的适配器的冻结副本" if cfg.adapter else "基座模型")


class DPOStage(Stage):
    name = "dpo"
    config_cls = DPOStageConfig
    help = "DPO/KTO/ORPO：在临床评分得到的偏好数据上用 LoRA/QLoRA 优化"

    def data_kind(self, cfg: DPOStageConfig) -> str:
        return data_kind(cfg)

    def label(self, cfg: DPOStageConfig) -> str:
        return f"{self.name}:{cfg.loss}"

    def log_name(self, cfg: DPOStageConfig) -> str:
        return cfg.loss

    def load_data(self, cfg: DPOStageConfig) -> StageData:
        kind = data_kind(cfg)
        files = data_mod.resolve_data(cfg.data, cfg.eval_data, kind)
        train_rows, train_report = data_mod.load_rows(files.train, kind, bad_rows=cfg.bad_rows,
                                                      max_samples=cfg.max_samples, keep=COLUMNS[kind])
        eval_rows, eval_report = data_mod.load_eval_rows(files.eval, kind, bad_rows=cfg.bad_rows, keep=COLUMNS[kind])
        if kind == "kto":
            labels = {label: sum(1 for r in train_rows if r["label"] is label) for label in (True, False)}
            log(cfg.loss, f"KTO 样本：好 {labels[True]}，坏 {labels[False]}；评估 {len(eval_rows)}")
            if not labels[True] or not labels[False]:
                log(cfg.loss, "警告：只有一种标签，KTO 只能朝一个方向推动模型")
        else:
            log(cfg.loss, f"偏好对：训练 {len(train_rows)}，评估 {len(eval_rows)}（loss={cfg.loss}）")
        info = {"kind": kind, "train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else None}
        return StageData(train_rows, eval_rows, info, manifest=files.manifest,
                         extra={"reference": reference(cfg)})

    def describe(self, cfg, loaded, trainable: int, total: int) -> str:
        return f"可训练参数 {trainable:,} / {total:,}；参考模型：{reference(cfg)}"

    def make_trainer(self, cfg: DPOStageConfig, loaded, peft_config, data: StageData, callbacks: list):
        """The TRL trainer for the chosen loss."""
        kwargs = dict(model=loaded.model, train_dataset=data_mod.to_dataset(data.train_rows),
                      eval_dataset=data_mod.to_dataset(data.eval_rows) if data.eval_rows else None,
                      processing_class=loaded.tokenizer, peft_config=peft_config, callbacks=callbacks)
        if cfg.loss == "dpo":
            from trl import DPOConfig, DPOTrainer

            args = training.make_trl_config(DPOConfig, cfg, loaded.device, beta=cfg.beta,
                                            max_length=cfg.max_length, loss_type=[cfg.dpo_loss_type])
            return DPOTrainer(ref_model=None, args=args, **kwargs)
        if cfg.loss == "kto":
            from trl import KTOConfig, KTOTrainer

            args = training.make_trl_config(KTOConfig, cfg, loaded.device, beta=cfg.beta,
                                            max_length=cfg.max_length, desirable_weight=cfg.desirable_weight,
                                            undesirable_weight=cfg.undesirable_weight)
            return KTOTrainer(ref_model=None, args=args, **kwargs)
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = training.make_trl_config(ORPOConfig, cfg, loaded.device, beta=cfg.beta, max_length=cfg.max_length)
        return ORPOTrainer(args=args, **kwargs)


STAGE = DPOStage()
run = STAGE.run
digest = STAGE.digest


def main(argv=None) -> int:
    return main_for(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
