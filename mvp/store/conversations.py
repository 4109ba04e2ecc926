"""Conversations and their messages: the turn tree, alternatives and the active path.

Tables ``conversations`` and ``messages``. A conversation is a tree:
- a user message or notice hangs under the tip of the active path at the time it is written
  (the first one has ``parent_id`` NULL);
- an assistant reply hangs under the user message it answers; replies to the same user message are
  alternatives of that turn, and at most one of them is active (it continues the conversation).
The active path starts at the root and follows, from each node, its latest active child. Switching
the active reply of an earlier turn therefore switches to that reply's branch: later turns written
after the other reply stay with it, so every reply keeps exactly the context it was generated from.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .base import StoreBase
from .errors import NotFoundError, PermissionDeniedError, ValidationError
from .schema import utc_now
from .validation import (
    MAX_MESSAGE_CHARS,
    MAX_REPLY_CHARS,
    MESSAGE_STATUSES,
    check_choice,
    check_id,
    check_label,
    check_limit,
    check_message,
    check_non_negative_int,
    check_optional_id,
    check_optional_label,
    check_text,
    from_json,
    to_json,
)

TITLE_CHARS = 30  # an automatic title is the start of the first client message
NOTICE = "system-notice"


def decode_message(row: dict[str, Any]) -> dict[str, Any]:
    for field in ("gen_params", "metrics", "safety"):
        row[field] = from_json(row[field])
    row["is_active"] = bool(row["is_active"])
    return row


def decode_conversation(row: dict[str, Any]) -> dict[str, Any]:
    row["is_demo"] = bool(row["is_demo"])
    return row


def active_path(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Root-to-tip active path (user and assistant messages, no notices); ``messages`` in id order."""
    children: dict[int | None, list[dict[str, Any]]] = {}
    for message in messages:
        if message["role"] != NOTICE:
            children.setdefault(message["parent_id"], []).append(message)
    path: list[dict[str, Any]] = []
    candidates = children.get(None, [])
    while True:
        active = [m for m in candidates if m["is_active"]]
        if not active:
            return path
        node = active[-1]  # the latest active child continues the conversation
        path.append(node)
        candidates = children.get(node["id"], [])


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{what}必须是 True 或 False，收到 {value!r}")
    return value


