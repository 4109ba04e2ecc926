"""Prompt formats and context budgeting for long multi-turn counselling sessions.

Conversations are lists of `{"role", "content"}` messages end to end. Two prompt formats:

* `ChatTemplateFormat` (default): the tokenizer's own chat template with a generation prompt.
* `PlainFormat`: the plain-text doctor/patient format BianQue and SoulChat were trained on,
  `病人：…\\n医生：…\\n病人：…\\n医生：`, the reply being the continuation. A system/stage instruction
  travels in front of the dialogue (as SMILE does: `instruction\\n对话：\\n来访者：…\\n咨询师：`).

`ContextBudget.fit` keeps system + history + max_new_tokens inside the model's context by dropping the
OLDEST WHOLE TURNS, never the system instruction and never the newest client message; token ids are
never trimmed from the left. Two things the caller decides ride with the system instruction:

* `pinned` notes (e.g. a risk note after a crisis disclosure) are appended to it and are never dropped;
* a `summary` of the session stands in for the dropped turns, only when turns are dropped.

    fit = budget.fit(messages, 256, pinned=["风险提示：来访者第 3 轮提到想死……"], summary="会谈摘要……")
    fit.first_visible    # index (among the non-system messages) of the oldest message the model sees
    fit.summary_used     # whether the summary is in the prompt

The budget walks the turns from the newest back and stops at the first that does not fit, and token
counts are cached per message, so one new turn costs the same in a 500-turn conversation as in a
50-turn one (bench/bench_engine.py measures it).
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
# The summary's place in the system prompt; the caller writes the summary itself.
SUMMARY_TEMPLATE = "会谈摘要（更早的对话已不在上下文中，以下是它的摘要）：\n{summary}"
NOTE_SEPARATOR = "\n\n"  # between the instruction, the pinned notes and the summary


class DialogueError(ValueError):
    """Malformed messages (unknown role, non-string content)."""


class ContextTooLongError(DialogueError):
    """The newest client message alone does not fit in the model's context."""


def validate_messages(messages: Sequence[dict]) -> list[dict]:
    """Check roles and content types; return plain {"role", "content"} dicts."""
    split_messages(messages)
    return [_plain(m) for m in messages]


