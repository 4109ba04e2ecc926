"""The audit log that admins read: who did what to which record, and when (never content).

Table ``audit_log``. One row per administrative act: a flag reviewed, an export made, a
conversation deleted, an account created, disabled, enabled or given a new password. ``detail`` is a
small JSON object (a note length, an export's counts), never message text or a password.
"""

from __future__ import annotations

from typing import Any

from .base import StoreBase
from .schema import utc_now
from .validation import (
    AUDIT_ACTIONS,
    check_choice,
    check_label,
    check_limit,
    check_optional_label,
    from_json,
    to_json,
)


class AuditMixin(StoreBase):
    def add_audit(self, actor: str, action: str, target: str | None = None, detail: dict | None = None) -> int:
        """Record an administrative act; ``actor`` is an account name or "cli" (python -m mvp.app.users)."""
        actor = check_label(actor, "操作人")
        action = check_choice(action, "审计动作", AUDIT_ACTIONS)
        target = check_optional_label(None if target is None else str(target), "审计对象")
        detail_json = to_json(detail, "审计详情")
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (utc_now(), actor, action, target, detail_json),
            )
            return int(cursor.lastrowid)

    def list_audit(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, newest first."""
        limit = check_limit(limit)
        with self._read() as conn:
            rows = self._rows(conn, "SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
        for row in rows:
            row["detail"] = from_json(row["detail"])
        return rows

    def unlocked_since(self, name: str, since: str) -> bool:
        """Whether an admin lifted `name`'s login lock after `since` (ISO time; `mvp.app.users unlock`)."""
        with self._read() as conn:
            row = self._row(conn, "SELECT 1 FROM audit_log WHERE action = 'account_unlocked' AND target = ?"
                            " AND at > ? LIMIT 1", (name, since))
        return row is not None
