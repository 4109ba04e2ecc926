"""Session memory: a short 会谈摘要 that stands in for the turns that left the model's context.

Pure Python, no model and no store. The demo model cannot write a summary, so a deterministic
extractive one stands in: client sentences are split with jieba and sorted into topics by the words
they contain (presenting problem from the first client turns; key facts by topic: sleep, mood,
family, work/study, history, medication; what was agreed from the counsellor's proposals). A real
model writes the summary itself (`model_prompt` + `parse_model_summary`, the service runs the one
generation); the extractive state is kept next to it either way, so an update only ever processes
the turns newly dropped (`update`), never the whole history.

Risk facts are not extracted here: they come from the safety layer's flags (`risk_line`) and are
added to whatever summary the model gets (`for_model`), so that no correction can remove them.

    state = update(empty_state(), dropped_messages, first_turn=1)
    text = render(state)                       # bounded to MAX_SUMMARY_CHARS
    prompt_text = for_model(text, risk_line([(3, "自杀风险", "有时候觉得活着没意思")]))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

MAX_SUMMARY_CHARS = 420  # the summary the model gets, risk line excluded
MAX_SENTENCE_CHARS = 48
PROBLEM_TURNS = 2  # the presenting problem comes from the first client turns
PER_TOPIC = 2  # newest sentences kept per topic
MAX_AGREED = 2
MAX_RISK_FACTS = 4
# Topics and the words that put a sentence under them (a sentence goes to the topic with most hits).
TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sleep": ("睡眠", ("睡", "失眠", "入睡", "早醒", "醒", "做梦", "噩梦", "熬夜", "安眠")),
    "mood": ("情绪", ("难过", "焦虑", "抑郁", "低落", "烦躁", "紧张", "害怕", "哭", "没意思", "提不起", "压力", "崩溃", "孤独")),
    "family": ("家庭", ("父母", "爸", "妈", "家里", "家人", "老公", "老婆", "丈夫", "妻子", "孩子", "婚", "继母", "男朋友", "女朋友", "对象")),
    "work": ("学习/工作", ("工作", "上班", "老板", "同事", "领导", "学习", "考试", "学校", "成绩", "辞职", "失业", "加班", "高考", "考研", "读研", "导师", "实验", "论文", "毕业", "老师", "同学")),
    "history": ("既往史", ("以前", "之前", "小时候", "从小", "去年", "曾经", "住院", "诊断", "看过", "医院", "初中", "高中")),
    "medication": ("用药", ("药", "服用", "舍曲林", "氟西汀", "帕罗西汀", "剂量", "副作用")),
}
AGREED_WORDS = ("约定", "下次", "练习", "作业", "记录一下", "记下来", "布置", "计划", "我们可以试", "不妨试", "这周试")
SUMMARY_TITLE = "会谈摘要"
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")
_CLAUSE = re.compile(r"(?<=[，,])")
_SPACE = re.compile(r"\s+")
_jieba = None


def _cut(text: str) -> list[str]:
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return _jieba.lcut(text)


def empty_state() -> dict:
    """The extractive state of a session before any turn is summarised (JSON-serialisable)."""
    return {"problem": [], "facts": {topic: [] for topic in TOPICS}, "agreed": [], "turns": [0, 0]}


def sentences(text: str) -> list[str]:
    """Sentences of a message, each at most MAX_SENTENCE_CHARS (long ones are cut at a comma)."""
    out = []
    for part in _SENTENCE_END.split(text or ""):
        part = _SPACE.sub(" ", part).strip(" ，,。；;\n")
        if not part:
            continue
        while len(part) > MAX_SENTENCE_CHARS:
            clauses = [c for c in _CLAUSE.split(part) if c]
            head = ""
            for clause in clauses:
                if len(head) + len(clause) > MAX_SENTENCE_CHARS:
                    break
                head += clause
            head = head or part[:MAX_SENTENCE_CHARS]
            out.append(head.strip(" ，,"))
            part = part[len(head):].strip(" ，,")
        if part:
            out.append(part)
    return out


def topic_of(sentence: str) -> str | None:
    """The topic whose words the sentence's jieba tokens contain most often (None: no topic)."""
    tokens = _cut(sentence)
    best, hits = None, 0
    for topic, (_, words) in TOPICS.items():
        n = sum(1 for token in tokens for word in words if word in token)
        if n > hits:
            best, hits = topic, n
    return best


def _informative(sentence: str) -> int:
    """How much a sentence says: the number of distinct content tokens (two characters or more)."""
    return len({t for t in _cut(sentence) if len(t) >= 2})


def _push(items: list[str], sentence: str, limit: int) -> None:
    if sentence in items:
        return
    items.append(sentence)
    del items[:-limit]


