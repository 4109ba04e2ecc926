"""Dataset formats that our users' tools load: one writer and one reader per format, shared by
`train.export` and `train.convert`.

The common currency is a list of role/content messages (`{"role": "system"|"user"|"assistant",
"content": str}`), an optional system message first. From it:

* TRL, conversational: SFT `{"messages": [...]}`, DPO `{"prompt": [...], "chosen": [assistant],
  "rejected": [assistant]}`, KTO `{"prompt": [...], "completion": [assistant], "label": bool}`.
* LLaMA-Factory sharegpt: `{"conversations": [{"from": "human"|"gpt", "value": ...}], "system": ...}`;
  ranking rows have an odd number of turns ending with human plus `chosen`/`rejected`; KTO rows end
  with gpt and carry a boolean `kto_tag`. Roles alternate human/gpt starting with human, so a
  dialogue that opens with the counsellor (doctor-led interviews) has that first message folded into
  the system prompt (`LEADING_ASSISTANT_NOTE`). `llamafactory_problem` applies LLaMA-Factory 0.9's own
  acceptance rules, because LLaMA-Factory silently skips a row that breaks them.
* BianQue/SoulChat `{"input", "target"}`, SMILE-style: the stage instruction travels inside `input`
  (`instruction\\n对话：\\n来访者：…\\n咨询师：…\\n咨询师：`), rendered by `mvp.model.dialogue.PlainFormat`.
* alpaca (LLaMA-Factory flavour): `{"instruction", "input", "output", "system", "history": [[q, a]]}`.

Everything that cannot be represented raises `FormatError` with a short `reason` code, so callers
count rows out instead of dropping them silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mvp.model.dialogue import PlainFormat

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
SHAREGPT_USER, SHAREGPT_ASSISTANT, SHAREGPT_SYSTEM = "human", "gpt", "system"
TO_SHAREGPT = {USER: SHAREGPT_USER, ASSISTANT: SHAREGPT_ASSISTANT}
FROM_SHAREGPT = {SHAREGPT_USER: USER, SHAREGPT_ASSISTANT: ASSISTANT}

# How a counsellor's opening message (before any client message) travels in formats that must
# start with the client: appended to the system prompt.
LEADING_ASSISTANT_NOTE = "对话由你先开口，你说的第一句话是：{content}"

# Speaker labels of the plain-text formats; the first pair is what we write.
BIANQUE_LABELS: dict[str, tuple[str, str]] = {
    "smile": ("来访者", "咨询师"),  # SMILE / our counselling data
    "bianque": ("病人", "医生"),  # BianQue
    "soulchat": ("用户", "心理咨询师"),  # SoulChat
}
DEFAULT_BIANQUE_LABELS = "smile"
PLAIN_COLON = "："
PLAIN_DIALOGUE_MARK = "\n对话：\n"



class FormatError(ValueError):
    """A row that a format cannot hold or that cannot be read; ``reason`` is a short count key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# -- messages -------------------------------------------------------------------------------
def message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def split_system(messages: Sequence[dict]) -> tuple[str, list[dict]]:
    """(system text or "", the dialogue without it)."""
    if messages and messages[0].get("role") == SYSTEM:
        return messages[0]["content"], list(messages[1:])
    return "", list(messages)


def with_system(system: str, dialogue: Sequence[dict]) -> list[dict]:
    return ([message(SYSTEM, system)] if system else []) + [message(m["role"], m["content"]) for m in dialogue]


def role_problem(messages: Sequence[dict]) -> str | None:
    """None if the roles are well ordered, else a reason code.

    Rules: an optional system message first; then user and assistant strictly alternating (the
    counsellor may speak first); every content a string.
    """
    _, dialogue = split_system(messages)
    if not dialogue:
        return "no_dialogue"
    previous = None
    for m in dialogue:
        role = m.get("role") if isinstance(m, dict) else None
        if role == SYSTEM:
            return "system_not_first"
        if role not in (USER, ASSISTANT):
            return "unknown_role"
        if not isinstance(m.get("content"), str):
            return "content_not_text"
        if role == previous:
            return f"consecutive_{role}"
        previous = role
    return None


