"""Connections, transactions and row helpers shared by every part of the Store.

Threading model (Gradio runs sync handlers in worker threads; a SQLite object must not be shared
between threads without care):
- writes go through ONE writer connection per Store, used only while holding a per-file lock, inside
  a ``BEGIN IMMEDIATE`` transaction that commits or rolls back as a whole. Other processes (the users
  CLI, train/) are kept in order by SQLite's own lock and a 10 s busy timeout;
- reads open their own short-lived connection per call, so they never block on the writer (WAL).
Privacy: every connection turns on ``PRAGMA secure_delete`` (deleted rows are overwritten with zeros,
not left readable in free pages), and the database, its WAL and SHM files are created owner-only
(0600, ``FILE_MODE``); files that already exist with wider modes are narrowed when a Store opens them.
Other modules that write client data to disk use ``create_private_file`` / ``make_private``.
Keeping the writer connection open matters for speed: a connection's first write syncs the WAL file
and its directory, so a fresh connection per write costs two fsyncs instead of one. It also keeps the
WAL file in place between calls (the last connection to close would checkpoint and delete it).
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

FILE_MODE = 0o600                 # database, WAL, SHM and exports: readable by the owner only
SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private(path: str | os.PathLike[str]) -> None:
    """chmod an existing file to ``FILE_MODE`` (no-op when it does not exist)."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with mode 0600 when missing (race-free: O_CREAT with the mode), and
    narrow its mode when it exists. SQLite gives the WAL, SHM and journal files the mode of the
    database file, so creating the database this way keeps them private too."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    make_private(path)


def connect(path: str) -> sqlite3.Connection:
    """``schema.connect`` plus the privacy pragmas; every connection of the Store comes from here."""
    conn = schema.connect(path)
    conn.execute("PRAGMA secure_delete = ON")
    return conn

_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock_for(path: str) -> threading.RLock:
    with _write_locks_guard:
        return _write_locks.setdefault(path, threading.RLock())


def _busy(exc: sqlite3.OperationalError) -> StoreError:
    return StoreError(f"数据库繁忙或不可用（{exc}），请稍后重试")


class StoreBase:
    """Owns the file, the connections and the transaction discipline; the API lives in the mixins."""

    def __init__(self, path: str | os.PathLike[str], scrub: Scrubber | None = None,
                 scrub_demo: Scrubber | None = None) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise ValidationError(f"数据库必须是一个文件路径，收到 {text!r}")
        if any(f is not None and not callable(f) for f in (scrub, scrub_demo)):
            raise ValidationError("scrub 必须是一个函数（str -> str）")
        self.path = os.path.abspath(text)
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise StoreError(f"数据库所在目录不存在：{folder}")
        self._scrub = scrub
        self._scrub_demo = scrub_demo  # demo conversations only (their chats are shown to outsiders)
        try:
            create_private_file(self.path)
        except OSError as exc:
            raise StoreError(f"无法创建数据库文件 {self.path}：{exc}") from None
        self._write_lock = _write_lock_for(os.path.realpath(self.path))
        self._writer: sqlite3.Connection | None = None
        self._writer_pid = 0
        try:
            with self._write_lock:
                conn = self._writer_connection()
                # journal_mode=WAL is persistent in the file; sqlite-utils switches it if needed.
                sqlite_utils.Database(conn, execute_plugins=False).enable_wal()
                self.schema_version = schema.migrate(conn)
            for suffix in SIDE_FILES:     # files left by an older version with the default umask
                make_private(self.path + suffix)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"无法打开数据库 {self.path}：{exc}") from None

    def _writer_connection(self) -> sqlite3.Connection:
        """The writer connection (call with the write lock held); reopened after a fork."""
        if self._writer is None or self._writer_pid != os.getpid():
            self._writer = connect(self.path)
            self._writer_pid = os.getpid()
        return self._writer

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the writer connection (read connections are closed after each call). A closed
        Store reopens it on the next write."""
        with self._write_lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                self._writer.close()
            self._writer = None

    def __enter__(self) -> "StoreBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def database(self) -> sqlite_utils.Database:
        """A sqlite-utils Database on a new connection, for inspection (tests, notebooks).

        The caller owns it and must close it; all writes should go through the Store's methods.
        """
        return sqlite_utils.Database(connect(self.path), execute_plugins=False)

    # -- connections and transactions --------------------------------------------------------
    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for reads; ``snapshot=True`` makes several queries see one consistent state."""
        try:
            conn = connect(self.path)
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
            conn = self._writer_connection()
            if conn.in_transaction:  # re-entered from inside a write: join that transaction
                yield conn
                return
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
                self._writer = None  # start the next write on a fresh connection
                conn.close()
                raise _busy(exc) from None
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

    def _scrubber(self, demo: bool):
        return self._scrub or (self._scrub_demo if demo else None)

    def _is_demo(self, conversation_id: int) -> bool:
        """Whether a conversation is a demo one (fixed at creation, so safe to read before a write)."""
        if self._scrub_demo is None or self._scrub is not None:
            return False
        with self._read() as conn:
            row = self._row(conn, "SELECT is_demo FROM conversations WHERE id = ?", (conversation_id,))
        return bool(row and row["is_demo"])

    def _scrubbed(self, text: str | None, demo: bool = False) -> str | None:
        """Apply the privacy scrubber (when configured) to text that is about to be stored."""
        scrub = self._scrubber(demo)
        if text is None or scrub is None:
            return text
        result = scrub(text)
        if not isinstance(result, str):
            raise StoreError("隐私脱敏函数没有返回文本，未保存")
        return result

    def _scrub_json(self, value: Any, demo: bool = False) -> Any:
        """Scrub every string inside a JSON-like value (evidence lists may quote the client)."""
        if self._scrubber(demo) is None:
            return value
        if isinstance(value, str):
            return self._scrubbed(value, demo)
        if isinstance(value, (list, tuple)):
            return [self._scrub_json(v, demo) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub_json(v, demo) for k, v in value.items()}
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
