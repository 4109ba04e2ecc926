"""Scoring one screening answer 0-3: the model scorer, cross-checked by the rule scorer.

- `score_model()` asks a model, through `engine.generate(messages, params)`, to classify the answer
  (`build_model_messages` is the prompt, `parse_model_score` reads the reply).
- `score_answer()` combines it with `score_rules()` (rules.py): disagreement, a missing score or low
  confidence marks the item `needs_review` for the clinician; a failing engine falls back to the rules.

The engine is whatever `mvp.model.factory.build_engine` made (or a test double); this module imports
mvp.model only inside `score_model`, so the rules work without torch.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from mvp.assessment.instruments import Instrument, Item, ItemScore
from mvp.assessment.rules import score_rules

# Below LOW_CONFIDENCE a scored item is vague (follow-up, review).
LOW_CONFIDENCE = 0.6
# Model scoring: we have no probabilities, so a parsed answer gets a fixed confidence.
MODEL_CONFIDENCE = 0.7
DISAGREEMENT_CONFIDENCE = 0.5
RULE_TRUST = 0.8  # on disagreement, rules at least this sure win over the model
MODEL_MAX_NEW_TOKENS = 8
METHODS = ("rules", "model", "model+rules", "none")  # ItemScore.method values


MODEL_SYSTEM_PROMPT = "你是心理测评的评分助手。请根据来访者的回答，判断问卷条目所描述的情况在过去两周出现的频率。"
_OPTION_WORDS = (("几乎每天", 3), ("一半以上", 2), ("好几天", 1), ("完全不会", 0))
DEFAULT_OPTIONS: tuple[tuple[int, str], ...] = ((0, "完全不会"), (1, "好几天"), (2, "一半以上的天数"), (3, "几乎每天"))


def build_model_messages(answer: str, item: Item, instrument: Instrument | None = None) -> list[dict]:
    """The classification prompt as role/content messages."""
    options = instrument.options if instrument else DEFAULT_OPTIONS
    timeframe = instrument.timeframe if instrument else "过去两周"
    lines = [f"问卷条目：{item.text}", f"时间范围：{timeframe}", f"来访者的回答：{answer.strip()}", "选项："]
    lines += [f"{score} = {label}" for score, label in options]
    lines.append("只回答一个数字 0-3。")
    return [{"role": "system", "content": MODEL_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def parse_model_score(text: str) -> int | None:
    """First standalone digit 0-3 in the model's reply, else an option word, else None."""
    m = re.search(r"(?<!\d)[0-3](?!\d)", text or "")
    if m:
        return int(m.group())
    for word, score in _OPTION_WORDS:
        if word in (text or ""):
            return score
    return None


def score_model(answer: str, item: Item, engine: Any, instrument: Instrument | None = None) -> ItemScore | None:
    """Ask the model through `engine.generate(messages, params)`; None when the reply has no score."""
    from mvp.model.engine import GenerationParams  # lazy: keeps this module importable without torch

    params = GenerationParams(temperature=0.0, max_new_tokens=MODEL_MAX_NEW_TOKENS)
    reply = engine.generate(build_model_messages(answer, item, instrument), params)
    text = str(getattr(reply, "text", reply)).strip()
    score = parse_model_score(text)
    if score is None:
        return None
    return ItemScore(score, "model", MODEL_CONFIDENCE, f"模型输出“{text[:20]}”→{score}")


def score_answer(answer: str, instrument: Instrument, item_no: int, engine: Any = None) -> ItemScore:
    """Score one answer: the model (when an engine is given) cross-checked by the rules.

    needs_review is set when the two disagree, when either gives no score, or when confidence is
    below LOW_CONFIDENCE. A failing engine falls back to the rules (and is marked for review).
    """
    item = instrument.item(item_no)
    rules = score_rules(answer, instrument, item)
    if engine is None:
        return replace(rules, needs_review=rules.score is None or rules.confidence < LOW_CONFIDENCE)
    try:
        model = score_model(answer, item, engine, instrument)
    except Exception as exc:  # noqa: BLE001 - any backend failure must leave a usable rule score
        model, rules = None, replace(rules, evidence=f"{rules.evidence}；模型评分失败：{type(exc).__name__}")
    if model is None and rules.score is None:
        return ItemScore(None, "none", 0.0, f"{rules.evidence}；模型无法判断", needs_review=True)
    if model is None:
        return replace(rules, evidence=f"{rules.evidence}；模型无法判断", needs_review=True)
    if rules.score is None:
        return replace(model, confidence=DISAGREEMENT_CONFIDENCE, needs_review=True)
    evidence = f"{model.evidence}；规则：{rules.evidence}"
    if model.score == rules.score:
        confidence = max(model.confidence, rules.confidence)
        return ItemScore(rules.score, "model+rules", confidence, evidence,
                         needs_review=rules.confidence < LOW_CONFIDENCE)
    use_rules = rules.confidence >= RULE_TRUST
    return ItemScore(rules.score if use_rules else model.score, "rules" if use_rules else "model",
                     DISAGREEMENT_CONFIDENCE, f"模型与规则不一致：{evidence}", needs_review=True)