def update(state: dict, messages: Sequence[dict], first_turn: int) -> dict:
    """A new state covering `messages` too: the dialogue messages newly dropped, in order, the first
    belonging to client turn `first_turn` (1-based). Only these messages are read."""
    state = {"problem": list(state.get("problem", [])), "agreed": list(state.get("agreed", [])),
             "facts": {t: list(state.get("facts", {}).get(t, [])) for t in TOPICS},
             "turns": list(state.get("turns") or [0, 0])}
    turn = first_turn - 1
    for message in messages:
        role, text = message.get("role"), message.get("content") or ""
        if role == "user":
            turn += 1
            said = [s for s in sentences(text) if len(s) >= 4]
            if turn <= PROBLEM_TURNS:
                # the client's first words: how they put the problem themselves
                for sentence in said:
                    if len(state["problem"]) < PROBLEM_TURNS and _informative(sentence) >= 3:
                        _push(state["problem"], sentence, PROBLEM_TURNS)
            for sentence in said:
                topic = topic_of(sentence)
                if topic is not None and sentence not in state["problem"]:
                    _push(state["facts"][topic], sentence, PER_TOPIC)
        elif role == "assistant":
            for sentence in sentences(text):
                if any(word in sentence for word in AGREED_WORDS) and not sentence.endswith(("？", "?")):
                    _push(state["agreed"], sentence, MAX_AGREED)
    if turn >= first_turn:
        start = state["turns"][0] or first_turn
        state["turns"] = [start, turn]
    return state


def render(state: dict, limit: int = MAX_SUMMARY_CHARS) -> str:
    """The state as a short Chinese summary, at most `limit` characters (older facts go first)."""
    lines = []
    if state.get("problem"):
        lines.append("主诉：" + "；".join(state["problem"]))
    facts = [f"{label}：" + "；".join(state["facts"][topic])
             for topic, (label, _) in TOPICS.items() if state.get("facts", {}).get(topic)]
    agreed = ["已约定：" + "；".join(state["agreed"])] if state.get("agreed") else []
    text = "\n".join(lines + facts + agreed)
    while len(text) > limit and facts:
        facts = [_shorten(line) for line in facts if _shorten(line)]
        text = "\n".join(lines + facts + agreed)
    return text[:limit]


def _shorten(line: str) -> str:
    """Drop the oldest sentence of a `label：a；b` line (the label alone is dropped)."""
    label, _, rest = line.partition("：")
    parts = rest.split("；")[1:]
    return f"{label}：" + "；".join(parts) if parts else ""


def extend(base: str, addition: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    """A clinician's (or the model's) summary with what later dropped turns added, bounded: the base
    text is kept first; the addition is cut when both do not fit."""
    base, addition = (base or "").strip(), (addition or "").strip()
    if not addition:
        return base[:limit]
    if not base:
        return addition[:limit]
    room = limit - len(base) - 1
    return base[:limit] if room < 12 else base + "\n" + addition[:room]


def risk_line(facts: Sequence[tuple[int | None, str, str]]) -> str:
    """The summary's risk line from the safety layer's flags: (client turn or None, category name,
    quote). Empty when the session has no risk flag."""
    parts = []
    for turn, name, quote in list(facts)[:MAX_RISK_FACTS]:
        where = f"第 {turn} 轮" if turn else "本次会谈"
        parts.append(f"{where}表达过{name}" + (f"（「{quote}」）" if quote else ""))
    return ("风险（安全标记，始终保留）：" + "；".join(parts)) if parts else ""


def for_model(text: str, risk: str, limit: int | None = None) -> str | None:
    """What the model gets: the risk line first (never cut), then the summary text, cut to `limit`
    characters when given (None when both are empty)."""
    text = (text or "").strip()
    if limit is not None and len(text) > limit:
        text = text[:limit].rstrip() + "…"
    parts = [p for p in ((risk or "").strip(), text) if p]
    return "\n".join(parts) or None


def turn_range(state_or_turns) -> tuple[int, int]:
    turns = state_or_turns.get("turns") if isinstance(state_or_turns, dict) else state_or_turns
    first, last = (list(turns or [0, 0]) + [0, 0])[:2]
    return int(first or 0), int(last or 0)


# -- the model-written summary (a real model; the service runs the generation) ----------------------
MODEL_SUMMARY_MAX_NEW_TOKENS = 200
_LABELS = ("主诉", "睡眠", "情绪", "家庭", "工作", "学习", "既往", "用药", "风险", "约定", "已约定", "要点")


def model_prompt(previous: str, messages: Sequence[dict]) -> list[dict]:
    """Messages asking the model to update the summary with the newly dropped turns."""
    dialogue = "\n".join(f"{'来访者' if m['role'] == 'user' else '咨询师'}：{m['content']}" for m in messages
                         if m.get("role") in ("user", "assistant"))
    system = ("你是心理咨询师的助手，负责更新会谈摘要。摘要用于在对话过长时代替较早的对话，"
              f"必须简短（不超过 {MAX_SUMMARY_CHARS} 字），分行写：主诉、关键事实（睡眠、情绪、家庭、学习/工作、"
              "既往史、用药，只写提到过的）、已约定的事项。不要编造，不写建议。只输出摘要本身，每行以“标签：”开头。")
    user = f"原摘要：\n{previous or '（无）'}\n\n新移出上下文的对话：\n{dialogue}\n\n请输出更新后的会谈摘要："
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_model_summary(answer: str, limit: int = MAX_SUMMARY_CHARS) -> str | None:
    """The model's summary if it has the asked form (lines `标签：…` with a known label, Chinese text),
    bounded; None otherwise (the caller then falls back to the extractive summary)."""
    if not isinstance(answer, str):
        return None
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    kept = [line for line in lines if "：" in line and line.split("：", 1)[0].strip("-*· ").startswith(_LABELS)
            and len(line.split("：", 1)[1].strip()) >= 2]
    if not kept:
        return None
    text = "\n".join(line.strip("-*· ") for line in kept)
    return text[:limit]
