"""Evaluate a new model version against its parent on the export's eval split; print a table, write JSON.

    python -m train.evaluate --base demo --adapter runs/demo/dpo --parent-adapter runs/prev/dpo \
        --data exports/NAME --reward-model runs/demo/rm --out runs/demo/eval.json
    python -m train.evaluate --base demo --adapter runs/demo/sft --data exports/NAME   # parent = the base

Metrics, for the new version and its parent (base + --parent-adapter, or the bare base):
- perplexity on the eval SFT conversations, over assistant tokens only;
- preference accuracy: how often log p(chosen) > log p(rejected) on the eval DPO pairs;
- implicit-reward preference accuracy of the new version RELATIVE TO THE PARENT as reference (the
  DPO view): [log p_new(c) - log p_parent(c)] - [log p_new(r) - log p_parent(r)] > 0;
- reward-model score (with --reward-model): the mean score of each version's greedy replies to the
  eval prompts. It is IN-RUN: the reward model was trained in the same run (and RL optimised against
  it), so it is not a held-out measure; the fixed set (train/benchmark.py) and the release gate
  (train/gate.py) are.
Small eval splits are flagged (train/noise.py): with 14 pairs an accuracy's 95 % interval is +-0.26.

    python -m train.evaluate --ranking --db feedback.db   # Bradley–Terry ranking of all versions (train/ranking.py)
The human side of the same question is the app's blind arena win rate between the two versions.
Samples longer than --max-length tokens are skipped and counted, never cut from the left (that
would drop the system prompt).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mvp.model.loader import check_choice
from train import data as data_mod
from train import noise, outputs

REWARD_LABEL = "奖励模型得分（同一次运行训练，非保留评估）"
REWARD_NOTE = ("奖励模型得分是 in-run 的（同一次运行训练的奖励模型，不是独立的保留评估；RL 阶段正是针对它优化的），"
               "不能说明新版本更好；请看固定评估集和发布检查")
from train.config import (BAD_ROW_POLICIES, USER_ERRORS, ConfigError, DataError, check_model_choices, log,
                          parse_config)


@dataclass
class EvalConfig:
    base: str = field(default="demo", metadata={"help": "基座模型：demo、本地文件夹或模型 id"})
    adapter: str | None = field(default=None, metadata={"help": "新版本的 LoRA 适配器文件夹；不给则评估基座本身"})
    parent_adapter: str | None = field(default=None, metadata={"help": "父版本的适配器；不给则父版本是基座本身"})
    data: str = field(default="", metadata={"help": "导出文件夹（exports/NAME，读取 trl/sft_eval.jsonl 和 trl/dpo_eval.jsonl）"})
    split: str = field(default="eval", metadata={"help": "用哪个划分：eval（默认）或 train"})
    reward_model: str | None = field(default=None, metadata={"help": "rm 阶段输出的奖励模型适配器（同一基座）；不给则不算奖励分"})
    out: str | None = field(default=None, metadata={"help": "把结果写成这个 JSON 文件"})
    quantization: str = field(default="auto", metadata={"help": "auto|4bit|8bit|none（与服务时一致）"})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda"})
    max_samples: int = field(default=64, metadata={"help": "每类数据最多评估多少条"})
    max_length: int = field(default=1024, metadata={"help": "超过这个 token 数的样本跳过并计数"})
    max_new_tokens: int = field(default=64, metadata={"help": "奖励分：每条回复最多生成多少 token（贪心解码）"})
    bad_rows: str = field(default="refuse", metadata={"help": "格式错误的行：refuse 报错，skip 跳过并计数"})

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("data: 必须给出导出文件夹（exports/NAME）")
        if self.split not in ("eval", "train"):
            raise ConfigError(f"split: {self.split!r} 无效，可选 eval、train")
        check_model_choices(self)
        check_choice("bad_rows", self.bad_rows, BAD_ROW_POLICIES, ConfigError)
        for key in ("max_samples", "max_length", "max_new_tokens"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}: 必须大于 0")


# ---------------------------------------------------------------------------------------------
# Token-level scoring (any chat template that renders a prefix of the conversation as a prefix)


def _ids(tokenizer, messages, add_generation_prompt=False) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False,
                                              add_generation_prompt=add_generation_prompt))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the whole conversation and the [start, end) span of each assistant reply in them."""
    full = _ids(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _common_prefix(_ids(tokenizer, messages[:i], add_generation_prompt=True), full)
        end = _common_prefix(_ids(tokenizer, messages[:i + 1]), full)
        if end > start:
            spans.append((start, end))
    return full, spans


def token_logprobs(model, ids: list[int]):
    """log p(token t | tokens < t) for t = 1..len-1 (a 1-D tensor of len-1 values)."""
    import torch

    x = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=x).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])[:, 0]


