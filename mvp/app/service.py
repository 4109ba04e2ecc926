"""What the clinician app does, as plain Python: the UI and the API endpoints only call this.

One `Service` holds the store, the stages, the rating settings and the engines (one per model
version, loaded on demand). Every method takes the acting user's name and checks what that account
may do, so the browser UI and the gradio_client API share the same validation and permissions.

A chat turn (`send`): crisis check of the client message -> store the message (and flag the
conversation on a crisis) -> stage instruction (or the crisis instruction) as system prompt + the
active history -> stream the model's reply -> screen the reply -> store it with its generation
parameters, timings and safety findings. A cancelled reply is stored as "interrupted".
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvp.paths import CONFIG_DIR

from mvp import safety
from mvp.model.dialogue import DialogueError
from mvp.assessment import AssessmentError
from mvp.model.engine import GenerationError, GenerationParams
from mvp.app.screening import ScreeningMixin
from mvp.counsel.stages import Stages, build_messages
from mvp.store import NotFoundError, PermissionDeniedError, Store, StoreError, ValidationError
from mvp.store.validation import MAX_MESSAGE_CHARS, check_text

RATING_FILE = CONFIG_DIR / "rating.yaml"
DIMENSIONS = ("overall", "empathy", "professionalism", "safety", "guidance")
COMPARE_CHOICES = ("a", "b", "tie", "both_bad")
MAX_LOADED_ENGINES = 2


_CONTROL_CHARS = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None}


def clean_model_text(text: str) -> str:
    """Drop control characters a model may emit (they break storage and display); keep \\n and \\t."""
    return text.translate(_CONTROL_CHARS)


class ServiceError(Exception):
    """A user-facing error: the message is shown as it is (Chinese)."""


USER_ERRORS = (ServiceError, StoreError, DialogueError, GenerationError, AssessmentError, ValueError)


@dataclass
class RatingConfig:
    dimensions: dict[str, dict]
    tags: list[str]


def load_rating_config(path: str | Path = RATING_FILE) -> RatingConfig:
    """Dimension labels and the tag list from config/rating.yaml (validated)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ServiceError(f"{path}: 无法读取评分设置：{exc}") from None
    if not isinstance(data, dict) or set(data) - {"dimensions", "tags"}:
        raise ServiceError(f"{path}: 只允许 dimensions 和 tags 两个键")
    dims = data.get("dimensions") or {}
    if set(dims) != set(DIMENSIONS):
        raise ServiceError(f"{path}: dimensions 必须正好是 {', '.join(DIMENSIONS)}")
    tags = data.get("tags") or []
    if not all(isinstance(t, str) and t.strip() for t in tags) or len(set(tags)) != len(tags):
        raise ServiceError(f"{path}: tags 必须是不重复的非空字符串列表")
    return RatingConfig({k: dims[k] for k in DIMENSIONS}, list(tags))


@dataclass
class Event:
    """A streamed update of a chat turn: the text shown so far, and the stored message at the end."""

    text: str
    done: bool = False
    message: dict | None = None
    notices: list[str] = field(default_factory=list)


class EnginePool:
    """Engines by model version id; the primary one is always loaded, others on demand (LRU)."""

    def __init__(self, primary_id: int, primary_engine, loader: Callable[[dict], Any] | None = None):
        self.primary_id = primary_id
        self._engines: dict[int, Any] = {primary_id: primary_engine}
        self._order: list[int] = []
        self._loader = loader
        self._lock = threading.Lock()

    @property
    def primary(self):
        return self._engines[self.primary_id]

    def get(self, version: dict):
        with self._lock:
            if version["id"] in self._engines:
                return self._engines[version["id"]]
            if self._loader is None:
                raise ServiceError("这个模型版本未加载，无法生成回复")
            engine = self._loader(version)
            self._engines[version["id"]] = engine
            self._order.append(version["id"])
            while len(self._order) > MAX_LOADED_ENGINES - 1:
                self._engines.pop(self._order.pop(0), None)
            return engine