def check_roles(messages: Sequence[dict]) -> None:
    problem = role_problem(messages)
    if problem:
        raise FormatError(problem, "角色顺序不合法 / roles must alternate user/assistant")


def assistant_indices(messages: Sequence[dict]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == ASSISTANT]


def expand_per_turn(messages: Sequence[dict]) -> list[list[dict]]:
    """BianQue-style expansion: one sample per assistant turn, each the whole history up to it."""
    return [list(messages[: i + 1]) for i in assistant_indices(messages)]


def trim_trailing_user(messages: Sequence[dict]) -> list[dict]:
    """Drop client messages after the last assistant reply (nothing to supervise there)."""
    out = list(messages)
    while out and out[-1]["role"] != ASSISTANT:
        out.pop()
    return out


def fold_leading_assistant(system: str, dialogue: Sequence[dict]) -> tuple[str, list[dict]]:
    """Move counsellor messages that come before the first client message into the system prompt."""
    dialogue = list(dialogue)
    while dialogue and dialogue[0]["role"] == ASSISTANT:
        note = LEADING_ASSISTANT_NOTE.format(content=dialogue.pop(0)["content"])
        system = f"{system}\n{note}" if system else note
    return system, dialogue


def unfold_leading_assistant(system: str, dialogue: Sequence[dict]) -> tuple[str, list[dict]]:
    """The inverse of `fold_leading_assistant`, so that a doctor-led dialogue round-trips."""
    dialogue, opening = list(dialogue), LEADING_ASSISTANT_NOTE.format(content="")
    while True:
        at = system.rfind(opening)
        if at < 0 or (at > 0 and system[at - 1] != "\n"):
            return system, dialogue
        dialogue.insert(0, message(ASSISTANT, system[at + len(opening):]))
        system = system[: max(0, at - 1)]


# -- TRL --------------------------------------------------------------------------------------
def trl_sft_row(messages: Sequence[dict]) -> dict:
    return {"messages": [message(m["role"], m["content"]) for m in messages]}


def trl_dpo_row(prompt: Sequence[dict], chosen: str, rejected: str) -> dict:
    return {
        "prompt": [message(m["role"], m["content"]) for m in prompt],
        "chosen": [message(ASSISTANT, chosen)],
        "rejected": [message(ASSISTANT, rejected)],
    }


def trl_kto_row(prompt: Sequence[dict], completion: str, label: bool) -> dict:
    if not isinstance(label, bool):
        raise FormatError("label_not_bool", f"KTO label must be a JSON boolean, got {label!r}")
    return {
        "prompt": [message(m["role"], m["content"]) for m in prompt],
        "completion": [message(ASSISTANT, completion)],
        "label": label,
    }


# -- LLaMA-Factory sharegpt -----------------------------------------------------------------------
def _sharegpt_turns(dialogue: Sequence[dict]) -> list[dict]:
    return [{"from": TO_SHAREGPT[m["role"]], "value": m["content"]} for m in dialogue]


def _sharegpt_base(messages: Sequence[dict]) -> tuple[str, list[dict]]:
    check_roles(messages)
    system, dialogue = split_system(messages)
    system, dialogue = fold_leading_assistant(system, dialogue)
    return system, dialogue


def to_sharegpt(messages: Sequence[dict]) -> dict:
    """An SFT row: human/gpt pairs; a trailing client message is refused (nothing to learn)."""
    system, dialogue = _sharegpt_base(messages)
    if not dialogue:
        raise FormatError("no_client_turn", "只有咨询师的开场白，没有来访者的消息")
    if dialogue[-1]["role"] != ASSISTANT:
        raise FormatError("ends_with_user", "SFT 对话必须以咨询师（gpt）结束")
    return {"conversations": _sharegpt_turns(dialogue), "system": system}


