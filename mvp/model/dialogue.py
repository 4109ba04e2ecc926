"""Prompt formats and context budgeting for long multi-turn counselling sessions.

Conversations are lists of `{"role", "content"}` messages end to end. Two prompt formats:

* `ChatTemplateFormat` (default): the tokenizer's own chat template with a generation prompt.
* `PlainFormat`: the plain-text doctor/patient format BianQue and SoulChat were trained on,
  `病人：…\\n医生：…\\n病人：…\\n医生：`, the reply being the continuation. A system/stage instruction
  travels in front of the dialogue (as SMILE does: `instruction\\n对话：\\n来访者：…\\n咨询师：`).

`ContextBudget.fit` keeps system + history + max_new_tokens inside the model's context by dropping the
OLDEST WHOLE TURNS, never the system instruction and never the newest client message; token ids are
never trimmed from the left. Token counts are cached per message, so a turn in a 500-turn conversation
costs about the same as one in a 50-turn conversation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
PROMPT_FORMATS = ("chat", "plain")  # the names settings may give; "chat" is the default
DEFAULT_USER_LABEL = "病人"  # BianQue/SoulChat's own labels; counselling data uses 来访者/咨询师
DEFAULT_ASSISTANT_LABEL = "医生"
TOKEN_CACHE_SIZE = 100_000


class DialogueError(ValueError):
    """Malformed messages (unknown role, non-string content)."""


class ContextTooLongError(DialogueError):
    """The newest client message alone does not fit in the model's context."""


