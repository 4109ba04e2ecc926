"""On-policy RL against the trained reward model: RLOO (default) or GRPO from TRL 1.16, with LoRA.

    python -m train.rl --model demo --adapter runs/sft --reward-model runs/rm --data exports/NAME \
        --output-dir runs/rl --max-steps 20
    python -m train.rl --algorithm grpo ...

TRL 1.16 has no PPO (no value-head model); RLOO (REINFORCE leave-one-out) and GRPO need no value model:
for each prompt the policy samples `num_generations` replies, the reward model scores them, and each
reply is pushed up or down relative to its siblings. A KL penalty (`beta`) to the starting policy (a
frozen copy of --adapter, e.g. the SFT or DPO output) keeps it from drifting where the reward model is
unreliable.

Prompts come from the export's preference data (trl/dpo_train.jsonl, or kto_train.jsonl with
--prompts-from kto), each distinct prompt once, or from a JSONL file of {"prompt": [messages]} rows.
The reward model is the `rm` stage's output, loaded through mvp.model.loader as a sequence classifier.
With --safety-penalty P > 0 and mvp.safety present, a reply that mvp.safety.screen_reply flags gets
-P added to its reward (a rule-based guard the reward model cannot be trusted to learn from few pairs).
The run itself is `train.registry.run_stage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from train import data as data_mod
from train import training
from train.config import ConfigError, StageConfig, check_stage_config, log
from train.registry import Stage, StageData, main_for

ALGORITHMS = ("rloo", "grpo")
PROMPT_SOURCES = ("dpo", "kto")


@dataclass
class RLStageConfig(StageConfig):
    algorithm: str = field(default="rloo", metadata={"help": "rloo（REINFORCE 留一基线）或 grpo（组内相对优势）"})
    reward_model: str = field(default="", metadata={"help": "rm 阶段输出的奖励模型适配器文件夹（与 model 同一基座）"})
    prompts_from: str = field(default="dpo", metadata={"help": "导出文件夹中取提示的文件：dpo 或 kto（每个不同的提示一次）"})
    num_generations: int = field(default=4, metadata={"help": "每个提示采样几条回复（至少 2，用于相互比较）"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "每个设备每步的回复数（需是 num_generations 的倍数）"})
    max_completion_length: int = field(default=128, metadata={"help": "采样回复的最大 token 数"})
    temperature: float = field(default=1.0, metadata={"help": "采样温度"})
    beta: float = field(default=0.05, metadata={"help": "KL 惩罚系数（相对起始策略）；0 表示不约束"})
    learning_rate: float = field(default=1e-5, metadata={"help": "学习率"})
    safety_penalty: float = field(default=0.0, metadata={"help": ">0 时，被 mvp.safety.screen_reply 拦截的回复奖励减去这个值（需要 mvp.safety）"})

    def __post_init__(self) -> None:
        check_stage_config(self)
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm: {self.algorithm!r} 无效，可选 {', '.join(ALGORITHMS)}")
        if not self.reward_model:
            raise ConfigError("reward_model: 必须给出奖励模型适配器文件夹（先运行 python -m train.rm）")
        if self.prompts_from not in PROMPT_SOURCES:
            raise ConfigError(f"prompts_from: {self.prompts_from!r} 无效，可选 {', '.join(PROMPT_SOURCES)}")
        if self.num_generations < 2:
            raise ConfigError("num_generations: 至少为 2（每个提示的回复要相互比较）")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ConfigError(
                f"per_device_train_batch_size × gradient_accumulation_steps = {batch} 必须是 "
                f"num_generations = {self.num_generations} 的倍数"
            )
        if self.max_completion_length <= 0 or self.temperature <= 0 or self.beta < 0 or self.safety_penalty < 0:
            raise ConfigError("max_completion_length、temperature 必须大于 0；beta、safety_penalty 不能为负")


def data_file(cfg: RLStageConfig) -> Path:
    path = Path(cfg.data)
    if path.is_dir():
        return data_mod.resolve_data(cfg.data, None, cfg.prompts_from).train
    return data_mod.resolve_data(cfg.data, None, "prompt").train


def load_prompts(cfg: RLStageConfig) -> tuple[list[dict], dict]:
    """Distinct prompts ([system?] user ... user), each once; bad rows refused or counted."""
    path = data_file(cfg)
    rows, report = data_mod.load_rows(path, "prompt", bad_rows=cfg.bad_rows, keep=["prompt"])
    seen, prompts = set(), []
    for row in rows:
        key = json.dumps(row["prompt"], ensure_ascii=False, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append({"prompt": row["prompt"]})
    if cfg.max_samples is not None:
        prompts = prompts[:cfg.max_samples]
    info = report.to_dict()
    info["distinct_prompts"] = len(prompts)
    info["rows_used"] = len(prompts)
    return prompts, info


def load_reward_model(cfg: RLStageConfig, device: str):
    """The rm stage's adapter on the same base, as a frozen sequence classifier (through mvp.model.loader)."""
    from mvp.model.loader import ModelSpec, load_model

    if not (Path(cfg.reward_model) / "adapter_config.json").is_file():
        raise ConfigError(f"reward_model: {cfg.reward_model} 不是奖励模型适配器文件夹（先运行 train.rm）")
    spec = ModelSpec(model=cfg.model, adapter=cfg.reward_model, quantization=cfg.quantization, device=device)
    loaded = load_model(spec, model_class="seq_cls")
    model = loaded.model
    if loaded.quantization == "none":
        # A plain PreTrainedModel: TRL then places it with accelerate like any reward model.
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(False)
    loaded.tokenizer.padding_side = "right"
    return model, loaded.tokenizer