def span_logprob(model, ids: list[int], spans: list[tuple[int, int]]) -> tuple[float, int]:
    """Sum of log-probs over the tokens inside spans, and how many tokens that is."""
    lp = token_logprobs(model, ids)
    total, count = 0.0, 0
    for start, end in spans:
        # token t is predicted at position t-1
        total += float(lp[max(start, 1) - 1:end - 1].sum())
        count += end - max(start, 1)
    return total, count


@dataclass
class ModelScores:
    nll: float = 0.0
    tokens: int = 0
    chosen: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)


def score_model(loaded, sft_rows, pairs, prompts, cfg: EvalConfig, label: str) -> ModelScores:
    """Perplexity terms, pair log-probs and greedy replies of one loaded model."""
    from mvp.model.engine import GenerationParams
    from mvp.model.factory import EngineSettings, build_engine

    scores = ModelScores()
    tok, model = loaded.tokenizer, loaded.model
    for row in sft_rows:
        ids, spans = assistant_spans(tok, row["messages"])
        lp, n = span_logprob(model, ids, spans)
        scores.nll -= lp
        scores.tokens += n
    for ids_c, span_c, ids_r, span_r in pairs:
        scores.chosen.append(span_logprob(model, ids_c, [span_c])[0])
        scores.rejected.append(span_logprob(model, ids_r, [span_r])[0])
    if prompts:
        engine = build_engine(EngineSettings(model=loaded.spec.model, adapter=loaded.spec.adapter), loaded=loaded)
        params = GenerationParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, repetition_penalty=1.1)
        for i, prompt in enumerate(prompts):
            scores.replies.append(engine.generate(prompt, params).text)
        log("evaluate", f"{label}：生成了 {len(prompts)} 条回复")
    return scores


# ---------------------------------------------------------------------------------------------


def _load_split(cfg: EvalConfig, kind: str):
    path = Path(cfg.data) / "trl" / f"{kind}_{cfg.split}.jsonl"
    rows, report = data_mod.load_eval_rows(path if path.is_file() else None, kind, bad_rows=cfg.bad_rows)
    return rows[:cfg.max_samples], (report.to_dict() if report else {"file": str(path), "missing": True})


def prepare(cfg: EvalConfig, tokenizer):
    """Eval conversations, tokenised pairs and prompts, with counts of what was skipped and why."""
    if not Path(cfg.data).is_dir():
        raise DataError(f"data: {cfg.data} 不是导出文件夹（应含 trl/sft_{cfg.split}.jsonl 等）")
    sft_rows, sft_report = _load_split(cfg, "sft")
    dpo_rows, dpo_report = _load_split(cfg, "dpo")
    if not sft_rows and not dpo_rows:
        raise DataError(f"{cfg.data}: {cfg.split} 划分里既没有 SFT 对话也没有偏好对，无法评估")
    too_long = {"sft": 0, "dpo": 0}
    kept_sft = []
    for row in sft_rows:
        if len(_ids(tokenizer, row["messages"])) > cfg.max_length:
            too_long["sft"] += 1
        else:
            kept_sft.append(row)
    pairs, prompts = [], []
    for row in dpo_rows:
        tokenised = []
        for key in ("chosen", "rejected"):
            ids, spans = assistant_spans(tokenizer, row["prompt"] + row[key])
            tokenised += [ids, spans[-1] if spans else (len(ids), len(ids))]
        if max(len(tokenised[0]), len(tokenised[2])) > cfg.max_length:
            too_long["dpo"] += 1
            continue
        pairs.append(tuple(tokenised))
        if row["prompt"] not in prompts:
            prompts.append(row["prompt"])
    info = {"split": cfg.split, "sft": sft_report, "dpo": dpo_report, "sft_used": len(kept_sft),
            "pairs_used": len(pairs), "prompts_used": len(prompts), "skipped_too_long": too_long}
    return kept_sft, pairs, prompts, info


