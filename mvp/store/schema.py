"""The schema of feedback.db: applying the numbered migrations (migrations.py), and the connection settings.

Migrations are applied in order, each recorded in the ``migrations`` table (version, name, applied_at)
and mirrored in ``PRAGMA user_version``; opening an older database applies the missing ones in one
``BEGIN IMMEDIATE`` transaction, so two processes opening the same file cannot both migrate it and a
failing migration leaves the file as it was. Never edit a released migration: append a new one.
A migration that rebuilds a table must follow SQLite's 12-step ALTER procedure (foreign keys off).

Design notes:
- ``messages.parent_id`` has no ON DELETE action on purpose: a self-referencing cascade recurses once
  per turn and hits SQLite's trigger-depth limit on long conversations. Messages are only ever
  deleted together with their conversation, in one statement, which leaves no dangling parent.
- At most one active alternative per turn is enforced by a partial unique index.
- ``ratings.is_latest`` marks the revision that counts, so exports need no per-row subquery.
- ``ratings.scores`` is a JSON object ``{dimension id: 1-5}`` (migration 6 converted the five score
  columns of migration 1): a dimension added to config/rating.yaml needs no migration.
- ``rating_tasks`` (migration 10) assign one reply to one clinician within a ``rating_batches`` row;
  the judgement itself is an ordinary ``ratings`` / ``thumbs`` row, so exports need nothing new.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from .errors import StoreError
from .migrations import MIGRATIONS, Migration

__all__ = ["BUSY_TIMEOUT_S", "LATEST_VERSION", "MIGRATIONS", "Migration", "SYNCHRONOUS", "connect", "migrate",
           "schema_version", "utc_now"]

BUSY_TIMEOUT_S = 10.0
SYNCHRONOUS = "FULL"  # every committed rating survives a power cut, not only a crash

LATEST_VERSION = MIGRATIONS[-1].version


def utc_now() -> str:
    """The timestamp format used in every table: ISO 8601 UTC with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect(path: str) -> sqlite3.Connection:
    """A new connection with the store's settings; transactions are explicit (autocommit mode)."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Apply pending migrations up to ``target`` (default: all); return the resulting version."""
    target = LATEST_VERSION if target is None else target
    if schema_version(conn) == target:
        return target
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"""
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM migrations").fetchone()[0]
        if current > LATEST_VERSION:
            raise StoreError(
                f"数据库结构版本为 {current}，比本程序支持的版本 {LATEST_VERSION} 新：请升级程序后再打开"
            )
        for migration in MIGRATIONS:
            if current < migration.version <= target:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, utc_now()),
                )
                current = migration.version
        conn.execute(f"PRAGMA user_version = {int(current)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return current