class Service(ScreeningMixin):
    def __init__(
        self,
        store: Store,
        stages: Stages,
        engines: EnginePool,
        rating: RatingConfig | None = None,
        rules: safety.RuleSet | None = None,
        resources: Any = None,
        model_check_engine=None,
    ):
        self.store = store
        self.stages = stages
        self.engines = engines
        self.rating = rating or load_rating_config()
        self.rules = rules or safety.RuleSet.load()
        self.resources = resources if resources is not None else safety.load_resources()
        self.model_check_engine = model_check_engine
        self._rng = random.Random()
        self._running: dict[int, Any] = {}  # conversation id -> Generation being streamed
        self._init_screening()

    # -- accounts ------------------------------------------------------------------------------
    def user(self, name: str | None) -> dict:
        if not name:
            raise ServiceError("请先登录")
        user = self.store.get_user(name)
        if user is None or user.get("disabled"):
            raise ServiceError("账号不存在或已停用")
        return user

    def require_admin(self, name: str | None) -> dict:
        user = self.user(name)
        if user["role"] != "admin":
            raise ServiceError("只有管理员可以使用这个功能")
        return user

    def _conversation(self, name: str, conversation_id: Any) -> tuple[dict, dict]:
        user = self.user(name)
        conversation = self.store.get_conversation(conversation_id)
        if conversation["user_name"] != user["name"] and user["role"] != "admin":
            raise ServiceError("这不是你的对话")
        return user, conversation

    def _message(self, name: str, message_id: Any) -> tuple[dict, dict]:
        message = self.store.get_message(message_id)
        user, _ = self._conversation(name, message["conversation_id"])
        return user, message

    # -- conversations ---------------------------------------------------------------------------
    def new_conversation(self, name: str, stage_id: str | None = None, case_id: str | None = None) -> dict:
        user = self.user(name)
        stage = self.stages.get(stage_id) if stage_id else self.stages.default
        if case_id:
            from mvp.counsel.cases import get_case

            if get_case(case_id) is None:
                raise ServiceError(f"示例个案不存在：{case_id}")
        cid = self.store.create_conversation(
            user["name"], stage.id, self.engines.primary_id, is_demo=user["role"] == "demo", case_id=case_id or None
        )
        return self.store.get_conversation(cid)

    def set_stage(self, name: str, conversation_id: int, stage_id: str) -> dict:
        _, conversation = self._conversation(name, conversation_id)
        stage = self.stages.get(stage_id)
        self.store.set_stage(conversation["id"], stage.id)
        return self.store.get_conversation(conversation["id"])

    def history(self, name: str, conversation_id: int) -> list[dict]:
        self._conversation(name, conversation_id)
        return self.store.get_history(conversation_id)

    def delete_conversation(self, name: str, conversation_id: int) -> dict:
        self.user(name)
        return self.store.delete_conversation(conversation_id, by_user=name)

    # -- chat ------------------------------------------------------------------------------------
    def check_message(self, text: Any) -> str:
        """Normalise a client message; empty -> ServiceError (nothing stored)."""
        if not isinstance(text, str):
            raise ServiceError(f"消息必须是文本，收到 {type(text).__name__}")
        text = text.strip()
        if not text:
            raise ServiceError("消息为空，已忽略")
        return check_text(text, "消息", MAX_MESSAGE_CHARS)

    def detect(self, text: str) -> safety.Detection:
        """The rule layer, combined with the model check when one is configured."""
        detection = self.rules.detect(text)
        if self.model_check_engine is not None:
            detection = safety.combine(detection, safety.model_check(text, self.model_check_engine))
        return detection

    def send(
        self,
        name: str,
        conversation_id: int,
        text: Any,
        stage_id: str | None = None,
        params: GenerationParams | None = None,
    ) -> Iterator[Event]:
        """Store the client message and stream the model's reply (see the module docstring)."""
        user, conversation = self._conversation(name, conversation_id)
        text = self.check_message(text)
        # Everything that can refuse the turn is checked before anything is written.
        stage = self.stages.get(stage_id) if stage_id else self.stages.get(conversation["stage_id"])
        detection = self.detect(text)
        if not self.active_screening(conversation["id"]):
            self._check_fits(conversation, stage, text, params, detection)
        if stage.id != conversation["stage_id"]:
            conversation = self.set_stage(name, conversation["id"], stage.id)
        user_message_id = self.store.add_user_message(conversation["id"], text, conversation["stage_id"])
        if detection.is_crisis:
            for category in detection.categories:
                self.store.add_flag(
                    conversation["id"], category, list(detection.evidence), source="rules",
                    message_id=user_message_id,
                )
        if self.active_screening(conversation["id"]):
            message = self._screening_turn(conversation, user_message_id, text, detection)
            yield Event(message["content"], done=True, message=message)
            return
        yield from self._reply(conversation, user_message_id, params, detection)

    def _check_fits(self, conversation: dict, stage, text: str, params: GenerationParams | None, detection) -> None:
        """Raise ContextTooLongError / a store ValidationError before the client message is stored."""
        history = self.store.get_history(conversation["id"], include_notices=False)
        engine = self.engines.primary
        params = params or engine.default_params()
        messages = build_messages(self._instruction(stage, detection), history + [{"role": "user", "content": text}])
        engine.budget.fit(messages, params.max_new_tokens)

    def regenerate(self, name: str, conversation_id: int, params: GenerationParams | None = None) -> Iterator[Event]:
        """A new reply to the newest client message; the earlier one is kept as an alternative."""
        _, conversation = self._conversation(name, conversation_id)
        self._no_screening(conversation["id"])
        parent = self._last_user_message(conversation["id"])
        yield from self._reply(conversation, parent["id"], params, self.detect(parent["content"]))

    def _no_screening(self, conversation_id: int) -> None:
        if self.active_screening(conversation_id):
            raise ServiceError("量表筛查进行中：请先回答完问题，再重新生成或比较回复")

    def _last_user_message(self, conversation_id: int) -> dict:
        history = [m for m in self.store.get_history(conversation_id, include_notices=False)]
        users = [m for m in history if m["role"] == "user"]
        if not users:
            raise ServiceError("还没有来访者消息，无法重新生成")
        return users[-1]

    def _context(self, conversation: dict, parent_id: int, detection) -> tuple[list[dict], str]:
        path = self.store.get_path(parent_id)
        stage = self.stages.get(conversation["stage_id"])
        return build_messages(self._instruction(stage, detection), path), stage.id

    @staticmethod
    def _instruction(stage, detection) -> str:
        """The system prompt of a turn: the stage's instruction, after the crisis one on a crisis."""
        if detection is not None and detection.is_crisis:
            return safety.CRISIS_INSTRUCTION + "\n\n" + stage.instruction
        return stage.instruction

    def _reply(
        self,
        conversation: dict,
        parent_id: int,
        params: GenerationParams | None,
        detection,
        version: dict | None = None,
        make_active: bool = True,
    ) -> Iterator[Event]:
        messages, stage_id = self._context(conversation, parent_id, detection)
        engine = self.engines.get(version) if version else self.engines.primary
        version_id = version["id"] if version else self.engines.primary_id
        params = params or engine.default_params()
        preamble = ""
        if detection is not None and detection.is_crisis:
            preamble = safety.safety_message(detection, self.resources) + "\n\n"
            yield Event(preamble)
        gen = engine.start(messages, params)
        self._running[conversation["id"]] = gen
        try:
            for _ in gen:
                yield Event(preamble + clean_model_text(gen.text))
        except GenerationError as exc:
            raise ServiceError(str(exc)) from None
        except GeneratorExit:
            # The consumer went away (a cancelled request, a closed tab): stop the model and keep
            # what was generated as an interrupted reply.
            gen.cancel()
            for _ in gen:
                pass
            if gen.result is not None:
                self._store_reply(conversation, parent_id, stage_id, version_id, gen.result, preamble, detection,
                                  make_active, system_prompt=messages[0]["content"])
            raise
        finally:
            self._running.pop(conversation["id"], None)
        message, notices = self._store_reply(
            conversation, parent_id, stage_id, version_id, gen.result, preamble, detection, make_active,
            system_prompt=messages[0]["content"],
        )
        yield Event(message["content"], done=True, message=message, notices=notices)

    def _store_reply(self, conversation, parent_id, stage_id, version_id, result, preamble, detection, make_active,
                     system_prompt: str):
        """Screen and store a finished (or interrupted) reply; returns (message, notices).

        The exact system prompt the model saw goes into gen_params (the export rebuilds each
        sample's prompt from it) and the length of a crisis preamble into the safety record, so
        training data can separate what the model wrote from what the app put in front of it."""
        text = clean_model_text(result.text)
        screen = self.rules.screen_reply(text, detection)
        content = preamble + (screen.text if screen.blocked else text)
        status = "blocked" if screen.blocked else ("interrupted" if result.finish_reason == "cancelled" else "complete")
        safety_info = None
        if preamble or screen.blocked:
            safety_info = {
                "categories": list(detection.categories) if detection else [],
                "evidence": list(detection.evidence) if detection else [],
                "preamble": bool(preamble),
                "preamble_chars": len(preamble),
                "blocked": screen.blocked,
                "reasons": list(screen.reasons),
                "original": text if screen.blocked else None,
            }
        message_id = self.store.add_assistant_message(
            conversation["id"],
            parent_id,
            content,
            stage_id=stage_id,
            model_version_id=version_id,
            gen_params={**result.params, "system_prompt": system_prompt},
            metrics=result.metrics(),
            status=status,
            safety=safety_info,
            make_active=make_active,
        )
        if screen.blocked:
            self.store.add_flag(
                conversation["id"], "unsafe_reply", list(screen.reasons), source="output_screen",
                message_id=message_id,
            )
        notices = []
        if result.dropped_turns:
            notices.append(f"对话较长，最早的 {result.dropped_turns} 轮未放入模型上下文")
        if screen.blocked:
            notices.append("模型回复未通过安全检查，已替换为安全回复并标记")
        return self.store.get_message(message_id), notices

    def stop(self, name: str, conversation_id: int) -> bool:
        """Stop the reply being generated in this conversation; it is stored as interrupted."""
        _, conversation = self._conversation(name, conversation_id)
        gen = self._running.get(conversation["id"])
        if gen is None:
            return False
        gen.cancel()
        return True

    # -- blind comparison --------------------------------------------------------------------------
    def compare(self, name: str, conversation_id: int, opponent_version_id: int | None = None) -> dict:
        """Two replies to the newest client message, in random order, blind to their source.

        With an opponent version, one reply comes from it and one from the primary model;
        otherwise both are samples of the primary model (different seeds)."""
        user, conversation = self._conversation(name, conversation_id)
        if user["role"] == "demo":
            raise ServiceError("演示账号不能比较回复")
        self._no_screening(conversation["id"])
        parent = self._last_user_message(conversation["id"])
        detection = self.detect(parent["content"])
        versions: list[dict | None] = [None, None]
        if opponent_version_id not in (None, "", self.engines.primary_id):
            versions[1] = self.store.get_model_version(opponent_version_id)
        ids = []
        for version in versions:
            engine = self.engines.get(version) if version else self.engines.primary
            params = engine.default_params()
            params.seed = self._rng.randrange(2**31)
            events = list(self._reply(conversation, parent["id"], params, detection, version, make_active=False))
            ids.append(events[-1].message["id"])
        self._rng.shuffle(ids)
        left, right = (self.store.get_message(i) for i in ids)
        return {"message_a": left["id"], "message_b": right["id"], "text_a": left["content"], "text_b": right["content"]}

    def choose(self, name: str, message_a: int, message_b: int, choice: str) -> dict:
        """Record which of the two displayed replies (a = left, b = right) is better; the chosen
        reply (the left one on a tie) continues the conversation."""
        user, a = self._message(name, message_a)
        _, b = self._message(name, message_b)
        if choice not in COMPARE_CHOICES:
            raise ServiceError(f"选择必须是 {' / '.join(COMPARE_CHOICES)} 之一，收到 {choice!r}")
        if user["role"] == "demo":
            raise ServiceError("演示账号不能评分或比较")
        comparison_id = self.store.add_comparison(a["id"], b["id"], choice, user["name"], shown_left=a["id"])
        keep = {"a": a, "b": b, "tie": a}.get(choice)
        if choice == "tie":
            self.store.set_active(a["id"])
        return {"comparison_id": comparison_id, "active_message": keep["id"] if keep else None}

    # -- ratings ---------------------------------------------------------------------------------
    def rate(self, name: str, message_id: int, **fields) -> dict:
        """A detailed rating (scores 1-5, tags, comment, rewrite); a new revision each time."""
        user, message = self._message(name, message_id)
        if user["role"] == "demo":
            raise ServiceError("演示账号不能评分")
        unknown = set(fields) - set(DIMENSIONS) - {"tags", "comment", "rewrite"}
        if unknown:
            raise ServiceError(f"未知的评分字段：{sorted(unknown)}")
        return self.store.add_rating(message["id"], user["name"], allowed_tags=self.rating.tags, **fields)

    def thumb(self, name: str, message_id: int, value: int) -> dict:
        user, message = self._message(name, message_id)
        if user["role"] == "demo":
            raise ServiceError("演示账号不能评分")
        self.store.set_thumb(message["id"], user["name"], value)
        return {"message_id": message["id"], "value": value}

    def ratings_of(self, name: str, message_id: int) -> dict | None:
        user, message = self._message(name, message_id)
        return self.store.get_rating(message["id"], user["name"])

    # -- admin -----------------------------------------------------------------------------------
    def flags(self, name: str, include_reviewed: bool = False) -> list[dict]:
        self.require_admin(name)
        return self.store.list_flags(include_reviewed=include_reviewed)

    def review_flag(self, name: str, flag_id: int, note: str | None = None) -> None:
        self.require_admin(name)
        self.store.mark_flag_reviewed(flag_id, name, note=note)

    def flags_table(self, name: str) -> list[list]:
        """Open flags as rows for a table: id, conversation, clinician, category, evidence, source, time."""
        rows = []
        for f in self.flags(name):
            evidence = f.get("evidence")
            if isinstance(evidence, (list, tuple)):
                evidence = "；".join(str(e) for e in evidence)
            rows.append([f["id"], f["conversation_id"], f.get("user_name"), safety.CATEGORY_NAMES.get(f["category"], "回复未通过安全检查" if f["category"] == "unsafe_reply" else f["category"]),
                         str(evidence or "")[:200], f["source"], f["created_at"]])
        return rows

    def dashboard(self, name: str) -> dict:
        """Figures for the admin dashboard as plain rows."""
        self.require_admin(name)
        store = self.store
        dims = [
            {"dimension": r["dimension_label"], "mean": r["mean"], "version": r["label"] or f"版本 {r['model_version_id']}"}
            for r in store.mean_scores_by_version()
        ]
        wins = [{"pair": r["pair"], "win_rate": r["win_rate_a"] or 0.0} for r in store.win_rates()]
        return {
            "counts": store.summary_counts(),
            "per_day": store.ratings_per_day(),
            "tags": store.tag_frequencies(),
            "dims": dims,
            "wins": wins,
            "activity": store.clinician_activity(),
        }

    def versions_table(self, name: str) -> list[list]:
        """Admin: registered model versions (newest first) with their lineage and metrics."""
        self.require_admin(name)
        rows = []
        for v in reversed(self.store.list_model_versions()):
            metrics = v.get("metrics") or {}
            shown = {k: metrics[k] for k in list(metrics)[:4]} if isinstance(metrics, dict) else metrics
            serving = "当前" if v["id"] == self.engines.primary_id else ""
            rows.append([v["id"], v.get("label") or "", v["base_model"], v.get("adapter") or "", v["quantization"],
                         v["backend"], v.get("parent_id") or "", str(shown or ""), v["created_at"], serving])
        return rows

    def export_training_data(self, name: str, out_root: str | Path | None = None, include_demo: bool = False) -> dict:
        """Admin: export feedback.db as training data (train.export with its defaults; PII scrubbed)."""
        import time as _time

        from train.export import ExportError, ExportOptions, export, summary_table

        self.require_admin(name)
        out = Path(out_root or Path(self.store.path).parent / "exports") / _time.strftime("%Y%m%d-%H%M%S")
        try:
            manifest = export(self.store.path, out, ExportOptions(include_demo=bool(include_demo)))
        except ExportError as exc:
            raise ServiceError(str(exc)) from None
        return {"path": str(out.resolve()), "summary": summary_table(manifest), "counts": manifest["counts"]}

    def model_versions(self) -> list[dict]:
        return self.store.list_model_versions()


__all__ = [
    "COMPARE_CHOICES",
    "DIMENSIONS",
    "EnginePool",
    "Event",
    "NotFoundError",
    "PermissionDeniedError",
    "Service",
    "ServiceError",
    "USER_ERRORS",
    "ValidationError",
    "load_rating_config",
]
