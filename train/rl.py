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
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from train import common
from train.common import StageConfig

STAGE = "rl"
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
        common.check_stage_config(self)
        if self.algorithm not in ALGORITHMS:
            raise common.ConfigError(f"algorithm: {self.algorithm!r} 无效，可选 {', '.join(ALGORITHMS)}")
        if not self.reward_model:
            raise common.ConfigError("reward_model: 必须给出奖励模型适配器文件夹（先运行 python -m train.rm）")
        if self.prompts_from not in PROMPT_SOURCES:
            raise common.ConfigError(f"prompts_from: {self.prompts_from!r} 无效，可选 {', '.join(PROMPT_SOURCES)}")
        if self.num_generations < 2:
            raise common.ConfigError("num_generations: 至少为 2（每个提示的回复要相互比较）")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise common.ConfigError(
                f"per_device_train_batch_size × gradient_accumulation_steps = {batch} 必须是 "
                f"num_generations = {self.num_generations} 的倍数"
            )
        if self.max_completion_length <= 0 or self.temperature <= 0 or self.beta < 0 or self.safety_penalty < 0:
            raise common.ConfigError("max_completion_length、temperature 必须大于 0；beta、safety_penalty 不能为负")


def data_file(cfg: RLStageConfig) -> Path:
    path = Path(cfg.data)
    if path.is_dir():
        return common.resolve_data(cfg.data, None, cfg.prompts_from).train
    return common.resolve_data(cfg.data, None, "prompt").train


def digest(cfg: RLStageConfig) -> str:
    return common.inputs_hash(cfg, [data_file(cfg)],
                              extra={"reward_model": common.adapter_identity(cfg.reward_model)})


def load_prompts(cfg: RLStageConfig) -> tuple[list[dict], dict]:
    """Distinct prompts ([system?] user ... user), each once; bad rows refused or counted."""
    path = data_file(cfg)
    rows, report = common.load_rows(path, "prompt", bad_rows=cfg.bad_rows, keep=["prompt"])
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
        raise common.ConfigError(f"reward_model: {cfg.reward_model} 不是奖励模型适配器文件夹（先运行 train.rm）")
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


def run(cfg: RLStageConfig) -> Path:
    started = time.monotonic()
    prompts, data_info = load_prompts(cfg)
    common.log(STAGE, f"提示 {len(prompts)} 个（来自 {data_info['file']}），每个采样 {cfg.num_generations} 条")
    reward_funcs, weights = [], []
    safety = None
    if cfg.safety_penalty > 0:
        safety = safety_reward()
        if safety is None:
            raise common.ConfigError("safety_penalty: 需要 mvp.safety 模块（screen_reply），当前不存在；请设为 0")
    d = digest(cfg)
    common.prepare_output_dir(cfg.output_dir)

    loaded, peft_config = common.load_for_training(cfg, padding_side="left")
    rm_model, rm_tokenizer = load_reward_model(cfg, loaded.device)
    reward_funcs.append(rm_model)
    weights.append(1.0)
    processing = [rm_tokenizer]
    if safety is not None:
        reward_funcs.append(safety)
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
    args = common.make_trl_config(ConfigCls, cfg, loaded.device, **stage_kwargs)
    trainer = TrainerCls(
        model=loaded.model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=common.to_dataset(prompts),
        processing_class=loaded.tokenizer,
        reward_processing_classes=processing,
        peft_config=peft_config,
        callbacks=common.stage_callbacks(cfg, STAGE),
    )
    trainable, total = common.count_parameters(trainer.model)
    common.log(STAGE, f"{cfg.algorithm.upper()}：可训练参数 {trainable:,} / {total:,}；奖励模型 {cfg.reward_model}")
    result = trainer.train()
    metrics = common.train_metrics(result, trainer, 0, False)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    if rewards:
        metrics["first_reward"], metrics["last_reward"] = rewards[0], rewards[-1]
    out = common.save_stage_output(trainer.model, loaded.tokenizer, cfg, stage=f"{STAGE}:{cfg.algorithm}",
                                   loaded=loaded, data={"prompts": data_info}, metrics=metrics,
                                   manifest=_manifest_for(cfg), started=started, digest=d,
                                   extra={"reward_model": str(Path(cfg.reward_model).resolve()),
                                          "safety_penalty": cfg.safety_penalty if safety else 0.0})
    common.log(STAGE, f"完成：适配器已保存到 {out}（{time.monotonic() - started:.1f} 秒）")
    common.free_memory(trainer, loaded, rm_model)
    return out


def _manifest_for(cfg: RLStageConfig) -> Path | None:
    path = Path(cfg.data)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "manifest.json", folder.parent / "manifest.json"):
        if candidate.is_file():
            return candidate
    return None


def main(argv=None) -> int:
    return common.cli(run, RLStageConfig, argv, prog="python -m train.rl",
                      description="RL：用训练好的奖励模型做 RLOO/GRPO 在线强化学习（LoRA）")


if __name__ == "__main__":
    raise SystemExit(main())
