"""The optional model check: ask the serving engine to classify a client message.

What it is for: a third detection layer through the same engine that writes replies (mvp/model).
The prompt is built from `category_info` in config/safety_rules.yaml (a new category needs no code);
`parse_model_answer` accepts JSON or plain words, using each category's aliases. Its result is
combined with the other layers as a union (`mvp.safety.combine`): it can add, never remove.

    from mvp import safety
    det = safety.combine(safety.detect(text), safety.model_check(text, engine))
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from mvp.safety.rules import SafetyError

MODEL_CHECK_MAX_NEW_TOKENS = 48
MODEL_ANSWER_MAX_CHARS = 400      # the part of a model answer that is parsed
_EVIDENCE_SPAN = 40

_NONE_ANSWER = re.compile(r"^\W*(无|没有|否|none|null|no|\[\])\W*$", re.IGNORECASE)
_ALIAS_NEGATION = re.compile(r"(无|(不|没有|非|未|否|not|no)\s?(属于|是|涉及|包含|存在|含有|有|符合)?)\W{0,2}$",
                             re.IGNORECASE)


def _rules(rules=None):
    from mvp.safety.detect import default_ruleset
    return rules or default_ruleset()


def model_check_prompt(rules=None) -> str:
    """The classifier prompt, one line per category of the rules file."""
    lines = [f"{info.id}：{info.description}" for info in _rules(rules).info.values()]
    return ("你是心理咨询平台的安全分类器。阅读来访者的一条消息，判断其中是否包含以下风险，可以多选：\n"
            + "\n".join(lines) + "\n"
            "成语和夸张（如“累死了”“笑死我了”）、明确的否定（如“我从没想过自杀”）、新闻书籍电影或专业学习中的讨论都不算风险。\n"
            '只输出一行 JSON，例如 {"categories": ["suicide"]}；没有风险时输出 {"categories": []}。')


def _aliases(rules=None) -> list[tuple[str, str]]:
    pairs = [(alias, info.id) for info in _rules(rules).info.values() for alias in info.aliases]
    return sorted(pairs, key=lambda p: -len(p[0]))


def _default_model_params() -> Any:
    try:
        from mvp.model.engine import GenerationParams  # lazy: the engine is optional for this module
    except ImportError as exc:
        raise SafetyError("model_check needs mvp.model.engine.GenerationParams; pass params= explicitly "
                          f"or install the engine ({exc})") from None
    kwargs: dict[str, Any] = {"max_new_tokens": MODEL_CHECK_MAX_NEW_TOKENS}
    names = {f.name for f in dataclasses.fields(GenerationParams)} if dataclasses.is_dataclass(GenerationParams) else set()
    if "do_sample" in names:
        kwargs["do_sample"] = False
    if "seed" in names:
        kwargs["seed"] = 0
    if "temperature" in names and "do_sample" not in names:
        try:
            return GenerationParams(**kwargs, temperature=0.0)
        except (TypeError, ValueError):
            pass
    return GenerationParams(**kwargs)


def parse_model_answer(answer: str, rules=None) -> tuple[str, ...]:
    """Categories named in a classifier answer: JSON first, then keywords that are not negated."""
    order = tuple(_rules(rules).info)
    aliases = _aliases(rules)
    answer = answer[:MODEL_ANSWER_MAX_CHARS]
    found: list[str] = []
    m = re.search(r"\{[^{}]*\}", answer)
    if m:
        try:
            obj = json.loads(m.group())
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "categories" in obj:
            items = obj["categories"]
            items = [items] if isinstance(items, str) else items if isinstance(items, list) else []
            for item in items:
                item = str(item).strip().lower()
                found += [cat for alias, cat in aliases if alias in item]
            return tuple(c for c in order if c in found)
    if _NONE_ANSWER.match(answer.strip()):
        return ()
    lowered = answer.lower()
    for alias, cat in aliases:
        for hit in re.finditer(re.escape(alias), lowered):
            if not _ALIAS_NEGATION.search(lowered[max(0, hit.start() - 6):hit.start()]):
                found.append(cat)
    return tuple(c for c in order if c in found)


def model_check(text: str, engine: Any, params: Any = None, rules=None):
    """Ask the engine (anything with `generate(messages, params)` returning `.text`) to classify `text`."""
    from mvp.safety.detect import Detection

    messages = [{"role": "system", "content": model_check_prompt(rules)}, {"role": "user", "content": text}]
    result = engine.generate(messages, params if params is not None else _default_model_params())
    answer = getattr(result, "text", result)
    answer = answer if isinstance(answer, str) else str(answer)
    categories = parse_model_answer(answer, rules)
    snippet = " ".join(answer.split())[:_EVIDENCE_SPAN]
    return Detection(categories, tuple(f"model.{c}:{snippet}" for c in categories))


MODEL_CHECK_TIMEOUT_S = 3.0
_POOL = None


def model_check_bounded(text: str, engine: Any, params: Any = None, rules=None,
                        timeout_s: float = MODEL_CHECK_TIMEOUT_S):
    """`model_check` that never blocks a message for long nor raises: after `timeout_s` or on any
    error it returns a Detection without categories whose evidence says why ("model.timeout",
    "model.error:..."), so `combine` keeps what the other layers found and the message goes on."""
    global _POOL
    from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

    from mvp.safety.detect import Detection

    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="safety-model-check")
    future = _POOL.submit(model_check, text, engine, params, rules)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        future.cancel()
        return Detection((), ("model.timeout",))
    except Exception as exc:  # noqa: BLE001 - the model check is optional: its failure never blocks
        return Detection((), (f"model.error:{type(exc).__name__}",))