def reward_scores(cfg: EvalConfig, prompts, replies_by_model: dict[str, list[str]]) -> dict[str, float]:
    import torch

    from mvp.model.loader import ModelSpec, load_model

    if not (Path(cfg.reward_model) / "adapter_config.json").is_file():
        raise ConfigError(f"reward_model: {cfg.reward_model} 不是奖励模型适配器文件夹")
    rm = load_model(ModelSpec(model=cfg.base, adapter=cfg.reward_model, quantization=cfg.quantization,
                              device=cfg.device), model_class="seq_cls")
    out = {}
    for name, replies in replies_by_model.items():
        values = []
        for prompt, reply in zip(prompts, replies):
            text = rm.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}],
                                                    tokenize=False)
            enc = rm.tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True,
                               max_length=cfg.max_length)
            with torch.inference_mode():
                values.append(float(rm.model(**{k: v.to(rm.model.device) for k, v in enc.items()}).logits[0, 0]))
        out[name] = sum(values) / len(values) if values else None
    outputs.free_memory(rm)
    return out


def _summary(s: ModelScores) -> dict:
    n = len(s.chosen)
    return {
        "perplexity": math.exp(s.nll / s.tokens) if s.tokens else None,
        "assistant_tokens": s.tokens,
        "preference_accuracy": (sum(c > r for c, r in zip(s.chosen, s.rejected)) / n) if n else None,
        "mean_logprob_margin": (sum(c - r for c, r in zip(s.chosen, s.rejected)) / n) if n else None,
    }


def run(cfg: EvalConfig) -> dict:
    from mvp.model.loader import ModelSpec, load_model

    started = time.monotonic()
    scores, loaded = {}, None
    info = None
    for name, adapter in (("new", cfg.adapter), ("parent", cfg.parent_adapter)):
        loaded = load_model(ModelSpec(model=cfg.base, adapter=adapter, quantization=cfg.quantization,
                                      device=cfg.device))
        if info is None:
            sft_rows, pairs, prompts, info = prepare(cfg, loaded.tokenizer)
            log("evaluate", f"评估数据：对话 {info['sft_used']}，偏好对 {info['pairs_used']}，"
                                   f"提示 {info['prompts_used']}（过长跳过 {info['skipped_too_long']}）")
        scores[name] = score_model(loaded, sft_rows, pairs, prompts if cfg.reward_model else [], cfg,
                                   "新版本" if name == "new" else "父版本")
        outputs.free_memory(loaded)
    new, parent = scores["new"], scores["parent"]
    result = {
        "base": cfg.base, "adapter": cfg.adapter, "parent_adapter": cfg.parent_adapter,
        "data": str(cfg.data), "data_info": info,
        "new": _summary(new), "parent": _summary(parent),
    }
    n = len(new.chosen)
    implicit = [(nc - pc) - (nr - pr) for nc, pc, nr, pr in zip(new.chosen, parent.chosen, new.rejected,
                                                                 parent.rejected)]
    result["implicit_preference_accuracy"] = (sum(x > 0 for x in implicit) / n) if n else None
    result["implicit_reward_margin"] = (sum(implicit) / n) if n else None
    if cfg.reward_model:
        rm = reward_scores(cfg, prompts, {"new": new.replies, "parent": parent.replies})
        result["new"]["reward_score"], result["parent"]["reward_score"] = rm["new"], rm["parent"]
        result["reward_model"] = cfg.reward_model
        result["reward_score_kind"] = "in-run"
        result["reward_score_note"] = REWARD_NOTE
        result["sample_replies"] = [{"prompt": p[-1]["content"], "new": a, "parent": b}
                                    for p, a, b in list(zip(prompts, new.replies, parent.replies))[:3]]
    result["elapsed_s"] = round(time.monotonic() - started, 2)
    result["created_at"] = outputs.utc_now()
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(result: dict) -> str:
    """The comparison as a plain-text table (new, parent, difference)."""
    rows = [("困惑度（助手 token，越低越好）", "perplexity"),
            ("偏好准确率 logp(chosen)>logp(rejected)", "preference_accuracy"),
            ("平均 logp 差（chosen-rejected）", "mean_logprob_margin"),
            (REWARD_LABEL, "reward_score")]
    lines = [f"{'指标':<40}{'新版本':>12}{'父版本':>12}{'差值':>12}"]
    for title, key in rows:
        a, b = result["new"].get(key), result["parent"].get(key)
        if key == "reward_score" and "reward_model" not in result:
            continue
        diff = a - b if isinstance(a, float) and isinstance(b, float) else None
        lines.append(f"{title:<40}{_fmt(a):>12}{_fmt(b):>12}{_fmt(diff):>12}")
    lines.append(f"{'隐式奖励偏好准确率（以父版本为参考）':<40}{_fmt(result['implicit_preference_accuracy']):>12}")
    lines.append(f"{'平均隐式奖励差':<40}{_fmt(result['implicit_reward_margin']):>12}")
    if "reward_model" in result:
        lines.append(f"注：{REWARD_NOTE}")
    info = result.get("data_info") or {}
    lines += [f"警告：{w}" for w in noise.split_warnings(
        None, {"偏好对": info.get("pairs_used", 0), "SFT 对话": info.get("sft_used", 0)})]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Used by the pipeline: evaluate only when the adapters, data or settings changed