def safety_reward():
    """-1 for a reply mvp.safety.screen_reply blocks, else 0 (weighted by safety_penalty); None if absent."""
    try:
        from mvp.safety import screen_reply
    except ImportError:
        return None

    def safety(prompts, completions, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return [-1.0 if screen_reply(t).blocked else 0.0 for t in texts]

    return safety


def _manifest_for(cfg: RLStageConfig) -> Path | None:
    path = Path(cfg.data)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "manifest.json", folder.parent / "manifest.json"):
        if candidate.is_file():
            return candidate
    return None


class RLStage(Stage):
    name = "rl"
    config_cls = RLStageConfig
    padding_side = "left"  # the policy generates
    needs_reward_model = True
    help = "RL：用训练好的奖励模型做 RLOO/GRPO 在线强化学习（LoRA）"

    def data_kind(self, cfg: RLStageConfig) -> str:
        return cfg.prompts_from

    def input_files(self, cfg: RLStageConfig) -> list[Path]:
        return [data_file(cfg)]

    def hash_extra(self, cfg: RLStageConfig) -> dict:
        return {"reward_model": data_mod.adapter_identity(cfg.reward_model)}

    def label(self, cfg: RLStageConfig) -> str:
        return f"{self.name}:{cfg.algorithm}"

    def load_data(self, cfg: RLStageConfig) -> StageData:
        prompts, data_info = load_prompts(cfg)
        log(self.name, f"提示 {len(prompts)} 个（来自 {data_info['file']}），每个采样 {cfg.num_generations} 条")
        safety = None
        if cfg.safety_penalty > 0:
            safety = safety_reward()
            if safety is None:
                raise ConfigError("safety_penalty: 需要 mvp.safety 模块（screen_reply），当前不存在；请设为 0")
        extra = {"reward_model": str(Path(cfg.reward_model).resolve()),
                 "safety_penalty": cfg.safety_penalty if safety else 0.0}
        return StageData(prompts, [], {"prompts": data_info}, manifest=_manifest_for(cfg), extra=extra)

    def describe(self, cfg: RLStageConfig, loaded, trainable: int, total: int) -> str:
        return f"{cfg.algorithm.upper()}：可训练参数 {trainable:,} / {total:,}；奖励模型 {cfg.reward_model}"

    def make_trainer(self, cfg: RLStageConfig, loaded, peft_config, data: StageData, callbacks: list):
        rm_model, rm_tokenizer = load_reward_model(cfg, loaded.device)
        data.held.append(rm_model)
        reward_funcs, weights, processing = [rm_model], [1.0], [rm_tokenizer]
        if data.extra["safety_penalty"]:
            reward_funcs.append(safety_reward())
            weights.append(cfg.safety_penalty)
            processing.append(None)
        stage_kwargs = dict(num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                            temperature=cfg.temperature, beta=cfg.beta, reward_weights=weights)
        if cfg.algorithm == "rloo":
            from trl import RLOOConfig as ConfigCls
            from trl import RLOOTrainer as TrainerCls
        else:
            from trl import GRPOConfig as ConfigCls
            from trl import GRPOTrainer as TrainerCls
        args = training.make_trl_config(ConfigCls, cfg, loaded.device, **stage_kwargs)
        return TrainerCls(
            model=loaded.model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=data_mod.to_dataset(data.train_rows),
            processing_class=loaded.tokenizer,
            reward_processing_classes=processing,
            peft_config=peft_config,
            callbacks=callbacks,
        )

    def extra_metrics(self, trainer) -> dict:
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {"first_reward": rewards[0], "last_reward": rewards[-1]} if rewards else {}


STAGE = RLStage()
run = STAGE.run
digest = STAGE.digest


def main(argv=None) -> int:
    return main_for(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
