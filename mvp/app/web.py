"""HTTP-level protections around the Gradio app, as one ASGI middleware given to ``launch()``.

    demo.launch(..., app_kwargs={"middleware": [Middleware(SecurityMiddleware, policy=policy)]})

- Origins: a request that carries an ``Origin`` header is served only when that origin is the
  app's own (same host as the request) or in ``--allowed-origins``; a page on another site cannot
  use a logged-in clinician's cookie to read ``/flags`` or ``/history``.
- Cookies: the session cookie Gradio sets (``SameSite=None``) is rewritten to ``SameSite=Lax``.
- Uploads: ``/upload`` is refused (the app takes no files). Other bodies are not capped here: an
  oversized message must reach the app and get its clear "too long" error.
- Sessions: a session ends after ``idle_s`` without a request and ``max_age_s`` after login, and
  when its account's password is changed or the account is disabled (the user row's
  ``updated_at`` is later than the login). Ending a session removes Gradio's token, so the next
  request needs a new login; the logout button is Gradio's own ``/logout``.
- The client address of each request is made available to the login guard (mvp.app.auth.CLIENT).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from mvp.app.auth import CLIENT

IDLE_S = 8 * 3600.0
MAX_AGE_S = 24 * 3600.0
USER_CHECK_INTERVAL_S = 2.0  # an account's row is re-read at most this often per session


@dataclass
class SecurityPolicy:
    allowed_origins: tuple[str, ...] = ()
    idle_s: float = IDLE_S
    max_age_s: float = MAX_AGE_S
    # name -> the account row ({"disabled", "updated_at"}) or None; mvp.store.Store.get_user
    get_user: Callable[[str], dict | None] | None = None
    clock: Callable[[], float] = time.monotonic
    sessions: dict[str, dict] = field(default_factory=dict)  # token -> login time, last seen
    lock: threading.Lock = field(default_factory=threading.Lock)


def _origin(value: str) -> str:
    parts = urlsplit(value.strip().rstrip("/"))
    return f"{parts.scheme}://{parts.netloc}".lower()


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookies(scope) -> dict[str, str]:
    raw = _header(scope, b"cookie") or ""
    out = {}
    for part in raw.split(";"):
        if "=" in part:
            k, v = part.strip().split("=", 1)
            out[k] = v
    return out


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class SecurityMiddleware:
    def __init__(self, app, policy: SecurityPolicy):
        self.app = app
        self.policy = policy
        self.allowed = {_origin(o) for o in policy.allowed_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        CLIENT.set(client[0] if client else "-")
        path = scope.get("path", "")
        if path.rstrip("/").endswith("/upload"):
            return await _refuse(send, 413, "本应用不接收文件上传")
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_ok(origin, scope):
            return await _refuse(send, 403, "请求来源不被允许")
        gradio_app = scope.get("app")
        self._expire(scope, gradio_app)
        login = path.rstrip("/").endswith("/login")

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                message["headers"] = [self._cookie_header(k, v, login) for k, v in message.get("headers", [])]
            await send(message)

        return await self.app(scope, receive, send_wrapper)

    def _origin_ok(self, origin: str, scope) -> bool:
        value = _origin(origin)
        if value in self.allowed:
            return True
        host = (_header(scope, b"host") or "").lower()
        return bool(host) and urlsplit(value).netloc == host  # same origin as the request

    def _cookie_header(self, key: bytes, value: bytes, login: bool) -> tuple[bytes, bytes]:
        if key.lower() != b"set-cookie" or not value.startswith(b"access-token"):
            return key, value
        text = value.decode("latin-1")
        if login:
            token = text.split(";", 1)[0].split("=", 1)[1].strip('"')
            with self.policy.lock:
                now = self.policy.clock()
                self.policy.sessions[token] = {"login_at": _utc_now(), "started": now, "seen": now,
                                               "checked": now}
        text = text.replace("SameSite=none", "SameSite=lax").replace("SameSite=None", "SameSite=lax")
        return key, text.encode("latin-1")

    def _expire(self, scope, gradio_app) -> None:
        tokens = getattr(gradio_app, "tokens", None)
        cookie_id = getattr(gradio_app, "cookie_id", None)
        if tokens is None or cookie_id is None:
            return
        cookies = _cookies(scope)
        for token in {cookies.get(f"access-token-{cookie_id}"), cookies.get(f"access-token-unsecure-{cookie_id}")}:
            if token and token in tokens and self._ended(token, tokens[token]):
                tokens.pop(token, None)

    def _ended(self, token: str, name: str) -> bool:
        policy = self.policy
        now = policy.clock()
        with policy.lock:
            session = policy.sessions.get(token)
            if session is None:  # a token from before this process tracked it: start tracking now
                session = policy.sessions[token] = {"login_at": _utc_now(), "started": now, "seen": now,
                                                    "checked": now}
            expired = now - session["seen"] > policy.idle_s or now - session["started"] > policy.max_age_s
            recheck = now - session["checked"] >= USER_CHECK_INTERVAL_S
            session["seen"] = now
            if recheck:
                session["checked"] = now
        if not expired and recheck and policy.get_user is not None:
            user = policy.get_user(name)
            expired = user is None or bool(user.get("disabled")) or user.get("updated_at", "") > session["login_at"]
        if expired:
            with policy.lock:
                policy.sessions.pop(token, None)
        return expired


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
