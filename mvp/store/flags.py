"""Safety flags: the review queue of conversations where a crisis or an unsafe reply was detected.

Table ``flags``. The safety module decides; the store records the categories, the matched evidence
(scrubbed like content when a scrubber is configured) and where it came from, and admins mark flags
reviewed. One flag per flagged message and source carries ALL its categories (``categories``, a JSON
list; ``category`` is the first of them, for old queries). A client message and its flag are written in
one transaction (`add_user_message(..., flag=...)`), so a crash can never keep the one without the other.
"""

from __future__ import annotations

import json
from typing import Any

from .base import StoreBase
from .errors import NotFoundError, ValidationError
from .schema import utc_now
from .validation import (
    FLAG_SOURCES,
    MAX_COMMENT_CHARS,
    check_choice,
    check_id,
    check_label,
    check_limit,
    check_optional_id,
    check_optional_text,
    show,
    to_json,
)

REVIEWER_ROLES = ("admin",)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row["evidence"] = json.loads(row["evidence"])
    if "categories" in row:
        row["categories"] = json.loads(row["categories"]) if row["categories"] else [row["category"]]
    if "is_demo" in row:
        row["is_demo"] = bool(row["is_demo"])
    return row


class FlagsMixin(StoreBase):
    def add_flag(
        self,
        conversation_id: int,
        category: str | list[str] | tuple[str, ...],
        evidence: list[Any] | dict[str, Any] | None = None,
        source: str = "rules",
        message_id: int | None = None,
    ) -> int:
        """Flag a conversation (optionally one message of it) for review; returns the flag id.
        `category` is one category or a list of them; an open flag of the same message and source
        takes the new categories and evidence instead of a second flag being written."""
        conversation_id = check_id(conversation_id, "对话 ID")
        checked = self._check_flag(category, evidence, source, self._is_demo(conversation_id))
        message_id = check_optional_id(message_id, "消息 ID")
        with self._write() as conn:
            self._conversation_row(conn, conversation_id)
            if message_id is not None:
                message = self._message_row(conn, message_id)
                if message["conversation_id"] != conversation_id:
                    raise ValidationError(f"消息 {message_id} 不属于对话 {conversation_id}")
            return self._insert_flag(conn, conversation_id, message_id, *checked)

    def _check_flag(self, category, evidence, source, demo: bool = False) -> tuple[list[str], str, str]:
        """Validated (categories, evidence JSON, source) of a flag: the one check for every writer."""
        categories = [category] if isinstance(category, str) else category
        if not isinstance(categories, (list, tuple)) or not categories:
            raise ValidationError(f"风险类别必须是文本或非空列表，收到 {show(category)}")
        categories = list(dict.fromkeys(check_label(c, "风险类别", 64) for c in categories))
        source = check_choice(source, "来源", FLAG_SOURCES)
        if evidence is None:
            evidence = []
        if not isinstance(evidence, (list, tuple, dict)):
            raise ValidationError(f"证据必须是列表或字典，收到 {show(evidence)}")
        evidence_json = to_json(self._scrub_json(evidence, demo), "证据", expect=(list, dict))
        return categories, evidence_json, source

    def _insert_flag(self, conn, conversation_id: int, message_id: int | None, categories: list[str],
                     evidence_json: str, source: str) -> int:
        """Write (or extend) the flag inside the caller's transaction."""
        if message_id is not None:
            row = self._row(conn, "SELECT id, categories, evidence FROM flags WHERE message_id = ? AND source = ?"
                            " AND reviewed_at IS NULL ORDER BY id LIMIT 1", (message_id, source))
            if row is not None:
                merged = list(dict.fromkeys(json.loads(row["categories"] or "[]") + categories))
                old, new = json.loads(row["evidence"]), json.loads(evidence_json)
                if isinstance(old, list) and isinstance(new, list):
                    evidence_json = json.dumps(old + [e for e in new if e not in old], ensure_ascii=False)
                conn.execute("UPDATE flags SET category = ?, categories = ?, evidence = ? WHERE id = ?",
                             (merged[0], json.dumps(merged, ensure_ascii=False), evidence_json, row["id"]))
                return int(row["id"])
        cursor = conn.execute(
            "INSERT INTO flags (conversation_id, message_id, category, categories, evidence, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, message_id, categories[0], json.dumps(categories, ensure_ascii=False),
             evidence_json, source, utc_now()),
        )
        return int(cursor.lastrowid)

    def open_flags(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation's flags that no admin has marked reviewed yet (its risk state)."""
        return self.list_flags(conversation_id=conversation_id)

    def list_flags(
        self,
        include_reviewed: bool = False,
        conversation_id: int | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Flags, newest first, joined with their conversation (owner, stage, demo flag, title) and
        the flagged message's role and content."""
        limit = check_limit(limit)
        where, params = ["1 = 1"], []
        if not include_reviewed:
            where.append("f.reviewed_at IS NULL")
        if conversation_id is not None:
            where.append("f.conversation_id = ?")
            params.append(check_id(conversation_id, "对话 ID"))
        sql = (
            "SELECT f.*, c.user_name, c.stage_id, c.is_demo, c.title,"
            " m.role AS message_role, m.content AS message_content"
            " FROM flags f JOIN conversations c ON c.id = f.conversation_id"
            " LEFT JOIN messages m ON m.id = f.message_id"
            f" WHERE {' AND '.join(where)} ORDER BY f.id DESC LIMIT ?"
        )
        with self._read() as conn:
            return [_decode(r) for r in self._rows(conn, sql, (*params, limit))]

    def count_open_flags(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM flags WHERE reviewed_at IS NULL").fetchone()[0])

    def mark_flag_reviewed(self, flag_id: int, reviewer: str, note: str | None = None) -> None:
        """An admin marks a flag reviewed, with an optional note."""
        flag_id = check_id(flag_id, "标记 ID")
        note = check_optional_text(note, "复核备注", MAX_COMMENT_CHARS)
        with self._write() as conn:
            self._active_user(conn, reviewer, "复核安全标记", roles=REVIEWER_ROLES)
            row = self._row(conn, "SELECT reviewed_by FROM flags WHERE id = ?", (flag_id,))
            if row is None:
                raise NotFoundError(f"安全标记不存在：{flag_id}")
            if row["reviewed_by"] is not None:
                raise ValidationError(f"安全标记 {flag_id} 已由 {row['reviewed_by']} 复核")
            conn.execute(
                "UPDATE flags SET reviewed_by = ?, reviewed_at = ?, note = ? WHERE id = ?",
                (reviewer, utc_now(), note, flag_id),
            )
