"""Treatment stages, loaded from `config/stages.yaml` (edited by product staff, not in code).

Each stage has an id, a name and a one-line description for the UI, and the instruction the model
gets as the system prompt of every turn in that stage. Switching stage mid-conversation applies from
the next turn, because `build_messages` puts the CURRENT stage's instruction in front of the history.
A malformed file fails at start-up with a `StageFileError` that names the file and the key.

Each stage may also list `goals` (what the stage is for, Chinese, shown to clinicians and given to a
real model that judges whether to move on) and `exit_signals` (when the app suggests the next stage;
see `EXIT_SIGNAL_KEYS` and mvp/counsel/progress.py). Unknown keys are refused with their names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mvp.paths import CONFIG_DIR

DEFAULT_STAGES_FILE = CONFIG_DIR / "stages.yaml"
STAGE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
REQUIRED_KEYS = ("id", "name", "description", "instruction")
OPTIONAL_KEYS = ("goals", "exit_signals")
# exit_signals keys: min_client_turns (client turns in this stage), requires_screening (a PHQ-9/GAD-7
# screening finished in this conversation), no_open_risk (no unreviewed risk flag), signs (what a
# real model looks for in the dialogue, Chinese sentences).
EXIT_SIGNAL_KEYS = ("min_client_turns", "requires_screening", "no_open_risk", "signs")
MAX_INSTRUCTION_CHARS = 4000
MAX_GOAL_CHARS = 200
MAX_GOALS = 10


class StageFileError(ValueError):
    """The stages file is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ExitSignals:
    """When the app suggests moving on from a stage (all that are set must hold)."""

    min_client_turns: int | None = None
    requires_screening: bool = False
    no_open_risk: bool = False
    signs: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return self.min_client_turns is not None or self.requires_screening or bool(self.signs)


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    description: str
    instruction: str
    goals: tuple[str, ...] = ()
    exit_signals: ExitSignals = field(default_factory=ExitSignals)


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

    def next_after(self, stage_id: str) -> Stage | None:
        """The stage after this one in the file (None for the last)."""
        ids = [stage.id for stage in self.list]
        i = ids.index(self.get(stage_id).id)
        return self.list[i + 1] if i + 1 < len(self.list) else None

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
        extra = set(item) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)
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
        stages.append(Stage(*(item[key].strip() for key in REQUIRED_KEYS), goals=_strings(item.get("goals"), f"{where}.goals"),
                            exit_signals=_exit_signals(item.get("exit_signals"), f"{where}.exit_signals")))
    return Stages(stages, path)


def _strings(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_GOALS:
        raise StageFileError(f"{where}: 必须是至多 {MAX_GOALS} 条中文短句的列表")
    out = []
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_GOAL_CHARS:
            raise StageFileError(f"{where}[{i}]: 必须是非空字符串（至多 {MAX_GOAL_CHARS} 字）")
        out.append(text.strip())
    return tuple(out)


def _exit_signals(value, where: str) -> ExitSignals:
    if value is None:
        return ExitSignals()
    if not isinstance(value, dict):
        raise StageFileError(f"{where}: 必须是映射，可用的键：{', '.join(EXIT_SIGNAL_KEYS)}")
    unknown = set(value) - set(EXIT_SIGNAL_KEYS)
    if unknown:
        raise StageFileError(f"{where}: 未知的键 {sorted(unknown)}（可用的键：{', '.join(EXIT_SIGNAL_KEYS)}）")
    turns = value.get("min_client_turns")
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= 500):
        raise StageFileError(f"{where}.min_client_turns: 必须是 1 到 500 之间的整数，收到 {turns!r}")
    for key in ("requires_screening", "no_open_risk"):
        if key in value and not isinstance(value[key], bool):
            raise StageFileError(f"{where}.{key}: 必须是 true 或 false，收到 {value[key]!r}")
    return ExitSignals(turns, bool(value.get("requires_screening", False)), bool(value.get("no_open_risk", False)),
                       _strings(value.get("signs"), f"{where}.signs"))


def build_messages(instruction: str, history: Sequence[dict]) -> list[dict]:
    """The model's input for one turn: the stage instruction as system prompt, then the dialogue."""
    messages = [{"role": "system", "content": instruction}]
    messages += [
        {"role": m["role"], "content": m["content"]}
        for m in history
        if m.get("role") in ("user", "assistant")
    ]
    return messages