def sharegpt_ranking_row(prompt: Sequence[dict], chosen: str, rejected: str) -> dict:
    system, dialogue = _sharegpt_base(list(prompt) + [message(ASSISTANT, chosen)])
    dialogue = dialogue[:-1]
    if not dialogue or dialogue[-1]["role"] != USER:
        raise FormatError("prompt_without_client_turn", "偏好数据的提示必须以来访者（human）结束")
    return {
        "conversations": _sharegpt_turns(dialogue),
        "chosen": {"from": SHAREGPT_ASSISTANT, "value": chosen},
        "rejected": {"from": SHAREGPT_ASSISTANT, "value": rejected},
        "system": system,
    }


def sharegpt_kto_row(prompt: Sequence[dict], completion: str, label: bool) -> dict:
    if not isinstance(label, bool):
        raise FormatError("label_not_bool", f"kto_tag must be a JSON boolean, got {label!r}")
    system, dialogue = _sharegpt_base(list(prompt) + [message(ASSISTANT, completion)])
    if len(dialogue) < 2:
        raise FormatError("prompt_without_client_turn", "KTO 数据的回复前必须有来访者（human）的消息")
    return {"conversations": _sharegpt_turns(dialogue), "kto_tag": label, "system": system}


def from_sharegpt(row: dict) -> list[dict]:
    """Messages from a sharegpt row (system from the `system` column or a leading system turn)."""
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise FormatError("missing_conversations", "缺少 conversations 列表")
    system = row.get("system") or ""
    out: list[dict] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise FormatError("bad_turn", f"第 {i} 轮不是 {{from, value}}")
        role = turn.get("from")
        if role == SHAREGPT_SYSTEM and i == 0:
            system = turn["value"]
            continue
        if role not in FROM_SHAREGPT:
            raise FormatError("unknown_role", f"第 {i} 轮的角色 {role!r} 不受支持")
        out.append(message(FROM_SHAREGPT[role], turn["value"]))
    return with_system(*unfold_leading_assistant(system, out))


def llamafactory_problem(row: dict, kind: str) -> str | None:
    """Why LLaMA-Factory 0.9's sharegpt converter would skip this row, or None if it accepts it.

    kind: "sft", "dpo" (registered with ranking) or "kto".
    """
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "no_turns"
    for i, turn in enumerate(turns):
        expected = SHAREGPT_USER if i % 2 == 0 else SHAREGPT_ASSISTANT
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            return "role_order"
    if kind == "dpo":
        if len(turns) % 2 == 0:
            return "ranking_turn_count_even"
        for key in ("chosen", "rejected"):
            value = row.get(key)
            if not isinstance(value, dict) or value.get("from") != SHAREGPT_ASSISTANT:
                return f"bad_{key}"
        return None
    if len(turns) % 2 != 0:
        return "turn_count_odd"
    if kind == "kto" and not isinstance(row.get("kto_tag"), bool):
        return "kto_tag_not_bool"
    return None


