"""Helpers shared by the reliability tests (load, crash, bad input, auth): short replies, seeded
accounts, database snapshots, a raw HTTP caller for what gradio_client cannot send, percentiles.

Not a test module: imported by tests/test_load.py, test_crash.py, test_fuzz_api.py, test_auth.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import httpx

from mvp.store import Store

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "reliab-pass-123"
# role of each seeded account
ACCOUNTS = {"boss": "admin", "wang": "clinician", "li": "clinician", "expo": "demo"}
# Tables whose rows the app writes; compared before and after every call.
TABLES = ("conversations", "messages", "ratings", "thumbs", "comparisons", "flags", "deletion_log", "assessments",
          "assessment_items", "rating_batches", "rating_tasks")
# Named API endpoints registered by mvp.app.ui.register_api.
ENDPOINTS = ("/stages", "/new_conversation", "/chat", "/regenerate", "/stop", "/history", "/rate", "/thumb",
             "/compare", "/choose", "/flags", "/review_flag", "/start_screening", "/screening", "/correct_item",
             "/audit", "/delete_conversation", "/conversations", "/review_queue", "/abandon_screening",
             # mvp.app.ui.tasks.register_task_api
             "/my_tasks", "/next_task", "/submit_task", "/skip_task", "/create_batch", "/create_version_batch",
             "/batches", "/batch_progress", "/agreement",
             # session memory and stages (mvp.app.ui.api.register_api)
             "/memory", "/correct_summary", "/answer_suggestion", "/new_session")
TRACEBACK_MARKERS = ("Traceback", 'File "', "line ", "site-packages")
INTERNAL_ERROR_PREFIX = "内部错误"  # mvp.app.ui.user_errors: an exception the service did not expect


def start_app(model_dir: Path, db: Path, log: Path, max_new_tokens: int):
    """LiveApp with replies capped at `max_new_tokens` and one torch thread in the app process.

    One thread: on the shared 2-core machines, torch's default (a thread per core) made the tiny
    model's replies up to 30x slower whenever other processes ran (OpenMP threads wait on each other)."""
    from tests.live_app import LiveApp

    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # read by the subprocess LiveApp starts, here and now only
    try:
        return LiveApp(model_dir, db, log, *fast_args(max_new_tokens))
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def fast_args(max_new_tokens: int) -> tuple[str, ...]:
    """Extra `app.py` flags for LiveApp: replies capped at `max_new_tokens` (a later flag wins over
    LiveApp's own default), so a chat turn on the tiny test model takes a fraction of a second."""
    return ("--max-new-tokens", str(max_new_tokens))


def seed_accounts(db: Path, accounts: dict[str, str] = ACCOUNTS, password: str = PASSWORD) -> Store:
    store = Store(db)
    for name, role in accounts.items():
        store.add_user(name, password, role)
    return store


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    from tests.live_app import expand_scores

    conn = connect(db)
    try:
        return expand_scores([dict(r) for r in conn.execute(sql, params)])
    finally:
        conn.close()


def counts(db: Path) -> dict[str, int]:
    conn = connect(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def digest(db: Path) -> str:
    """A hash of every row of every written table (one read transaction): equal digests mean the
    call wrote nothing at all, not even an update."""
    conn = connect(db)
    h = hashlib.sha256()
    try:
        conn.execute("BEGIN")
        for table in TABLES:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                h.update(repr(tuple(row)).encode("utf-8", "surrogatepass"))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return h.hexdigest()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def percentiles(values: list[float]) -> dict[str, float]:
    """n, p50, p99, max (seconds): p99 by the nearest-rank method, exact for the samples seen."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    rank = max(0, min(len(ordered) - 1, int(round(0.99 * len(ordered) + 0.5)) - 1))
    return {"n": len(ordered), "p50_s": round(statistics.median(ordered), 4), "p99_s": round(ordered[rank], 4),
            "max_s": round(ordered[-1], 4), "mean_s": round(statistics.fmean(ordered), 4)}


def clean_error(message: Any) -> str | None:
    """Why an error message is not a clear, user-facing one (None when it is)."""
    if not isinstance(message, str) or not message.strip() or message.strip() in ("None", "Error", "null"):
        return f"no message ({message!r})"
    if any(marker in message for marker in TRACEBACK_MARKERS):
        return "traceback text in the message"
    if message.startswith(INTERNAL_ERROR_PREFIX):
        return "an unexpected exception inside the app (generic internal error)"
    return None


class RawCaller:
    """Calls a named endpoint over the `/gradio_api/call/<name>` HTTP route with a JSON body written
    by hand: gradio_client refuses to encode a lone surrogate ("\\ud800") or NaN, but a browser or
    any other HTTP client can send them (JSON escapes and Python's json.loads accept both).

    Returns ("complete", data) or ("error", message); HTTP-level refusals give ("http", status)."""

    def __init__(self, url: str, cookies: dict[str, str] | None = None, timeout: float = 60):
        self.base = url.rstrip("/") + "/gradio_api/call"
        self.http = httpx.Client(cookies=cookies or {}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __call__(self, api_name: str, data: list) -> tuple[str, Any]:
        # ensure_ascii escapes lone surrogates as \ud800; allow_nan writes NaN / Infinity literals.
        body = json.dumps({"data": data}, ensure_ascii=True, allow_nan=True)
        name = api_name.lstrip("/")
        resp = self.http.post(f"{self.base}/{name}", content=body.encode("ascii"),
                              headers={"Content-Type": "application/json"})
        if resp.status_code != 200:
            return "http", resp.status_code
        event_id = resp.json()["event_id"]
        event, last = None, None
        with self.http.stream("GET", f"{self.base}/{name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error", "generating"):
                    last = json.loads(line.split(":", 1)[1])
                    if event in ("complete", "error"):
                        return event, last
        return "eof", last