def split_messages(messages: Sequence[dict]) -> tuple[list[dict], list[dict], int]:
    """Check roles and content types in one pass; return (system messages, the dialogue, the number of
    client messages). The messages are the caller's own dicts, not copies."""
    system, history, users = [], [], 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DialogueError(f"第 {i} 条消息不是 dict：{type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DialogueError(f"第 {i} 条消息的角色 {role!r} 无效，应为 {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DialogueError(f"第 {i} 条消息的内容不是字符串")
        if role == "system":
            system.append(message)
        else:
            history.append(message)
            users += role == "user"
    if not history or messages[-1]["role"] != "user":
        raise DialogueError("最后一条消息必须是来访者（user）的消息")
    return system, history, users


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
    """What `ContextBudget.fit` kept, and the prompt it rendered.

    `messages` are what the model sees: the system message (instruction + pinned notes + the summary
    when used) and the newest whole turns. `dropped_turns` is also the index of the first turn still
    seen; `first_visible` the index, among the non-system messages given to fit (the chat history),
    of the oldest message still seen: the UI marks the cut there.
    """

    messages: list[dict]
    prompt: str
    prompt_tokens: int
    dropped_turns: int
    first_visible: int = 0
    summary_used: bool = False


def _plain(message: dict) -> dict:
    return {"role": message["role"], "content": message["content"]}


def _notes(pinned: Sequence[str], summary: str | None) -> tuple[list[str], str | None]:
    """Pinned notes and summary as the caller gave them, checked once; blanks are left out."""
    if isinstance(pinned, str):
        pinned = [pinned]
    notes = []
    for i, note in enumerate(pinned or ()):
        if not isinstance(note, str):
            raise DialogueError(f"第 {i} 条固定提示（pinned）不是字符串")
        if note.strip():
            notes.append(note.strip())
    if summary is not None and not isinstance(summary, str):
        raise DialogueError("会谈摘要（summary）必须是字符串")
    summary = summary.strip() if summary else None
    return notes, summary or None


def _system_messages(system: list[dict], notes: list[str], summary: str | None) -> list[dict]:
    """The system part of the prompt. Without notes or summary: the messages as given. With them: one
    system message (a second system message mid-prompt breaks many chat templates and the plain format)."""
    if not notes and summary is None:
        return list(system)
    parts = [m["content"] for m in system if m["content"]] + notes
    if summary is not None:
        parts.append(SUMMARY_TEMPLATE.format(summary=summary))
    return [{"role": "system", "content": NOTE_SEPARATOR.join(parts)}]


def system_with_notes(system: Sequence[dict], pinned: Sequence[str] = (), summary: str | None = None) -> list[dict]:
    """The system part of a prompt with pinned notes and a summary, exactly as `fit` builds it when
    turns are dropped: for training data that must show a model the prompt it will be served."""
    notes, summary = _notes(pinned, summary)
    return _system_messages([_plain(m) for m in system], notes, summary)


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

    def _cached(self, key: tuple[str, str], count: Callable[[], int]) -> int:
        n = self._cache.get(key)
        if n is None:
            n = count()
            self._cache[key] = n
            if len(self._cache) > TOKEN_CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return n

    def message_tokens(self, message: dict) -> int:
        """Tokens a message costs in the prompt (content + role overhead), cached."""
        role, content = message["role"], message["content"]
        return self._cached((role, content), lambda: self.count_tokens(content) + self._overhead[role])

    def summary_tokens(self, summary: str) -> int:
        """Tokens the summary adds to the system prompt (separator and template included), cached."""
        text = NOTE_SEPARATOR + SUMMARY_TEMPLATE.format(summary=summary)
        return self._cached(("summary", text), lambda: self.count_tokens(text))

    def fit(self, messages: Sequence[dict], max_new_tokens: int, *, pinned: Sequence[str] = (),
            summary: str | None = None, covered: int = 0, keep_summary: bool = False) -> FitResult:
        """Keep the system instruction, the pinned notes and the newest client message, then as many of
        the newest whole turns as fit; when turns are dropped, `summary` (if given) takes their place.

        `covered`: the first `covered` dialogue messages are already in the summary and are never
        shown (the summary moves in steps of several turns, not every turn); `keep_summary`: the summary
        is used even when no turn is dropped (a summary carried over from an earlier session).

        Raises ContextTooLongError when the instruction, the notes and the newest message alone do not
        fit (the summary is left out before that happens).
        """
        system, history, users = split_messages(messages)
        system = [_plain(m) for m in system]
        notes, summary = _notes(pinned, summary)
        budget = self.context_tokens - int(max_new_tokens)
        head = _system_messages(system, notes, None)
        # System instruction + pinned notes + newest client message: always kept, counted exactly.
        fixed = self.count_tokens(self.fmt.render(head + history[-1:]))
        if fixed > budget:
            raise ContextTooLongError(
                f"这条消息太长（连同阶段指令约 {fixed} 个 token），超出模型上下文"
                f"（{self.context_tokens} 个 token，需为回复预留 {max_new_tokens}）：请缩短后再发"
            )
        covered = max(0, min(int(covered), len(history) - 1))
        starts, total = self._newest_turns(history, budget - fixed, covered)
        use_summary = summary is not None and (starts[-1][0] > 0 or keep_summary)
        if use_summary:
            # Make room for the summary by giving up the oldest kept turns; leave it out if even the
            # newest message alone leaves no room for it.
            extra = self.summary_tokens(summary)
            if fixed + extra > budget:
                use_summary = False
            else:
                while total + extra > budget - fixed:
                    total -= starts.pop()[1]
        starts = [s for s, _ in starts]
        while True:
            first = starts[-1]
            kept = _system_messages(system, notes, summary if use_summary else None)
            kept += [_plain(m) for m in history[first:]]
            prompt = self.fmt.render(kept)
            n = self.count_tokens(prompt)
            # Per-message counts are an estimate (tokens can merge across boundaries); the real
            # count of the rendered prompt decides.
            if n <= budget:
                break
            if len(starts) > 1:
                starts.pop()
            elif use_summary:
                use_summary = False
            else:  # only the newest client message is left and the exact count is over: trim nothing
                raise ContextTooLongError(
                    f"这条消息太长（提示共 {n} 个 token），超出模型上下文（{self.context_tokens} 个 token，"
                    f"需为回复预留 {max_new_tokens}）：请缩短后再发"
                )
        turns = users + (history[0]["role"] != "user")  # a leading reply is a turn of its own
        return FitResult(kept, prompt, n, turns - len(starts), first, use_summary)

    def _newest_turns(self, history: list[dict], room: int, covered: int = 0) -> tuple[list[tuple[int, int]], int]:
        """Walk back from the newest client message over whole turns while they fit in `room`.

        Returns [(start index, cost)] of the kept turns, newest first (the newest message is the first
        entry, cost 0: it is already counted), and their total cost. Touches only the kept turns and
        the one that did not fit, so the cost does not grow with the length of the conversation.
        """
        last = len(history) - 1
        self.message_tokens(history[last])  # counted exactly in `fixed`; cached for the next turns
        starts, total, cost = [(last, 0)], 0, 0
        for i in range(last - 1, covered - 1, -1):
            cost += self.message_tokens(history[i])
            if history[i]["role"] != "user" and i > covered:
                continue  # a reply: its turn starts at the client message before it
            if total + cost > room:
                break
            total += cost
            starts.append((i, cost))
            cost = 0
        return starts, total
