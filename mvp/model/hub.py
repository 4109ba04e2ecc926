"""A Hugging Face hub id -> a local snapshot folder: the local cache first, a download only when allowed.

The app runs with ``HF_HUB_OFFLINE=1`` so that nothing phones home (telemetry, version checks, a
library fetching a file behind our back). A model asked for by its hub id (``--model
Qwen/Qwen2.5-7B-Instruct``) is the one exception: when it is not in the local cache and downloads are
allowed, offline mode is lifted for this one ``snapshot_download`` call and restored afterwards.

Downloads are allowed unless the user set ``HF_HUB_OFFLINE`` themselves: the app records that choice in
``MVP_HUB_DOWNLOAD`` (``1``/``0``) before it switches offline mode on. When the model is neither cached
nor downloadable, the error says what to do (connect and retry, ``hf download`` on a machine that is
online then ``--model FOLDER``, unset ``HF_HUB_OFFLINE``, or ``--model demo``).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

DOWNLOAD_ENV = "MVP_HUB_DOWNLOAD"
# Weights, config and tokenizer; not the other formats a hub repository often carries as well.
ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py", "*.jinja")
_online_lock = threading.Lock()


class HubUnavailable(RuntimeError):
    """The hub id is not cached here and could not be downloaded; the message says what to do."""


def downloads_allowed() -> bool:
    """Whether a hub id that is not cached may be downloaded (see the module docstring)."""
    value = os.environ.get(DOWNLOAD_ENV)
    if value is not None:
        return value.strip() not in ("", "0", "false", "False", "no")
    return not _truthy(os.environ.get("HF_HUB_OFFLINE"))


def remember_user_choice() -> None:
    """Called by entry points BEFORE they set HF_HUB_OFFLINE=1: keep whether the user asked for offline."""
    os.environ.setdefault(DOWNLOAD_ENV, "0" if _truthy(os.environ.get("HF_HUB_OFFLINE")) else "1")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


@contextmanager
def _online():
    """Lift huggingface_hub's offline mode for one call (it is read at call time, not at import)."""
    from huggingface_hub import constants

    with _online_lock:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = False
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = before


def _advice(model_id: str) -> str:
    return (
        f"可以：① 确认这台机器能访问 Hugging Face（或镜像，HF_ENDPOINT）后重试；"
        f"② 在能联网的机器上运行 `hf download {model_id} --local-dir 某文件夹`，拷到这里后用 `--model 某文件夹`；"
        "③ 若设置了 HF_HUB_OFFLINE=1，去掉它才会下载；④ 先用 `--model demo` 试用内置演示模型"
    )


def local_snapshot(model_id: str, *, allow_download: bool | None = None, endpoint: str | None = None) -> str:
    """The local folder holding ``model_id``: from the cache, else downloaded when allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(model_id, local_files_only=True, allow_patterns=list(ALLOW_PATTERNS))
    except HFValidationError as exc:
        raise HubUnavailable(f"{model_id!r} 不是有效的模型 id 或文件夹：{exc}") from exc
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and kin): try the network
        pass
    allow = downloads_allowed() if allow_download is None else allow_download
    if not allow:
        raise HubUnavailable(f"本机缓存里没有模型 {model_id}，且已设置离线（HF_HUB_OFFLINE=1）。" + _advice(model_id))
    try:
        with _online():
            return snapshot_download(model_id, allow_patterns=list(ALLOW_PATTERNS), endpoint=endpoint)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repository: one clear message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubUnavailable(f"无法下载模型 {model_id}（{reason[:200]}）。" + _advice(model_id)) from exc
