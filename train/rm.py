"""Reward model (RM): a sequence classifier with one output, LoRA, trained on the preference pairs.

    python -m train.rm --model demo --data exports/NAME --output-dir runs/rm --max-steps 50

Data: trl/dpo_train.jsonl (and dpo_eval.jsonl) of an export folder, or a JSONL file of
{"prompt": [messages ending with user], "chosen": [assistant msg], "rejected": [assistant msg]}.
The base is loaded through mvp.model.loader as AutoModelForSequenceClassification(num_labels=1): its new
`score` head is trained and saved with the LoRA adapter (peft task SEQ_CLS), so
`load_model(ModelSpec(base, adapter=OUT), model_class="seq_cls")` gives the reward model back; the
RL stage and the evaluation use it that way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from train import common
from train.common import StageConfig

STAGE = "rm"


@dataclass
class RMStageConfig(StageConfig):
    learning_rate: float = field(default=1e-4, metadata={"help": "学习率"})
    center_rewards_coefficient: float | None = field(default=None, metadata={"help": "把奖励拉向 0 的辅助损失系数（TRL 推荐 0.01）；不设则不用"})

    def __post_init__(self) -> None:
        common.check_stage_config(self)


def data_files(cfg: RMStageConfig) -> common.DataFiles:
    return common.resolve_data(cfg.data, cfg.eval_data, "dpo")


def digest(cfg: RMStageConfig) -> str:
    files = data_files(cfg)
    return common.inputs_hash(cfg, [files.train, files.eval])


def run(cfg: RMStageConfig) -> Path:
    started = time.monotonic()
    files = data_files(cfg)
    keep = ["prompt", "chosen", "rejected"]
    train_rows, train_report = common.load_rows(files.train, "dpo", bad_rows=cfg.bad_rows,
                                                max_samples=cfg.max_samples, keep=keep)
    eval_rows, eval_report = common.load_eval_rows(files.eval, "dpo", bad_rows=cfg.bad_rows, keep=keep)
    common.log(STAGE, f"偏好对：训练 {len(train_rows)}，评估 {len(eval_rows)}")
    d = digest(cfg)
    common.prepare_output_dir(cfg.output_dir)

    from trl import RewardConfig, RewardTrainer

    loaded, peft_config = common.load_for_training(cfg, model_class="seq_cls", task_type="SEQ_CLS",
                                                   padding_side="right")
    args = common.make_trl_config(RewardConfig, cfg, loaded.device, max_length=cfg.max_length,
                                  center_rewards_coefficient=cfg.center_rewards_coefficient)
    trainer = RewardTrainer(
        model=loaded.model,
        args=args,
        train_dataset=common.to_dataset(train_rows),
        eval_dataset=common.to_dataset(eval_rows) if eval_rows else None,
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
        callbacks=common.stage_callbacks(cfg, STAGE),
    )
    # RewardTrainer filters out pairs longer than max_length: count them instead of losing them quietly.
    too_long = len(train_rows) - len(trainer.train_dataset)
    if too_long:
        common.log(STAGE, f"警告：{too_long} 个偏好对超过 max_length={cfg.max_length}，RewardTrainer 不用它们")
    if len(trainer.train_dataset) == 0:
        raise common.DataError(f"所有偏好对都超过 max_length={cfg.max_length} 个 token：请调大 --max-length")
    train_report.rows_used -= too_long
    trainable, total = common.count_parameters(trainer.model)
    common.log(STAGE, f"可训练参数 {trainable:,} / {total:,}（{loaded.device}，量化 {loaded.quantization}）")
    result = trainer.train()
    metrics = common.train_metrics(result, trainer, len(eval_rows), cfg.eval_at_end)
    data = {"train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else None,
            "train_too_long": too_long}
    out = common.save_stage_output(trainer.model, loaded.tokenizer, cfg, stage=STAGE, loaded=loaded, data=data,
                                   metrics=metrics, manifest=files.manifest, started=started, digest=d,
                                   extra={"model_class": "seq_cls"})
    common.log(STAGE, f"完成：奖励模型适配器已保存到 {out}（{time.monotonic() - started:.1f} 秒）")
    common.free_memory(trainer, loaded)
    return out


def main(argv=None) -> int:
    return common.cli(run, RMStageConfig, argv, prog="python -m train.rm",
                      description="RM：在偏好对上用 LoRA 训练奖励模型（序列分类，一个输出）")


if __name__ == "__main__":
    raise SystemExit(main())
