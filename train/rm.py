"""Reward model (RM): a sequence classifier with one output, LoRA, trained on the preference pairs.

    python -m train.rm --model demo --data exports/NAME --output-dir runs/rm --max-steps 50

Data: trl/dpo_train.jsonl (and dpo_eval.jsonl) of an export folder, or a JSONL file of
{"prompt": [messages ending with user], "chosen": [assistant msg], "rejected": [assistant msg]}.
The base is loaded through mvp.model.loader as AutoModelForSequenceClassification(num_labels=1): its new
`score` head is trained and saved with the LoRA adapter (peft task SEQ_CLS), so
`load_model(ModelSpec(base, adapter=OUT), model_class="seq_cls")` gives the reward model back; the
RL stage and the evaluation use it that way. The run itself is `train.registry.run_stage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from train import data as data_mod
from train import training
from train.config import DataError, StageConfig, check_stage_config, log
from train.registry import Stage, StageData, main_for

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


@dataclass
class RMStageConfig(StageConfig):
    learning_rate: float = field(default=1e-4, metadata={"help": "学习率"})
    center_rewards_coefficient: float | None = field(default=None, metadata={"help": "把奖励拉向 0 的辅助损失系数（TRL 推荐 0.01）；不设则不用"})

    def __post_init__(self) -> None:
        check_stage_config(self)


class RMStage(Stage):
    name = "rm"
    config_cls = RMStageConfig
    policy = False  # a separate reward model on the base, used by rl and the evaluation
    makes_reward_model = True
    model_class = "seq_cls"
    task_type = "SEQ_CLS"
    saved_what = "奖励模型适配器"
    help = "RM：在偏好对上用 LoRA 训练奖励模型（序列分类，一个输出）"

    def data_kind(self, cfg) -> str:
        return "dpo"

    def load_data(self, cfg: RMStageConfig) -> StageData:
        files = data_mod.resolve_data(cfg.data, cfg.eval_data, "dpo")
        train_rows, train_report = data_mod.load_rows(files.train, "dpo", bad_rows=cfg.bad_rows,
                                                      max_samples=cfg.max_samples, keep=PAIR_COLUMNS)
        eval_rows, eval_report = data_mod.load_eval_rows(files.eval, "dpo", bad_rows=cfg.bad_rows,
                                                         keep=PAIR_COLUMNS)
        log(self.name, f"偏好对：训练 {len(train_rows)}，评估 {len(eval_rows)}")
        info = {"train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else None}
        return StageData(train_rows, eval_rows, info, manifest=files.manifest, extra={"model_class": "seq_cls"})

    def make_trainer(self, cfg: RMStageConfig, loaded, peft_config, data: StageData, callbacks: list):
        from trl import RewardConfig, RewardTrainer

        args = training.make_trl_config(RewardConfig, cfg, loaded.device, max_length=cfg.max_length,
                                        center_rewards_coefficient=cfg.center_rewards_coefficient)
        trainer = RewardTrainer(
            model=loaded.model,
            args=args,
            train_dataset=data_mod.to_dataset(data.train_rows),
            eval_dataset=data_mod.to_dataset(data.eval_rows) if data.eval_rows else None,
            processing_class=loaded.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        # RewardTrainer filters out pairs longer than max_length: count them instead of losing them quietly.
        too_long = len(data.train_rows) - len(trainer.train_dataset)
        if too_long:
            log(self.name, f"警告：{too_long} 个偏好对超过 max_length={cfg.max_length}，RewardTrainer 不用它们")
        if len(trainer.train_dataset) == 0:
            raise DataError(f"所有偏好对都超过 max_length={cfg.max_length} 个 token：请调大 --max-length")
        data.info["train"]["rows_used"] -= too_long
        data.info["train_too_long"] = too_long
        return trainer


STAGE = RMStage()
run = STAGE.run
digest = STAGE.digest


def main(argv=None) -> int:
    return main_for(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