def dataset_info_entry(file_name: str, kind: str) -> dict:
    """The `dataset_info.json` entry that registers one sharegpt file of the given kind."""
    columns = {"messages": "conversations", "system": "system"}
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
    if kind == "dpo":
        entry["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    elif kind == "kto":
        columns["kto_tag"] = "kto_tag"
    entry["columns"] = columns
    entry["tags"] = {"role_tag": "from", "content_tag": "value",
                     "user_tag": SHAREGPT_USER, "assistant_tag": SHAREGPT_ASSISTANT}
    return entry


# -- BianQue / SoulChat / SMILE ---------------------------------------------------------------------
def plain_format(labels: str = DEFAULT_BIANQUE_LABELS) -> PlainFormat:
    user_label, assistant_label = BIANQUE_LABELS[labels]
    return PlainFormat(user_label, assistant_label, system_prefix="{system}" + PLAIN_DIALOGUE_MARK,
                       colon=PLAIN_COLON)


def to_bianque(messages: Sequence[dict], labels: str = DEFAULT_BIANQUE_LABELS) -> dict:
    """One input/target sample: the LAST assistant message is the target, everything before it
    (system instruction included) is rendered into `input`."""
    check_roles(messages)
    if not messages or messages[-1]["role"] != ASSISTANT:
        raise FormatError("ends_with_user", "BianQue 样本必须以咨询师的回复（target）结束")
    return {"input": plain_format(labels).render(messages[:-1]), "target": messages[-1]["content"]}


def _detect_labels(body: str) -> tuple[str, str]:
    for user_label, assistant_label in BIANQUE_LABELS.values():
        if body.startswith((user_label + PLAIN_COLON, assistant_label + PLAIN_COLON)):
            return user_label, assistant_label
    raise FormatError("unknown_labels", f"input 不以已知的说话人标签开头：{body[:20]!r}")


def from_bianque(row: dict) -> list[dict]:
    """Messages from an input/target sample (context parsed from `input`, target as the reply)."""
    text, target = row.get("input"), row.get("target")
    if not isinstance(text, str) or not isinstance(target, str):
        raise FormatError("missing_input_target", "需要文本字段 input 和 target")
    system = ""
    if PLAIN_DIALOGUE_MARK in text:
        system, text = text.split(PLAIN_DIALOGUE_MARK, 1)
    user_label, assistant_label = _detect_labels(text)
    roles = {user_label: USER, assistant_label: ASSISTANT}
    pattern = re.compile(
        rf"(?:^|\n)({re.escape(user_label)}|{re.escape(assistant_label)}){re.escape(PLAIN_COLON)}"
    )
    marks = list(pattern.finditer(text))
    if not marks or marks[-1].group(1) != assistant_label or text[marks[-1].end():].strip():
        raise FormatError("input_not_ending_with_prompt", f"input 必须以“{assistant_label}：”结尾")
    out = []
    for mark, following in zip(marks[:-1], marks[1:]):
        out.append(message(roles[mark.group(1)], text[mark.end(): following.start()]))
    out.append(message(ASSISTANT, target))
    return with_system(system, out)


# -- alpaca ------------------------------------------------------------------------------------
def to_alpaca(messages: Sequence[dict]) -> dict:
    """The last exchange as instruction/output, the earlier ones as `history` pairs."""
    check_roles(messages)
    system, dialogue = fold_leading_assistant(*split_system(messages))
    if not dialogue or dialogue[-1]["role"] != ASSISTANT:
        raise FormatError("ends_with_user", "alpaca 样本必须以咨询师的回复（output）结束")
    pairs = [[dialogue[i]["content"], dialogue[i + 1]["content"]] for i in range(0, len(dialogue), 2)]
    last = pairs.pop()
    return {"instruction": last[0], "input": "", "output": last[1], "system": system, "history": pairs}


def from_alpaca(row: dict) -> list[dict]:
    instruction, output = row.get("instruction"), row.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise FormatError("missing_instruction_output", "需要文本字段 instruction 和 output")
    if row.get("input"):
        instruction = f"{instruction}\n{row['input']}"
    out: list[dict] = []
    for pair in row.get("history") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise FormatError("bad_history", "history 必须是 [问, 答] 列表")
        out += [message(USER, pair[0]), message(ASSISTANT, pair[1])]
    out += [message(USER, instruction), message(ASSISTANT, output)]
    return with_system(*unfold_leading_assistant(row.get("system") or "", out))


# -- files -------------------------------------------------------------------------------------
def dumps(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps(row) + "\n")
            n += 1
    return n


def write_json_list(path: Path, rows: Sequence[Any]) -> int:
    """A JSON list with one row per line (C encoder: several times faster than `indent=`)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for i, row in enumerate(rows):
            fh.write(("," if i else "") + dumps(row) + "\n")
        fh.write("]\n")
    return len(rows)


def write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(value, fh, ensure_ascii=False, indent=1)
        fh.write("\n")


def read_rows(path: Path) -> list[Any]:
    """Rows of a JSON list file or a JSONL file (decided by content, not by name)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise FormatError("bad_json", f"{path}: {exc}") from None
        return value
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FormatError("bad_json", f"{path}:{number}: {exc}") from None
    return rows