def validate_messages(messages: Sequence[dict]) -> list[dict]:
    """Check roles and content types; return plain {"role", "content"} dicts."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DialogueError(f"第 {i} 条消息不是 dict：{type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DialogueError(f"第 {i} 条消息的角色 {role!r} 无效，应为 {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DialogueError(f"第 {i} 条消息的内容不是字符串")
        out.append({"role": role, "content": content})
    if not out or out[-1]["role"] != "user":
        raise DialogueError("最后一条消息必须是来访者（user）的消息")
    return out


class ChatTemplateFormat:
    """The tokenizer's chat template, with the assistant generation prompt appended."""

    name = "chat"
    stop_strings: tuple[str, ...] = ()

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise DialogueError("这个分词器没有 chat template：请用纯文本格式（--prompt-format plain）")
        self.tokenizer = tokenizer

    def render(self, messages: Sequence[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )


class PlainFormat:
    """BianQue/SoulChat plain text: `病人：…\\n医生：…\\n…\\n医生：` (labels configurable)."""

    name = "plain"

    def __init__(
        self,
        user_label: str = DEFAULT_USER_LABEL,
        assistant_label: str = DEFAULT_ASSISTANT_LABEL,
        system_prefix: str = "{system}\n对话：\n",
        colon: str = "：",
    ):
        self.user_label = user_label
        self.assistant_label = assistant_label
        self.system_prefix = system_prefix
        self.colon = colon
        # The model continues the dialogue past its own reply; cut at the next speaker label.
        self.stop_strings = (f"\n{user_label}{colon}", f"\n{assistant_label}{colon}")

    def render(self, messages: Sequence[dict]) -> str:
        parts = []
        for message in messages:
            if message["role"] == "system":
                if message["content"]:
                    parts.append(self.system_prefix.format(system=message["content"]))
                continue
            label = self.user_label if message["role"] == "user" else self.assistant_label
            parts.append(f"{label}{self.colon}{message['content']}\n")
        parts.append(f"{self.assistant_label}{self.colon}")
        return "".join(parts)


def make_format(prompt_format=None, tokenizer=None, *, fallback: Callable[[], object] | None = None):
    """The prompt format object for a name or an object already made.

    None or "chat": the tokenizer's chat template (`fallback()` instead when tokenizer is None and a
    fallback is given: the served backend's stand-in); "plain": PlainFormat with the default labels;
    any other object is used as it is (a PlainFormat with custom labels, a test format).
    """
    if prompt_format is None or prompt_format == "chat":
        if tokenizer is None and fallback is not None:
            return fallback()
        return ChatTemplateFormat(tokenizer)
    if prompt_format == "plain":
        return PlainFormat()
    if isinstance(prompt_format, str):
        raise DialogueError(f"未知的提示格式 {prompt_format!r}：可选 {', '.join(PROMPT_FORMATS)}")
    return prompt_format


def group_turns(history: Sequence[dict]) -> list[list[int]]:
    """Indices of history grouped into turns: a client message with the replies that follow it.

    Replies before the first client message (doctor-led interviews start with the doctor) form a
    turn of their own.
    """
    turns: list[list[int]] = []
    for i, message in enumerate(history):
        if message["role"] == "user" or not turns:
            turns.append([i])
        else:
            turns[-1].append(i)
    return turns


@dataclass
class FitResult:
    """What `ContextBudget.fit` kept, and the prompt it rendered."""

    messages: list[dict]
    prompt: str
    prompt_tokens: int
    dropped_turns: int


class ContextBudget:
    """Fits messages into `context_tokens - max_new_tokens` by dropping the oldest whole turns."""

    def __init__(self, fmt, count_tokens: Callable[[str], int], context_tokens: int):
        self.fmt = fmt
        self.count_tokens = count_tokens
        self.context_tokens = int(context_tokens)
        self._cache: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._overhead = {role: self._measure_overhead(role) for role in ("user", "assistant")}

    def _measure_overhead(self, role: str) -> int:
        """Template tokens a message of this role adds beyond its content (measured once)."""
        sample = "测"
        base = [{"role": "system", "content": "你好"}]
        delta = self.count_tokens(self.fmt.render(base + [{"role": role, "content": sample}]))
        delta -= self.count_tokens(self.fmt.render(base))
        return max(0, delta - self.count_tokens(sample))

    def message_tokens(self, message: dict) -> int:
        """Tokens a message costs in the prompt (content + role overhead), cached."""
        key = (message["role"], message["content"])
        n = self._cache.get(key)
        if n is None:
            n = self.count_tokens(message["content"]) + self._overhead[message["role"]]
            self._cache[key] = n
            if len(self._cache) > TOKEN_CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return n

    def fit(self, messages: Sequence[dict], max_new_tokens: int) -> FitResult:
        messages = validate_messages(messages)
        budget = self.context_tokens - int(max_new_tokens)
        system = [m for m in messages if m["role"] == "system"]
        history = [m for m in messages if m["role"] != "system"]
        turns = group_turns(history)
        costs = [sum(self.message_tokens(history[i]) for i in turn) for turn in turns]
        # System instruction + newest client message: always kept, counted exactly.
        fixed = self.count_tokens(self.fmt.render(system + history[-1:]))
        if fixed > budget:
            raise ContextTooLongError(
                f"这条消息太长（连同阶段指令约 {fixed} 个 token），超出模型上下文"
                f"（{self.context_tokens} 个 token，需为回复预留 {max_new_tokens}）：请缩短后再发"
            )
        costs[-1] = 0
        # The newest turn is the client message itself (it is always last and always kept).
        total = fixed + sum(costs)
        first = 0
        while total > budget and first < len(turns) - 1:
            total -= costs[first]
            first += 1
        while True:
            kept_history = self._keep_from(history, turns, first)
            kept = system + kept_history
            prompt = self.fmt.render(kept)
            n = self.count_tokens(prompt)
            # Per-message counts are an estimate (tokens can merge across boundaries); the real
            # count of the rendered prompt decides.
            if n <= budget or first >= len(turns) - 1:
                break
            first += 1
        if n > budget:
            # Only the newest client message is left and the exact count is over: trim nothing, fail.
            raise ContextTooLongError(
                f"这条消息太长（提示共 {n} 个 token），超出模型上下文（{self.context_tokens} 个 token，"
                f"需为回复预留 {max_new_tokens}）：请缩短后再发"
            )
        return FitResult(kept, prompt, n, first)

    @staticmethod
    def _keep_from(history: list[dict], turns: list[list[int]], first: int) -> list[dict]:
        if first == 0:
            return list(history)
        start = turns[first][0]
        return list(history[start:])
