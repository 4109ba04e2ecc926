"""Session memory in the store: summaries, stage events and the sessions of one client case.

Tables ``summaries`` and ``stage_events`` and the columns ``conversations.case_key``, ``session_no``
and ``previous_conversation_id`` (migration 12).

- A summary (会谈摘要) covers the dialogue messages ``first_message_id`` .. ``last_message_id`` of the
  active path (client turns ``first_turn`` .. ``last_turn``); ``author`` is 'extractive', 'model' or the
  clinician who corrected it (``author_kind`` says which); a summary carried over from an earlier
  session of the same case covers nothing of this one and names ``source_conversation_id``. Only the
  newest is ``is_latest``; earlier ones stay for the record and the export. Content is scrubbed like
  client text.
- A stage event is one of 'suggested' (the app proposed the next stage), 'accepted', 'dismissed'
  (the clinician's answer) or 'manual' (the clinician picked a stage), with the signals as JSON.
- A case is a sample case id (mvp/counsel/cases.py) or, for a client typed by the clinician,
  ``conv-<id of the first session>``; ``create_session`` starts session n+1 of a conversation's case.
"""

from __future__ import annotations

from typing import Any

from .base import StoreBase
from .errors import ValidationError
from .schema import utc_now
from .validation import (
    MAX_MESSAGE_CHARS,
    check_choice,
    check_id,
    check_label,
    check_non_negative_int,
    check_optional_id,
    check_text,
    from_json,
    to_json,
)

SUMMARY_KINDS = ("extractive", "model", "clinician", "carried")
STAGE_EVENT_KINDS = ("suggested", "accepted", "dismissed", "manual")
MAX_SUMMARY_CHARS = MAX_MESSAGE_CHARS


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    row["state"] = from_json(row["state"])
    row["is_latest"] = bool(row["is_latest"])
    return row


def _event(row: dict[str, Any]) -> dict[str, Any]:
    row["detail"] = from_json(row["detail"])
    return row


def case_key_of(conversation: dict[str, Any]) -> str:
    """The case a conversation belongs to (its own first session when none is recorded)."""
    return conversation.get("case_key") or conversation.get("case_id") or f"conv-{conversation['id']}"