class ConversationsMixin(StoreBase):
    # -- conversations -----------------------------------------------------------------------
    def create_conversation(
        self,
        user: str,
        stage_id: str,
        model_version_id: int | None = None,
        is_demo: bool = False,
        case_id: str | None = None,
        title: str | None = None,
    ) -> int:
        """Start a conversation; a demo account's conversations are always marked demo."""
        stage_id = check_label(stage_id, "阶段")
        model_version_id = check_optional_id(model_version_id, "模型版本 ID")
        is_demo = _bool(is_demo, "演示标记")
        case_id = check_optional_label(case_id, "示例个案")
        title = check_optional_label(title, "标题")
        now = utc_now()
        with self._write() as conn:
            owner = self._active_user(conn, user, "开始对话")
            self._require_model_version(conn, model_version_id)
            is_demo = is_demo or owner["role"] == "demo"
            cursor = conn.execute(
                "INSERT INTO conversations (user_name, stage_id, model_version_id, is_demo, case_id,"
                " title, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (owner["name"], stage_id, model_version_id, int(is_demo), case_id, title, now, now),
            )
            return int(cursor.lastrowid)

    def get_conversation(self, conversation_id: int) -> dict[str, Any]:
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._read() as conn:
            row = self._row(
                conn,
                "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id"
                " AND m.role != 'system-notice') AS message_count"
                " FROM conversations c WHERE c.id = ?",
                (conversation_id,),
            )
        if row is None:
            raise NotFoundError(f"对话不存在：{conversation_id}")
        return decode_conversation(row)

    def list_conversations(
        self,
        user: str | None = None,
        limit: int = 50,
        offset: int = 0,
        include_demo: bool = True,
    ) -> list[dict[str, Any]]:
        """Most recently updated first, with message, open-flag, reply and (by the owner) unrated-reply counts."""
        limit = check_limit(limit)
        offset = check_non_negative_int(offset, "偏移量")
        where, params = ["1 = 1"], []
        if user is not None:
            where.append("c.user_name = ?")
            params.append(user)
        if not include_demo:
            where.append("c.is_demo = 0")
        sql = (
            "SELECT c.*,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id"
            "  AND m.role != 'system-notice') AS message_count,"
            " (SELECT COUNT(*) FROM flags f WHERE f.conversation_id = c.id"
            "  AND f.reviewed_at IS NULL) AS open_flags,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id AND m.role = 'assistant') AS reply_count,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id AND m.role = 'assistant' AND NOT EXISTS"
            "  (SELECT 1 FROM ratings r WHERE r.message_id = m.id AND r.rater = c.user_name)) AS unrated_count"
            f" FROM conversations c WHERE {' AND '.join(where)}"
            " ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?"
        )
        with self._read() as conn:
            rows = self._rows(conn, sql, (*params, limit, offset))
        return [decode_conversation(r) for r in rows]

    def set_stage(self, conversation_id: int, stage_id: str) -> None:
        """Change the conversation's current stage (each message keeps the stage it was written in)."""
        self._update_conversation(conversation_id, "stage_id", check_label(stage_id, "阶段"))

    def set_title(self, conversation_id: int, title: str) -> None:
        self._update_conversation(conversation_id, "title", check_label(title, "标题"))

    def _update_conversation(self, conversation_id: int, column: str, value: Any) -> None:
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE conversations SET {column} = ?, updated_at = ? WHERE id = ?",
                (value, utc_now(), conversation_id),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"对话不存在：{conversation_id}")

    def delete_conversation(self, conversation_id: int, by_user: str) -> dict[str, int]:
        """Hard-delete a conversation with its messages, ratings, thumbs, comparisons, flags and
        assessments (ON DELETE CASCADE), so no export can include it. Allowed to admins and to the
        conversation's owner, but a conversation with an open safety flag only to admins (a flag must
        never silently leave the review queue). The log keeps the fact of the deletion and, for the
        safety record, the categories and evidence of its flags (no message content)."""
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._write() as conn:
            actor = self._active_user(conn, by_user, "删除对话")
            conversation = self._conversation_row(conn, conversation_id)
            if actor["role"] != "admin" and conversation["user_name"] != actor["name"]:
                raise PermissionDeniedError(f"只有管理员或对话的创建者可以删除对话：{by_user}")
            flags = self._rows(conn, "SELECT categories, category, evidence, source, reviewed_at FROM flags"
                               " WHERE conversation_id = ? ORDER BY id", (conversation_id,))
            if actor["role"] != "admin" and any(f["reviewed_at"] is None for f in flags):
                raise PermissionDeniedError("这段对话有尚未复核的安全标记，只有管理员可以删除（请联系管理员）")
            record = [{"categories": from_json(f["categories"]) if f["categories"] else [f["category"]],
                       "evidence": from_json(f["evidence"]), "source": f["source"],
                       "reviewed": f["reviewed_at"] is not None} for f in flags]
            count = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            conn.execute(
                "INSERT INTO deletion_log (conversation_id, deleted_by, deleted_at, messages_deleted, flags)"
                " VALUES (?, ?, ?, ?, ?)",
                (conversation_id, actor["name"], utc_now(), count, to_json(record, "标记记录", expect=(list,))),
            )
        return {"conversation_id": conversation_id, "messages_deleted": int(count)}

    # -- messages ----------------------------------------------------------------------------
    def add_user_message(self, conversation_id: int, content: str, stage_id: str | None = None,
                         flag: dict[str, Any] | None = None) -> int:
        """Append a client message after the tip of the active path; ``stage_id`` defaults to the
        conversation's current stage. Over ``MAX_MESSAGE_CHARS``: ValidationError, nothing stored.
        ``flag`` ({"categories", "evidence", "source"}) flags the message in the same transaction."""
        conversation_id = check_id(conversation_id, "对话 ID")
        content = check_message(content)
        stage_id = check_optional_label(stage_id, "阶段")
        checked = None
        if flag is not None and (not isinstance(flag, dict) or not flag.get("categories")):
            raise ValidationError(f"安全标记必须给出类别，收到 {flag!r}")
        demo = self._is_demo(conversation_id)
        if flag is not None:
            checked = self._check_flag(flag["categories"], flag.get("evidence"), flag.get("source", "rules"), demo)
        stored = self._scrubbed(content, demo)
        with self._write() as conn:
            conversation = self._conversation_row(conn, conversation_id)
            message_id = self._append(conn, conversation, "user", stored, stage_id)
            if checked is not None:
                self._insert_flag(conn, conversation_id, message_id, *checked)
            if conversation["title"] is None:
                title = " ".join(stored.split())[:TITLE_CHARS]
                conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
            return message_id

    def add_notice(self, conversation_id: int, content: str, stage_id: str | None = None) -> int:
        """Append a system notice (shown to the clinician, never part of the model's context)."""
        conversation_id = check_id(conversation_id, "对话 ID")
        check_text(content, "提示", MAX_REPLY_CHARS)
        stage_id = check_optional_label(stage_id, "阶段")
        with self._write() as conn:
            conversation = self._conversation_row(conn, conversation_id)
            return self._append(conn, conversation, NOTICE, content, stage_id)

    def _append(
        self,
        conn: sqlite3.Connection,
        conversation: dict[str, Any],
        role: str,
        content: str,
        stage_id: str | None,
    ) -> int:
        path = active_path(
            self._rows(
                conn,
                "SELECT id, role, parent_id, is_active FROM messages"
                " WHERE conversation_id = ? ORDER BY id",
                (conversation["id"],),
            )
        )
        now = utc_now()
        cursor = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, stage_id, parent_id, is_active,"
            " status, created_at) VALUES (?, ?, ?, ?, ?, 1, 'complete', ?)",
            (conversation["id"], role, content, stage_id or conversation["stage_id"],
             path[-1]["id"] if path else None, now),
        )
        self._touch_conversation(conn, conversation["id"], now)
        return int(cursor.lastrowid)

    def add_assistant_message(
        self,
        conversation_id: int,
        parent_id: int,
        content: str,
        stage_id: str | None = None,
        model_version_id: int | None = None,
        gen_params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        status: str = "complete",
        safety: dict[str, Any] | None = None,
        make_active: bool = True,
    ) -> int:
        """Store a model reply to the user message ``parent_id``.

        Never overwrites: another reply to the same message becomes an alternative of that turn.
        With ``make_active`` it becomes the active one (its siblings are deactivated). ``stage_id``
        and ``model_version_id`` default to the conversation's. An interrupted reply may be empty.
        """
        conversation_id = check_id(conversation_id, "对话 ID")
        parent_id = check_id(parent_id, "用户消息 ID")
        check_text(content, "模型回复", MAX_REPLY_CHARS, allow_empty=True)
        stage_id = check_optional_label(stage_id, "阶段")
        model_version_id = check_optional_id(model_version_id, "模型版本 ID")
        params_json = to_json(gen_params, "生成参数")
        metrics_json = to_json(metrics, "生成指标")
        safety_json = to_json(safety, "安全检查结果")
        status = check_choice(status, "回复状态", MESSAGE_STATUSES)
        make_active = _bool(make_active, "make_active")
        stored = self._scrubbed(content, self._is_demo(conversation_id))
        now = utc_now()
        with self._write() as conn:
            conversation = self._conversation_row(conn, conversation_id)
            parent = self._message_row(conn, parent_id)
            if parent["conversation_id"] != conversation_id:
                raise ValidationError(f"消息 {parent_id} 不属于对话 {conversation_id}")
            if parent["role"] != "user":
                raise ValidationError(f"模型回复必须回应一条用户消息，消息 {parent_id} 是 {parent['role']} 消息")
            if model_version_id is None:
                model_version_id = conversation["model_version_id"]
            else:
                self._require_model_version(conn, model_version_id)
            if make_active:
                self._deactivate_replies(conn, parent_id)
            cursor = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, stage_id, model_version_id,"
                " parent_id, is_active, status, gen_params, metrics, safety, created_at)"
                " VALUES (?, 'assistant', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, stored, stage_id or conversation["stage_id"], model_version_id,
                 parent_id, int(make_active), status, params_json, metrics_json, safety_json, now),
            )
            self._touch_conversation(conn, conversation_id, now)
            return int(cursor.lastrowid)

    def _require_model_version(self, conn: sqlite3.Connection, model_version_id: int | None) -> None:
        if model_version_id is not None and not conn.execute(
            "SELECT 1 FROM model_versions WHERE id = ?", (model_version_id,)
        ).fetchone():
            raise NotFoundError(f"模型版本不存在：{model_version_id}")

    def set_active(self, message_id: int) -> None:
        """Make this reply the one that continues the conversation (its siblings become inactive)."""
        message_id = check_id(message_id, "消息 ID")
        with self._write() as conn:
            self._activate(conn, self._message_row(conn, message_id))

    def get_message(self, message_id: int) -> dict[str, Any]:
        message_id = check_id(message_id, "消息 ID")
        with self._read() as conn:
            return decode_message(self._message_row(conn, message_id))

    def _conversation_messages(self, conversation_id: int) -> list[dict[str, Any]]:
        with self._read(snapshot=True) as conn:
            self._conversation_row(conn, conversation_id)
            rows = self._rows(
                conn, "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            )
        return [decode_message(r) for r in rows]

    def get_history(self, conversation_id: int, include_notices: bool = True) -> list[dict[str, Any]]:
        """The active path in order (each user message followed by its active reply), with notices
        placed after the message they followed when ``include_notices``."""
        conversation_id = check_id(conversation_id, "对话 ID")
        messages = self._conversation_messages(conversation_id)
        path = active_path(messages)
        if not include_notices:
            return path
        notices: dict[int | None, list[dict[str, Any]]] = {}
        for message in messages:
            if message["role"] == NOTICE:
                notices.setdefault(message["parent_id"], []).append(message)
        history = list(notices.get(None, []))
        for message in path:
            history.append(message)
            history.extend(notices.get(message["id"], []))
        return history

    def get_path(self, message_id: int) -> list[dict[str, Any]]:
        """Root to this message inclusive along parent links: for a reply, ``path[:-1]`` is exactly
        the dialogue the model answered (without the system prompt of ``path[-1]['stage_id']``)."""
        message_id = check_id(message_id, "消息 ID")
        with self._read() as conn:
            conversation_id = self._message_row(conn, message_id)["conversation_id"]
        by_id = {m["id"]: m for m in self._conversation_messages(conversation_id)}
        path: list[dict[str, Any]] = []
        current: int | None = message_id
        while current is not None:
            message = by_id[current]
            path.append(message)
            current = message["parent_id"]
        path.reverse()
        return path

    def list_alternatives(self, message_id: int) -> list[dict[str, Any]]:
        """All replies of one turn, in order: the siblings of a reply (itself included), or the
        replies to a user message."""
        message_id = check_id(message_id, "消息 ID")
        with self._read() as conn:
            message = self._message_row(conn, message_id)
            if message["role"] == NOTICE:
                raise ValidationError(f"消息 {message_id} 是系统提示，没有候选回复")
            parent_id = message["parent_id"] if message["role"] == "assistant" else message_id
            rows = self._rows(
                conn,
                "SELECT * FROM messages WHERE parent_id = ? AND role = 'assistant' ORDER BY id",
                (parent_id,),
            )
        return [decode_message(r) for r in rows]

    def count_alternatives(self, parent_id: int) -> int:
        """How many replies the user message ``parent_id`` has."""
        parent_id = check_id(parent_id, "用户消息 ID")
        with self._read() as conn:
            self._message_row(conn, parent_id)
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE parent_id = ? AND role = 'assistant'",
                    (parent_id,),
                ).fetchone()[0]
            )

