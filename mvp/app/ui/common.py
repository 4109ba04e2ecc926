"""What the UI handlers and the API endpoints share: the logged-in user's name, user errors turned
into toasts (never a traceback), and the stream throttle.
"""

from __future__ import annotations

import functools
import logging
import time

import gradio as gr

from mvp.app.service import USER_ERRORS

from .page import TOAST_TITLES

log = logging.getLogger("mvp.app")

STREAM_INTERVAL_S = 0.05  # at most one streamed update per 50 ms: each update costs the server time
INTERNAL_ERROR = "内部错误（{kind}），请重试或联系管理员"
# Toast titles: passed to Gradio, and shown by page.CSS (Gradio 6.31 shows the English type instead).
ERROR_TITLE, INFO_TITLE, WARNING_TITLE = TOAST_TITLES["error"], TOAST_TITLES["info"], TOAST_TITLES["warning"]


def info(message: str) -> None:
    """A calm toast with a Chinese title: a normal situation (nothing to act on yet, saved, ...)."""
    gr.Info(message, title=INFO_TITLE)


def warning(message: str) -> None:
    gr.Warning(message, title=WARNING_TITLE)


def _user(fn, exc: Exception) -> gr.Error:
    # An ordinary user error: one log line, no traceback (gr.Error prints one unless told not to).
    log.info("user error in %s: %s", getattr(fn, "__name__", "?"), exc)
    return gr.Error(str(exc), print_exception=False, title=ERROR_TITLE)


def _internal(exc: Exception) -> gr.Error:
    # A real fault: the traceback goes to the server log, the page gets the kind of error only.
    log.exception("unexpected error in a request")
    return gr.Error(INTERNAL_ERROR.format(kind=type(exc).__name__), title=ERROR_TITLE)


def _toast(fn, exc: Exception) -> Exception:
    """The gr.Error to raise for an exception of handler `fn`: a handler's own gr.Error as it is, a
    user error as a calm message, anything else as an internal error (never a traceback on the page)."""
    if isinstance(exc, gr.Error):
        exc.print_exception = False  # raised on purpose by a handler: a message, not a fault
        exc.title = ERROR_TITLE if exc.title == "Error" else exc.title
        return exc
    if isinstance(exc, USER_ERRORS):
        return _user(fn, exc)
    return _internal(exc)


def user_errors(fn):
    """Turn a user error into a toast; keep unexpected errors out of the page as well."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _toast(fn, exc) from None

    return wrapper


def user_errors_stream(fn):
    """`user_errors` for a streaming (generator) handler."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except Exception as exc:
            raise _toast(fn, exc) from None

    return wrapper


def throttled(events):
    """Pass on at most one event per STREAM_INTERVAL_S, and always the last one."""
    last_sent = 0.0
    pending = None
    try:
        for event in events:
            now = time.monotonic()
            if event.done or now - last_sent >= STREAM_INTERVAL_S:
                pending = None
                last_sent = now
                yield event
            else:
                pending = event
        if pending is not None:
            yield pending
    finally:
        events.close()  # a cancelled request stops the model now (the reply is kept as interrupted)


def username(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None
