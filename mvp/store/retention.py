"""Retention: delete conversations nobody has touched for a given number of days.

`purge_conversations(older_than_days, dry_run=True)` lists (and, without dry_run, hard-deletes with
everything attached, ON DELETE CASCADE) every conversation last updated before the cut-off. A
conversation with an open safety flag is never purged (the flag must be reviewed first). Each purge
is recorded in deletion_log (deleted_by "retention", with the flags' categories and evidence) and,
once per run, in the audit log. Run it as `python -m mvp.app.users purge --older-than DAYS`.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from .base import StoreBase
from .errors import ValidationError
from .schema import utc_now

RETENTION_ACTOR = "retention"
MAX_RETENTION_DAYS = 36500


class RetentionMixin(StoreBase):
    def purge_conversations(self, older_than_days: int, dry_run: bool = True) -> dict[str, Any]:
        """{"cutoff", "dry_run", "conversations": [ids purged or to purge], "messages", "kept_flagged": [ids]}."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or not (
                1 <= older_than_days <= MAX_RETENTION_DAYS):
            raise ValidationError(f"保留天数必须是 1 到 {MAX_RETENTION_DAYS} 之间的整数，收到 {older_than_days!r}")
        cutoff = (datetime.now(timezone.utc) - timedelta(days=older_than_days)).isoformat(timespec="milliseconds")
        with self._write() as conn:
            rows = self._rows(conn, (
                "SELECT c.id, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS messages,"
                " (SELECT COUNT(*) FROM flags f WHERE f.conversation_id = c.id AND f.reviewed_at IS NULL) AS open_flags"
                " FROM conversations c WHERE c.updated_at < ? ORDER BY c.id"), (cutoff,))
            purge = [r for r in rows if not r["open_flags"]]
            result = {"cutoff": cutoff, "dry_run": dry_run, "conversations": [r["id"] for r in purge],
                      "messages": sum(r["messages"] for r in purge),
                      "kept_flagged": [r["id"] for r in rows if r["open_flags"]]}
            if dry_run:
                return result
            now = utc_now()
            for row in purge:
                flags = self._rows(conn, "SELECT categories, category, evidence, source FROM flags"
                                   " WHERE conversation_id = ? ORDER BY id", (row["id"],))
                record = [{"categories": json.loads(f["categories"] or json.dumps([f["category"]])),
                           "evidence": json.loads(f["evidence"]), "source": f["source"], "reviewed": True}
                          for f in flags]
                conn.execute("DELETE FROM conversations WHERE id = ?", (row["id"],))
                conn.execute(
                    "INSERT INTO deletion_log (conversation_id, deleted_by, deleted_at, messages_deleted, flags)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (row["id"], RETENTION_ACTOR, now, row["messages"], json.dumps(record, ensure_ascii=False)),
                )
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (now, RETENTION_ACTOR, "retention_purge", None,
                 json.dumps({"older_than_days": older_than_days, "conversations": len(purge),
                             "messages": result["messages"], "kept_flagged": len(result["kept_flagged"])})),
            )
        return result