def has_eval_data(export_dir: Path, split: str) -> bool:
    for kind in ("sft", "dpo"):
        path = export_dir / "trl" / f"{kind}_{split}.jsonl"
        if path.is_file() and any(line.strip() for line in open(path, encoding="utf-8")):
            return True
    return False


def run_if_changed(eval_cfg: EvalConfig, force: bool) -> dict:
    """run(), skipped (the earlier result returned) when eval.json was computed from the same adapters, data and settings."""
    files = sorted((Path(eval_cfg.data) / "trl").glob(f"*_{eval_cfg.split}.jsonl"))
    digest = data_mod.inputs_hash(
        evaluate_config_for_hash(eval_cfg), files,
        extra={"adapter": data_mod.adapter_identity(eval_cfg.adapter),
               "parent": data_mod.adapter_identity(eval_cfg.parent_adapter),
               "reward_model": data_mod.adapter_identity(eval_cfg.reward_model)})
    out = Path(eval_cfg.out)
    if not force and out.is_file():
        previous = json.loads(out.read_text(encoding="utf-8"))
        if previous.get("inputs_hash") == digest:
            log("evaluate", f"输入未变，沿用 {out}")
            return previous
    result = run(eval_cfg)
    result["inputs_hash"] = digest
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


@dataclass
class _EvalHashView:
    """EvalConfig as inputs_hash expects it (a `model` field; paths hashed separately by content)."""

    model: str
    settings: dict


def evaluate_config_for_hash(eval_cfg: EvalConfig) -> _EvalHashView:
    settings = {k: v for k, v in dataclasses.asdict(eval_cfg).items()
                if k not in ("base", "adapter", "parent_adapter", "reward_model", "out", "data")}
    return _EvalHashView(model=eval_cfg.base, settings=settings)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--ranking" in args:  # the ranking of all versions from the blind arena (train/ranking.py)
        from train import ranking

        return ranking.main([a for a in args if a != "--ranking"])
    try:
        cfg = parse_config(EvalConfig, argv, prog="python -m train.evaluate",
                                  description="新版本对父版本：困惑度、偏好准确率、隐式奖励、奖励模型得分")
        result = run(cfg)
    except USER_ERRORS as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    print(table(result))
    if cfg.out:
        print(f"\n结果已写入 {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
