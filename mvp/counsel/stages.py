"""Treatment stages, loaded from `config/stages.yaml` (edited by product staff, not in code).

Each stage has an id, a name and a one-line description for the UI, and the instruction the model
gets as the system prompt of every turn in that stage. Switching stage mid-conversation applies from
the next turn, because `build_messages` puts the CURRENT stage's instruction in front of the history.
A malformed file fails at start-up with a `StageFileError` that names the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from mvp.paths import CONFIG_DIR

DEFAULT_STAGES_FILE = CONFIG_DIR / "stages.yaml"
STAGE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
REQUIRED_KEYS = ("id", "name", "description", "instruction")
MAX_INSTRUCTION_CHARS = 4000


class StageFileError(ValueError):
    """The stages file is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    description: str
    instruction: str


class Stages:
    """The ordered stages of a file; the first one is the default for a new conversation."""

    def __init__(self, stages: Sequence[Stage], path: Path | None = None):
        self.list = list(stages)
        self.by_id = {stage.id: stage for stage in self.list}
        self.path = path

    def __iter__(self):
        return iter(self.list)

    def __len__(self) -> int:
        return len(self.list)

    @property
    def default(self) -> Stage:
        return self.list[0]

    def get(self, stage_id: str) -> Stage:
        try:
            return self.by_id[stage_id]
        except (KeyError, TypeError):
            known = ", ".join(self.by_id)
            raise StageFileError(f"未知的治疗阶段 {stage_id!r}（可选：{known}）") from None

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a dropdown."""
        return [(stage.name, stage.id) for stage in self.list]


def load_stages(path: str | Path | None = None) -> Stages:
    """Read and validate a stages YAML file."""
    path = Path(path) if path else DEFAULT_STAGES_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageFileError(f"{path}: 找不到治疗阶段文件") from None
    except yaml.YAMLError as exc:
        raise StageFileError(f"{path}: YAML 格式错误：{exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
        raise StageFileError(f"{path}: 顶层需要非空列表 `stages`")
    unknown = set(data) - {"stages"}
    if unknown:
        raise StageFileError(f"{path}: 未知的顶层键 {sorted(unknown)}")
    stages, seen = [], set()
    for i, item in enumerate(data["stages"]):
        where = f"{path}: stages[{i}]"
        if not isinstance(item, dict):
            raise StageFileError(f"{where} 必须是包含 {', '.join(REQUIRED_KEYS)} 的映射")
        extra = set(item) - set(REQUIRED_KEYS)
        if extra:
            raise StageFileError(f"{where}: 未知的键 {sorted(extra)}")
        for key in REQUIRED_KEYS:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise StageFileError(f"{where}.{key}: 缺失或不是非空字符串")
        if not STAGE_ID_RE.match(item["id"]):
            raise StageFileError(f"{where}.id: {item['id']!r} 只能包含字母、数字和下划线，以字母开头")
        if item["id"] in seen:
            raise StageFileError(f"{where}.id: 重复的阶段 id {item['id']!r}")
        if len(item["instruction"]) > MAX_INSTRUCTION_CHARS:
            raise StageFileError(f"{where}.instruction: 超过 {MAX_INSTRUCTION_CHARS} 字")
        seen.add(item["id"])
        stages.append(Stage(*(item[key].strip() for key in REQUIRED_KEYS)))
    return Stages(stages, path)


def build_messages(instruction: str, history: Sequence[dict]) -> list[dict]:
    """The model's input for one turn: the stage instruction as system prompt, then the dialogue."""
    messages = [{"role": "system", "content": instruction}]
    messages += [
        {"role": m["role"], "content": m["content"]}
        for m in history
        if m.get("role") in ("user", "assistant")
    ]
    return messages
