"""Connections, transactions and row helpers shared by every part of the Store.

Threading model (Gradio runs sync handlers in worker threads): every call opens its own short-lived
connection, so no SQLite object ever crosses a thread. Writes are serialised by one lock per database
file in this process and run in ``BEGIN IMMEDIATE`` transactions (other processes, such as the users
CLI or train/, wait on SQLite's busy timeout instead). One idle "anchor" connection stays open for the
Store's lifetime so that closing the per-call connections does not checkpoint and delete the WAL file
each time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from . import schema
from .errors import NotFoundError, PermissionDeniedError, StoreError, ValidationError

Scrubber = Callable[[str], str]

_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock_for(path: str) -> threading.RLock:
    with _write_locks_guard:
        return _write_locks.setdefault(path, threading.RLock())


def _busy(exc: sqlite3.OperationalError) -> StoreError:
    return StoreError(f"数据库繁忙或不可用（{exc}），请稍后重试")


class StoreBase:
    """Owns the file, the connections and the transaction discipline; the API lives in the mixins."""

    def __init__(self, path: str | os.PathLike[str], scrub: Scrubber | None = None) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise ValidationError(f"数据库必须是一个文件路径，收到 {text!r}")
        if scrub is not None and not callable(scrub):
            raise ValidationError("scrub 必须是一个函数（str -> str）")
        self.path = os.path.abspath(text)
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise StoreError(f"数据库所在目录不存在：{folder}")
        self._scrub = scrub
        self._write_lock = _write_lock_for(os.path.realpath(self.path))
        try:
            self._anchor: sqlite3.Connection | None = schema.connect(self.path)
            # journal_mode=WAL is persistent in the file; sqlite-utils switches it if needed.
            sqlite_utils.Database(self._anchor, execute_plugins=False).enable_wal()
            with self._write_lock:
                self.schema_version = schema.migrate(self._anchor)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"无法打开数据库 {self.path}：{exc}") from None

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the anchor connection (per-call connections are already closed)."""
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def __enter__(self) -> "StoreBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        anchor = getattr(self, "_anchor", None)
        if anchor is not None:
            try:
                anchor.close()
            except sqlite3.Error:
                pass

    def database(self) -> sqlite_utils.Database:
        """A sqlite-utils Database on a new connection, for inspection (tests, notebooks).

        The caller owns it and must close it; all writes should go through the Store's methods.
        """
        return sqlite_utils.Database(schema.connect(self.path), execute_plugins=False)

    # -- connections and transactions --------------------------------------------------------
    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for reads; ``snapshot=True`` makes several queries see one consistent state."""
        try:
            conn = schema.connect(self.path)
        except sqlite3.OperationalError as exc:
            raise _busy(exc) from None
        try:
            if snapshot:
                conn.execute("BEGIN")
            yield conn
        except sqlite3.OperationalError as exc:
            raise _busy(exc) from None
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        if not self._write_lock.acquire(timeout=schema.BUSY_TIMEOUT_S):
            raise StoreError(f"数据库繁忙：等待写入超过 {schema.BUSY_TIMEOUT_S:g} 秒，请稍后重试")
        try:
            conn = schema.connect(self.path)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"数据完整性检查失败，未保存：{exc}") from None
            except sqlite3.OperationalError as exc:
                raise _busy(exc) from None
            finally:
                conn.close()
        finally:
            self._write_lock.release()

    # -- row helpers -------------------------------------------------------------------------
    @staticmethod
    def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    @classmethod
    def _row(
        cls, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
    ) -> dict[str, Any] | None:
        rows = cls._rows(conn, sql, params)
        return rows[0] if rows else None

    def _scrubbed(self, text: str | None) -> str | None:
        """Apply the privacy scrubber (when configured) to text that is about to be stored."""
        if text is None or self._scrub is None:
            return text
        result = self._scrub(text)
        if not isinstance(result, str):
            raise StoreError("隐私脱敏函数没有返回文本，未保存")
        return result

    def _scrub_json(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value (evidence lists may quote the client)."""
        if self._scrub is None:
            return value
        if isinstance(value, str):
            return self._scrubbed(value)
        if isinstance(value, list):
            return [self._scrub_json(v) for v in value]
        if isinstance(value, tuple):
            return [self._scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub_json(v) for k, v in value.items()}
        return value

    # -- lookups used inside transactions ----------------------------------------------------
    def _user_row(self, conn: sqlite3.Connection, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"用户名必须是非空文本，收到 {name!r}")
        row = self._row(conn, "SELECT name, role, disabled FROM users WHERE name = ?", (name,))
        if row is None:
            raise NotFoundError(f"用户不存在：{name}")
        return row

    def _active_user(
        self, conn: sqlite3.Connection, name: Any, action: str, *, roles: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The user row, refusing disabled accounts and roles not in ``roles``."""
        row = self._user_row(conn, name)
        if row["disabled"]:
            raise PermissionDeniedError(f"账户已停用，不能{action}：{name}")
        if roles is not None and row["role"] not in roles:
            role_names = {"demo": "演示账户", "clinician": "咨询师账户", "admin": "管理员账户"}
            raise PermissionDeniedError(f"{role_names.get(row['role'], row['role'])}不能{action}：{name}")
        return row

    def _conversation_row(self, conn: sqlite3.Connection, conversation_id: int) -> dict[str, Any]:
        row = self._row(conn, "SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if row is None:
            raise NotFoundError(f"对话不存在：{conversation_id}")
        return row

    def _message_row(self, conn: sqlite3.Connection, message_id: int) -> dict[str, Any]:
        row = self._row(conn, "SELECT * FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFoundError(f"消息不存在：{message_id}")
        return row

    def _touch_conversation(self, conn: sqlite3.Connection, conversation_id: int, now: str) -> None:
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))

    @staticmethod
    def _deactivate_replies(conn: sqlite3.Connection, parent_id: int) -> None:
        conn.execute(
            "UPDATE messages SET is_active = 0"
            " WHERE parent_id = ? AND role = 'assistant' AND is_active = 1",
            (parent_id,),
        )

    def _activate(self, conn: sqlite3.Connection, message: dict[str, Any]) -> None:
        if message["role"] != "assistant":
            raise ValidationError(f"只有模型回复可以设为当前回复，消息 {message['id']} 是 {message['role']} 消息")
        self._deactivate_replies(conn, message["parent_id"])
        conn.execute("UPDATE messages SET is_active = 1 WHERE id = ?", (message["id"],))
        self._touch_conversation(conn, message["conversation_id"], schema.utc_now())
