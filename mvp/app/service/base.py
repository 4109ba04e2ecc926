"""The service's shared parts: its user errors, streamed events, the engine pool and account checks.

`ServiceBase` holds what every concern needs (the store, stages, engines, rating settings, safety
rules) and the permission checks that every method starts with.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mvp import safety
from mvp.assessment import AssessmentError
from mvp.counsel.stages import Stages
from mvp.model.dialogue import DialogueError
from mvp.model.engine import GenerationError
from mvp.store import NotFoundError, RatingConfig, Store, StoreError

MAX_LOADED_ENGINES = 2
log = logging.getLogger("mvp.app.service")
_ADDRESS = re.compile(r"(?:https?|wss?)://[^\s）)，,;；]+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")

# Control characters break storage and display; U+FFFD is what a byte-level model leaves of a character
# it did not finish (a small model does this): neither belongs on a clinician's screen.
_CONTROL_CHARS = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None, 0xFFFD: None}


def clean_model_text(text: str) -> str:
    """Drop control characters and U+FFFD a model may emit; keep \\n and \\t."""
    return text.translate(_CONTROL_CHARS)


class ServiceError(Exception):
    """A user-facing error: the message is shown as it is (Chinese)."""


def public_error(exc: BaseException) -> str:
    """What a clinician sees of a generation failure: no internal addresses, no raw exception text
    (the full text goes to the server log for the administrator)."""
    text = str(exc)
    log.warning("generation failed: %s", text)
    if text.startswith("生成失败："):  # the in-process engine's wrapper around an unexpected exception
        return "生成失败：模型运行出错，请重试；详情已写入服务器日志"
    text = _ADDRESS.sub("（地址已隐藏）", text)
    return text.split("：ConnectError")[0]


STATUS_LABELS = {"servable": "可服务", "candidate": "候选（未通过发布检查前不能作为主模型）", "refused": "未通过发布检查"}


def release_refusal(version: dict) -> str | None:
    """Why a model version may not be the app's primary model (None when it is servable): only a
    version the release gate promoted (train/gate.py), or one registered as servable, is offered."""
    status = version.get("status") or "servable"
    if status == "servable":
        return None
    release = version.get("release") or {}
    why = "；".join(release.get("reasons") or []) or ("尚未做发布检查" if status == "candidate" else "未记录原因")
    return (f"模型版本 {version['id']}（{version.get('label') or version['base_model']}）的发布状态是"
            f"“{STATUS_LABELS.get(status, status)}”，不能作为主模型提供：{why}。"
            "确需使用，请用 python -m train.pipeline 的 --promote-anyway \"理由\" 记录放行理由")


USER_ERRORS = (ServiceError, StoreError, DialogueError, GenerationError, AssessmentError, ValueError)


@dataclass
class Event:
    """A streamed update of a chat turn: the text shown so far, and the stored message at the end."""

    text: str
    done: bool = False
    message: dict | None = None
    notices: list[str] = field(default_factory=list)


class EnginePool:
    """Engines by model version id; the primary one is always loaded, others on demand (LRU, at most
    MAX_LOADED_ENGINES in memory). Loading an arena opponent takes seconds to minutes: it happens
    outside the pool's lock, so replies from engines already loaded are never held up by it, and two
    requests for the same version wait for one load instead of loading it twice."""

    def __init__(self, primary_id: int, primary_engine, loader: Callable[[dict], Any] | None = None):
        self.primary_id = primary_id
        self._engines: dict[int, Any] = {primary_id: primary_engine}
        self._order: list[int] = []  # loaded opponents, least recently used first
        self._loader = loader
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}

    @property
    def primary(self):
        return self._engines[self.primary_id]

    def _loaded(self, version_id: int):
        engine = self._engines.get(version_id)
        if engine is not None and version_id in self._order:
            self._order.remove(version_id)
            self._order.append(version_id)
        return engine

    def get(self, version: dict):
        version_id = version["id"]
        with self._lock:
            engine = self._loaded(version_id)
            if engine is not None:
                return engine
            if self._loader is None:
                raise ServiceError("这个模型版本未加载，无法生成回复")
            loading = self._loading.setdefault(version_id, threading.Lock())
        with loading:
            with self._lock:
                engine = self._loaded(version_id)
            if engine is not None:
                return engine  # loaded by the request we waited for
            engine = self._loader(version)
            with self._lock:
                self._engines[version_id] = engine
                self._order.append(version_id)
                while len(self._order) > MAX_LOADED_ENGINES - 1:
                    self._engines.pop(self._order.pop(0), None)
                self._loading.pop(version_id, None)
            return engine


class ServiceBase:
    def __init__(
        self,
        store: Store,
        stages: Stages,
        engines: EnginePool,
        rating: RatingConfig | None = None,
        rules: safety.RuleSet | None = None,
        resources: Any = None,
        model_check_engine=None,
        model_check_timeout_s: float = 8.0,
    ):
        self.store = store
        self.stages = stages
        self.engines = engines
        try:
            refusal = release_refusal(store.get_model_version(engines.primary_id))
        except NotFoundError:
            refusal = None
        if refusal:
            raise ServiceError(refusal)
        if rating is not None:
            store.rating = rating  # one rating config for the service and the store's validation
        self.rating = store.rating
        self.rules = rules or safety.RuleSet.load()
        self.resources = resources if resources is not None else safety.load_resources()
        self.model_check_engine = model_check_engine
        self.model_check_timeout_s = model_check_timeout_s
        self._rng = random.Random()
        self._running: dict[int, Any] = {}  # conversation id -> Generation being streamed
        self._generating: set[str] = set()  # accounts with a reply being generated (one each)
        self._generating_lock = threading.Lock()

    @contextlib.contextmanager
    def _one_generation(self, name: str):
        """One running generation per account: a second one (another tab, a script) is refused, so
        one account cannot keep the model slot busy for everybody else."""
        with self._generating_lock:
            if name in self._generating:
                raise ServiceError("你已有一条回复正在生成：请等它完成，或先点击“停止”")
            self._generating.add(name)
        try:
            yield
        finally:
            with self._generating_lock:
                self._generating.discard(name)

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

    def model_versions(self) -> list[dict]:
        return self.store.list_model_versions()
