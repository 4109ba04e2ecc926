"""Bulk reads for train/ (the exporter): plain dicts, one query per table, no per-row queries.

``export_snapshot()`` returns every table an exporter needs, read in one consistent snapshot. Demo
conversations and disabled raters' judgements are left out unless asked; each row still carries the
flags (``is_demo``, ``rater_disabled``) so that an exporter asking for everything can count them.
Deleted conversations cannot appear: deletion removes the rows.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .base import StoreBase
from .feedback import expand_scores

_DEMO = "(? OR c.is_demo = 0)"
_MEMO_LIMIT = 10_000
_RATER = "(? OR u.disabled = 0)"


class _JsonDecoder:
    """json.loads with a memo: tags and generation parameters repeat across many thousands of rows.
    Each row gets its own (shallow) copy, so a consumer editing one row does not change another."""

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}

    def __call__(self, text: str | None) -> Any:
        if text is None:
            return None
        try:
            value = self._memo[text]
        except KeyError:
            value = json.loads(text)
            if len(self._memo) >= _MEMO_LIMIT:  # unique values (e.g. metrics): no point keeping them
                return value
            self._memo[text] = value
        return value.copy() if isinstance(value, (list, dict)) else value


def _flag(row: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        row[name] = bool(row[name])
    return row


class ExportMixin(StoreBase):
    def export_snapshot(
        self, include_demo: bool = False, include_disabled: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """``{"model_versions", "conversations", "messages", "ratings", "thumbs", "comparisons",
        "assessment_items", "summaries", "stage_events"}``, all from one read transaction."""
        with self._read(snapshot=True) as conn:
            return {
                "model_versions": self._export_model_versions(conn),
                "conversations": self._export_conversations(conn, include_demo),
                "messages": self._export_messages(conn, include_demo),
                "ratings": self._export_ratings(conn, include_demo, include_disabled, False),
                "thumbs": self._export_thumbs(conn, include_demo, include_disabled),
                "comparisons": self._export_comparisons(conn, include_demo, include_disabled),
                "assessment_items": self._export_assessment_items(conn, include_demo),
                **self._export_memory(conn, include_demo),  # summaries, stage_events (memory.py)
            }

    def export_conversations(self, include_demo: bool = False) -> list[dict[str, Any]]:
        with self._read() as conn:
            return self._export_conversations(conn, include_demo)

    def export_messages(self, include_demo: bool = False) -> list[dict[str, Any]]:
        """Every message (all alternatives, with ``parent_id`` and ``is_active``), by id."""
        with self._read() as conn:
            return self._export_messages(conn, include_demo)

    def export_ratings(
        self, include_demo: bool = False, include_disabled: bool = False, all_revisions: bool = False
    ) -> list[dict[str, Any]]:
        """The latest rating per (reply, rater) (every revision with ``all_revisions``), with the
        reply's conversation, parent user message, stage and model version, and the rater's role."""
        with self._read() as conn:
            return self._export_ratings(conn, include_demo, include_disabled, all_revisions)

    def export_thumbs(
        self, include_demo: bool = False, include_disabled: bool = False
    ) -> list[dict[str, Any]]:
        """Current thumbs (1 or -1; cleared ones are left out)."""
        with self._read() as conn:
            return self._export_thumbs(conn, include_demo, include_disabled)

    def export_comparisons(
        self, include_demo: bool = False, include_disabled: bool = False
    ) -> list[dict[str, Any]]:
        """Comparisons with the shared parent message and both replies' model versions."""
        with self._read() as conn:
            return self._export_comparisons(conn, include_demo, include_disabled)

    def export_assessment_items(self, include_demo: bool = False) -> list[dict[str, Any]]:
        """Scored screening answers: item, question, answer, model score, clinician score."""
        with self._read() as conn:
            return self._export_assessment_items(conn, include_demo)

    # -- queries -----------------------------------------------------------------------------
    def _export_model_versions(self, conn: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = self._rows(conn, "SELECT * FROM model_versions ORDER BY id")
        for row in rows:
            row["data_manifest"] = json.loads(row["data_manifest"]) if row["data_manifest"] else None
            row["metrics"] = json.loads(row["metrics"]) if row["metrics"] else None
            row["release"] = json.loads(row["release"]) if row.get("release") else None
        return rows

    def _export_conversations(self, conn: sqlite3.Connection, include_demo: bool) -> list[dict[str, Any]]:
        rows = self._rows(
            conn,
            "SELECT c.*, u.role AS owner_role, u.disabled AS owner_disabled"
            f" FROM conversations c JOIN users u ON u.name = c.user_name WHERE {_DEMO} ORDER BY c.id",
            (include_demo,),
        )
        return [_flag(r, "is_demo", "owner_disabled") for r in rows]

    def _export_messages(self, conn: sqlite3.Connection, include_demo: bool) -> list[dict[str, Any]]:
        rows = self._rows(
            conn,
            "SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            f" WHERE {_DEMO} ORDER BY m.id",
            (include_demo,),
        )
        decode = _JsonDecoder()
        for row in rows:
            for field in ("gen_params", "metrics", "safety"):
                row[field] = decode(row[field])
            row["is_active"] = bool(row["is_active"])
        return rows

    def _export_ratings(
        self, conn: sqlite3.Connection, include_demo: bool, include_disabled: bool, all_revisions: bool
    ) -> list[dict[str, Any]]:
        rows = self._rows(
            conn,
            "SELECT r.*, m.conversation_id, m.parent_id, m.stage_id, m.model_version_id, m.status,"
            " c.is_demo, u.role AS rater_role, u.disabled AS rater_disabled"
            " FROM ratings r JOIN messages m ON m.id = r.message_id"
            " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.name = r.rater"
            f" WHERE (? OR r.is_latest = 1) AND {_DEMO} AND {_RATER} ORDER BY r.id",
            (all_revisions, include_demo, include_disabled),
        )
        decode = _JsonDecoder()
        dimensions = self.rating.dimension_ids
        for row in rows:
            row["tags"] = decode(row["tags"])
            expand_scores(row, dimensions, decode)
            _flag(row, "is_latest", "is_demo", "rater_disabled")
        return rows

    def _export_thumbs(
        self, conn: sqlite3.Connection, include_demo: bool, include_disabled: bool
    ) -> list[dict[str, Any]]:
        rows = self._rows(
            conn,
            "SELECT t.*, m.conversation_id, m.parent_id, m.stage_id, m.model_version_id,"
            " c.is_demo, u.role AS rater_role, u.disabled AS rater_disabled"
            " FROM thumbs t JOIN messages m ON m.id = t.message_id"
            " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.name = t.rater"
            f" WHERE t.value != 0 AND {_DEMO} AND {_RATER} ORDER BY t.message_id, t.rater",
            (include_demo, include_disabled),
        )
        return [_flag(r, "is_demo", "rater_disabled") for r in rows]

    def _export_comparisons(
        self, conn: sqlite3.Connection, include_demo: bool, include_disabled: bool
    ) -> list[dict[str, Any]]:
        rows = self._rows(
            conn,
            "SELECT k.*, a.conversation_id, a.parent_id, a.model_version_id AS model_version_a,"
            " b.model_version_id AS model_version_b, c.is_demo, u.role AS rater_role,"
            " u.disabled AS rater_disabled"
            " FROM comparisons k JOIN messages a ON a.id = k.message_a"
            " JOIN messages b ON b.id = k.message_b"
            " JOIN conversations c ON c.id = a.conversation_id JOIN users u ON u.name = k.rater"
            f" WHERE {_DEMO} AND {_RATER} ORDER BY k.id",
            (include_demo, include_disabled),
        )
        return [_flag(r, "is_demo", "rater_disabled") for r in rows]

    def _export_assessment_items(self, conn: sqlite3.Connection, include_demo: bool) -> list[dict[str, Any]]:
        rows = self._rows(
            conn,
            "SELECT i.*, s.instrument, s.conversation_id, s.status AS assessment_status, c.is_demo"
            " FROM assessment_items i JOIN assessments s ON s.id = i.assessment_id"
            " JOIN conversations c ON c.id = s.conversation_id"
            f" WHERE {_DEMO} ORDER BY i.assessment_id, i.item_no",
            (include_demo,),
        )
        return [_flag(r, "is_demo", "needs_review") for r in rows]