class MemoryMixin(StoreBase):
    # -- summaries ------------------------------------------------------------------------------
    def add_summary(
        self,
        conversation_id: int,
        content: str,
        author: str,
        author_kind: str,
        *,
        first_message_id: int | None = None,
        last_message_id: int | None = None,
        first_turn: int = 0,
        last_turn: int = 0,
        state: dict[str, Any] | None = None,
        source_conversation_id: int | None = None,
    ) -> int:
        """Store a new latest summary of the conversation (the previous one stays, not latest)."""
        conversation_id = check_id(conversation_id, "对话 ID")
        content = check_text(content, "会谈摘要", MAX_SUMMARY_CHARS)
        author = check_label(author, "摘要作者")
        author_kind = check_choice(author_kind, "摘要来源", SUMMARY_KINDS)
        first_message_id = check_optional_id(first_message_id, "摘要起始消息 ID")
        last_message_id = check_optional_id(last_message_id, "摘要结束消息 ID")
        first_turn = check_non_negative_int(first_turn, "摘要起始轮次")
        last_turn = check_non_negative_int(last_turn, "摘要结束轮次")
        if last_turn < first_turn:
            raise ValidationError(f"摘要的轮次范围无效：{first_turn}–{last_turn}")
        source_conversation_id = check_optional_id(source_conversation_id, "来源对话 ID")
        state_json = to_json(state, "摘要状态")
        demo = self._is_demo(conversation_id)
        stored = self._scrubbed(content, demo)
        with self._write() as conn:
            self._conversation_row(conn, conversation_id)
            for mid in (first_message_id, last_message_id):
                if mid is not None and self._message_row(conn, mid)["conversation_id"] != conversation_id:
                    raise ValidationError(f"消息 {mid} 不属于对话 {conversation_id}")
            conn.execute("UPDATE summaries SET is_latest = 0 WHERE conversation_id = ? AND is_latest = 1",
                         (conversation_id,))
            cursor = conn.execute(
                "INSERT INTO summaries (conversation_id, first_message_id, last_message_id, first_turn, last_turn,"
                " content, state, author, author_kind, source_conversation_id, is_latest, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (conversation_id, first_message_id, last_message_id, first_turn, last_turn, stored, state_json,
                 author, author_kind, source_conversation_id, utc_now()),
            )
            return int(cursor.lastrowid)

    def list_summaries(self, conversation_id: int) -> list[dict[str, Any]]:
        """Every summary of the conversation, oldest first."""
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._read() as conn:
            rows = self._rows(conn, "SELECT * FROM summaries WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [_summary(r) for r in rows]

    def latest_summary(self, conversation_id: int) -> dict[str, Any] | None:
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._read() as conn:
            row = self._row(conn, "SELECT * FROM summaries WHERE conversation_id = ? AND is_latest = 1",
                            (conversation_id,))
        return _summary(row) if row else None

    def get_summary(self, summary_id: int) -> dict[str, Any] | None:
        summary_id = check_id(summary_id, "摘要 ID")
        with self._read() as conn:
            row = self._row(conn, "SELECT * FROM summaries WHERE id = ?", (summary_id,))
        return _summary(row) if row else None

    # -- stage events ---------------------------------------------------------------------------
    def add_stage_event(self, conversation_id: int, kind: str, from_stage: str | None, to_stage: str, actor: str,
                        message_id: int | None = None, detail: dict[str, Any] | None = None) -> int:
        conversation_id = check_id(conversation_id, "对话 ID")
        kind = check_choice(kind, "阶段事件", STAGE_EVENT_KINDS)
        from_stage = None if from_stage is None else check_label(from_stage, "原阶段")
        to_stage = check_label(to_stage, "新阶段")
        actor = check_label(actor, "操作者")
        message_id = check_optional_id(message_id, "消息 ID")
        detail_json = to_json(detail or {}, "阶段事件详情")
        with self._write() as conn:
            self._conversation_row(conn, conversation_id)
            if message_id is not None and self._message_row(conn, message_id)["conversation_id"] != conversation_id:
                raise ValidationError(f"消息 {message_id} 不属于对话 {conversation_id}")
            cursor = conn.execute(
                "INSERT INTO stage_events (conversation_id, message_id, kind, from_stage, to_stage, detail, actor, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, message_id, kind, from_stage, to_stage, detail_json, actor, utc_now()),
            )
            return int(cursor.lastrowid)

    def list_stage_events(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation's stage events, oldest first."""
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._read() as conn:
            rows = self._rows(conn, "SELECT * FROM stage_events WHERE conversation_id = ? ORDER BY id",
                              (conversation_id,))
        return [_event(r) for r in rows]

    # -- sessions of a case ---------------------------------------------------------------------
    def create_session(self, previous_id: int, user: str, model_version_id: int | None = None) -> int:
        """Session n+1 of the previous conversation's case: same case, the previous one's current stage
        (the summary is the caller's to carry over, with ``add_summary(author_kind='carried')``)."""
        previous_id = check_id(previous_id, "对话 ID")
        model_version_id = check_optional_id(model_version_id, "模型版本 ID")
        now = utc_now()
        with self._write() as conn:
            owner = self._active_user(conn, user, "开始新会谈")
            previous = self._conversation_row(conn, previous_id)
            key = case_key_of(previous)
            if previous.get("case_key") is None:
                conn.execute("UPDATE conversations SET case_key = ? WHERE id = ?", (key, previous_id))
            number = conn.execute("SELECT COALESCE(MAX(session_no), 1) FROM conversations WHERE case_key = ?",
                                  (key,)).fetchone()[0]
            version = model_version_id if model_version_id is not None else previous["model_version_id"]
            cursor = conn.execute(
                "INSERT INTO conversations (user_name, stage_id, model_version_id, is_demo, case_id, title,"
                " case_key, session_no, previous_conversation_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (owner["name"], previous["stage_id"], version, int(previous["is_demo"] or owner["role"] == "demo"),
                 previous["case_id"], previous["title"], key, int(number) + 1, previous_id, now, now),
            )
            return int(cursor.lastrowid)

    def list_sessions(self, case_key: str) -> list[dict[str, Any]]:
        """The conversations of one case, first session first."""
        case_key = check_label(case_key, "个案")
        with self._read() as conn:
            return self._rows(conn, "SELECT id, user_name, stage_id, session_no, previous_conversation_id, created_at"
                              " FROM conversations WHERE case_key = ? ORDER BY session_no, id", (case_key,))

    # -- export ---------------------------------------------------------------------------------
    def _export_memory(self, conn, include_demo: bool) -> dict[str, list[dict[str, Any]]]:
        demo = "(? OR c.is_demo = 0)"
        summaries = self._rows(conn, "SELECT s.*, c.is_demo FROM summaries s JOIN conversations c"
                               f" ON c.id = s.conversation_id WHERE {demo} ORDER BY s.id", (int(include_demo),))
        events = self._rows(conn, "SELECT e.*, c.is_demo FROM stage_events e JOIN conversations c"
                            f" ON c.id = e.conversation_id WHERE {demo} ORDER BY e.id", (int(include_demo),))
        for row in summaries + events:
            row["is_demo"] = bool(row["is_demo"])
        return {"summaries": [_summary(r) for r in summaries], "stage_events": [_event(r) for r in events]}
