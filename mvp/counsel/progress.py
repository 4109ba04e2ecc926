"""Stage suggestion: is the current stage done, so that the app may suggest the next one?

Pure Python, no store and no model of its own. Two ways to judge a stage's `exit_signals`
(config/stages.yaml):

* signals (the demo model, and the fallback): client turns in the stage >= `min_client_turns`, a
  screening finished when `requires_screening`, no open risk flag when `no_open_risk`;
* a real model: once the countable signals hold, one short generation judges the stage's goals and
  `signs` against the recent dialogue (`judge_prompt`), parsed strictly (`parse_judgement`: one JSON
  object with a boolean `ready` and a short `reason`); anything else falls back to the signals.

The clinician accepts or dismisses a suggestion; after a dismissal the app waits `QUIET_TURNS` more
client turns in that stage before suggesting again (no nagging every turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

QUIET_TURNS = 4
JUDGE_MAX_NEW_TOKENS = 48
JUDGE_DIALOGUE_MESSAGES = 8
REASON_CHARS = 80


@dataclass(frozen=True)
class StageSignals:
    """What the demo judgement reads, counted by the service."""

    client_turns_in_stage: int
    screening_finished: bool = False
    open_risk: bool = False


@dataclass(frozen=True)
class Suggestion:
    from_stage: str
    to_stage: str
    reasons: tuple[str, ...]
    method: str  # "signals" | "model" | "signals_fallback"
    signals: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The JSON stored with the stage event."""
        return {"reasons": list(self.reasons), "method": self.method, **self.signals}


def signals_met(stage, signals: StageSignals) -> tuple[bool, list[str]]:
    """Whether the countable exit signals of `stage` hold, and the reasons (Chinese) when they do."""
    exit = stage.exit_signals
    if exit.min_client_turns is None and not exit.requires_screening:
        return False, []  # a stage without countable signals is never suggested by counting
    reasons = []
    if exit.min_client_turns is not None:
        if signals.client_turns_in_stage < exit.min_client_turns:
            return False, []
        reasons.append(f"本阶段已进行 {signals.client_turns_in_stage} 轮（≥ {exit.min_client_turns}）")
    if exit.requires_screening:
        if not signals.screening_finished:
            return False, []
        reasons.append("量表筛查已完成")
    if exit.no_open_risk:
        if signals.open_risk:
            return False, []
        reasons.append("没有待复核的风险标记")
    return True, reasons


def suggest(stage, next_stage, signals: StageSignals, judge=None, dialogue: Sequence[dict] = ()) -> Suggestion | None:
    """A suggestion to move from `stage` to `next_stage`, or None.

    `judge(messages) -> str` (optional) runs one generation of a real model; it is asked only when
    the countable signals hold (then every QUIET_TURNS client turns), and its answer decides unless it
    cannot be parsed."""
    if next_stage is None:
        return None
    ok, reasons = signals_met(stage, signals)
    if not ok:
        return None
    counted = {"client_turns_in_stage": signals.client_turns_in_stage,
               "screening_finished": signals.screening_finished, "open_risk": signals.open_risk}
    if judge is None or not stage.exit_signals.signs:
        return Suggestion(stage.id, next_stage.id, tuple(reasons), "signals", counted)
    if (signals.client_turns_in_stage - (stage.exit_signals.min_client_turns or 0)) % QUIET_TURNS:
        return None  # a model that said "not yet" is asked again every QUIET_TURNS turns, not every turn
    try:
        verdict = parse_judgement(judge(judge_prompt(stage, next_stage, dialogue)))
    except Exception:  # noqa: BLE001 - the model judgement is optional: the signals decide then
        verdict = None
    if verdict is None:
        return Suggestion(stage.id, next_stage.id, tuple(reasons), "signals_fallback", counted)
    ready, reason = verdict
    if not ready:
        return None
    return Suggestion(stage.id, next_stage.id, (*reasons, f"模型判断：{reason}" if reason else "模型判断：目标已达成"),
                      "model", counted)


def judge_prompt(stage, next_stage, dialogue: Sequence[dict]) -> list[dict]:
    """Messages asking a model whether the stage's goals are met."""
    recent = [m for m in dialogue if m.get("role") in ("user", "assistant")][-JUDGE_DIALOGUE_MESSAGES:]
    lines = "\n".join(f"{'来访者' if m['role'] == 'user' else '咨询师'}：{m['content'][:200]}" for m in recent)
    goals = "\n".join(f"- {g}" for g in (*stage.goals, *stage.exit_signals.signs)) or "- （未填写）"
    system = ("你是心理咨询督导。根据阶段目标和最近的对话，判断当前阶段是否已完成、可以进入下一阶段。"
              '只输出一行 JSON，例如 {"ready": true, "reason": "主要困扰已澄清"}；不确定时 ready 为 false。')
    user = (f"当前阶段：{stage.name}\n阶段目标与信号：\n{goals}\n下一阶段：{next_stage.name}\n\n"
            f"最近的对话：\n{lines}\n\n请输出 JSON：")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_JSON = re.compile(r"\{[^{}]*\}")


def parse_judgement(answer) -> tuple[bool, str] | None:
    """(ready, reason) from exactly one JSON object with a boolean `ready`; None for anything else."""
    if not isinstance(answer, str):
        answer = getattr(answer, "text", None)
        if not isinstance(answer, str):
            return None
    found = _JSON.findall(answer)
    if len(found) != 1:
        return None
    try:
        obj = json.loads(found[0])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("ready"), bool):
        return None
    reason = obj.get("reason", "")
    if not isinstance(reason, str):
        return None
    return obj["ready"], " ".join(reason.split())[:REASON_CHARS]


def quiet(events: Sequence[dict], stage_id: str, client_turns_in_stage: int) -> bool:
    """Whether a suggestion must wait: one is pending, or one was dismissed in this stage fewer than
    QUIET_TURNS client turns ago. `events`: the conversation's stage events, oldest first, each with
    kind, from_stage and `turns` (client turns in the stage when it happened)."""
    for event in reversed(events):
        if event["kind"] in ("accepted", "manual"):
            return False
        if event["kind"] == "suggested" and event.get("from_stage") == stage_id:
            return True  # pending: neither accepted nor dismissed yet
        if event["kind"] == "dismissed" and event.get("from_stage") == stage_id:
            return client_turns_in_stage - int(event.get("turns") or 0) < QUIET_TURNS
    return False


def pending(events: Sequence[dict]) -> dict | None:
    """The latest suggestion that was neither accepted nor dismissed (events oldest first)."""
    for event in reversed(events):
        if event["kind"] == "suggested":
            return event
        if event["kind"] in ("accepted", "dismissed", "manual"):
            return None
    return None
