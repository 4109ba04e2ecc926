"""Clinicians' judgements of replies: detailed ratings with revisions, thumbs, blind comparisons.

Tables ``ratings`` (every revision kept; ``is_latest`` marks the one that counts per message and rater;
scores in one JSON ``scores`` column, so a dimension added to config/rating.yaml needs no migration),
``thumbs`` (one row per message and rater, the latest value wins) and ``comparisons``. Only assistant
replies can be judged (blocked or interrupted ones included: they are useful negative examples), and
only by enabled clinician or admin accounts: demo accounts cannot rate.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from .base import StoreBase
from .errors import NotFoundError, ValidationError
from .rating import RatingConfig, default_rating_config
from .schema import utc_now
from .validation import (
    CHOICES,
    MAX_COMMENT_CHARS,
    MAX_MESSAGE_CHARS,
    THUMB_VALUES,
    check_choice,
    check_id,
    check_optional_text,
    check_scores,
    check_tags,
    show,
)

RATER_ROLES = ("clinician", "admin")


def expand_scores(row: dict[str, Any], dimensions: tuple[str, ...], loads=json.loads) -> dict[str, Any]:
    """Replace a row's JSON ``scores`` by one key per dimension (None when not scored); scores of a
    dimension no longer configured are kept under their own key, so nothing stored is hidden.
    ``loads`` must return a fresh dict (the exporter passes its memoising decoder, which copies)."""
    scores = loads(row.pop("scores") or "{}")
    for dim in dimensions:
        row[dim] = scores.pop(dim, None)
    row.update(scores)
    return row


class FeedbackMixin(StoreBase):
    _rating_config: RatingConfig | None = None

    @property
    def rating(self) -> RatingConfig:
        """The rating dimensions and tags this store validates against (config/rating.yaml by default)."""
        return self._rating_config or default_rating_config()

    @rating.setter
    def rating(self, config: RatingConfig) -> None:
        self._rating_config = config

    def decode_rating(self, row: dict[str, Any]) -> dict[str, Any]:
        row["tags"] = json.loads(row["tags"])
        if "is_latest" in row:
            row["is_latest"] = bool(row["is_latest"])
        return expand_scores(row, self.rating.dimension_ids)

    def _reply_row(self, conn: sqlite3.Connection, message_id: int) -> dict[str, Any]:
        message = self._row(
            conn,
            "SELECT id, conversation_id, role, parent_id FROM messages WHERE id = ?",
            (message_id,),
        )
        if message is None:
            raise NotFoundError(f"消息不存在：{message_id}")
        if message["role"] != "assistant":
            raise ValidationError(f"只能评价模型回复，消息 {message_id} 是 {message['role']} 消息")
        return message

    # -- ratings -----------------------------------------------------------------------------
    def add_rating(
        self,
        message_id: int,
        rater: str,
        *,
        tags: Iterable[str] = (),
        comment: str | None = None,
        rewrite: str | None = None,
        allowed_tags: Iterable[str] | None = None,
        **scores: int | None,
    ) -> dict[str, int]:
        """Add a rating, or a new revision of this rater's rating of this reply (the latest counts;
        earlier revisions are kept). Scores are keyword arguments named after the dimensions of
        config/rating.yaml (``overall=4, empathy=5``), ints 1-5 or None; at least one of the scores,
        tags, comment or rewrite is required. Returns ``{"id": ..., "revision": ...}``."""
        message_id = check_id(message_id, "消息 ID")
        labels = {d.id: d.label for d in self.rating.dimensions.values()}
        scores = check_scores(scores, labels)
        tag_list = check_tags(tags, allowed_tags)
        comment = check_optional_text(comment, "评语", MAX_COMMENT_CHARS)
        rewrite = check_optional_text(rewrite, "改写回复", MAX_MESSAGE_CHARS)
        if not scores and not tag_list and comment is None and rewrite is None:
            raise ValidationError("评分为空：请至少填写一项评分、标签、评语或改写回复")
        comment, rewrite = self._scrubbed(comment), self._scrubbed(rewrite)
        with self._write() as conn:
            self._active_user(conn, rater, "评分", roles=RATER_ROLES)
            self._reply_row(conn, message_id)
            # The previous latest revision is also the highest: retire it and number the new one.
            previous = conn.execute(
                "UPDATE ratings SET is_latest = 0 WHERE message_id = ? AND rater = ? AND is_latest = 1"
                " RETURNING revision",
                (message_id, rater),
            ).fetchall()
            revision = previous[0][0] + 1 if previous else 1
            cursor = conn.execute(
                "INSERT INTO ratings (message_id, rater, revision, is_latest, scores,"
                " tags, comment, rewrite, created_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (message_id, rater, revision, json.dumps(scores, sort_keys=True),
                 json.dumps(tag_list, ensure_ascii=False), comment, rewrite, utc_now()),
            )
            return {"id": int(cursor.lastrowid), "revision": int(revision)}

    def get_rating(self, message_id: int, rater: str) -> dict[str, Any] | None:
        """This rater's current (latest) rating of the reply, or None."""
        rows = self.latest_ratings(message_id=message_id, rater=rater)
        return rows[0] if rows else None

    def latest_ratings(
        self,
        message_id: int | None = None,
        rater: str | None = None,
        conversation_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """The rating that counts per (message, rater), filtered by any of the arguments."""
        where, params = ["r.is_latest = 1"], []
        if message_id is not None:
            where.append("r.message_id = ?")
            params.append(check_id(message_id, "消息 ID"))
        if rater is not None:
            where.append("r.rater = ?")
            params.append(rater)
        if conversation_id is not None:
            where.append("m.conversation_id = ?")
            params.append(check_id(conversation_id, "对话 ID"))
        sql = (
            "SELECT r.*, m.conversation_id FROM ratings r JOIN messages m ON m.id = r.message_id"
            f" WHERE {' AND '.join(where)} ORDER BY r.message_id, r.rater"
        )
        with self._read() as conn:
            return [self.decode_rating(r) for r in self._rows(conn, sql, params)]

    def rating_history(self, message_id: int, rater: str) -> list[dict[str, Any]]:
        """Every revision of one rater's rating of one reply, oldest first."""
        message_id = check_id(message_id, "消息 ID")
        with self._read() as conn:
            rows = self._rows(
                conn,
                "SELECT * FROM ratings WHERE message_id = ? AND rater = ? ORDER BY revision",
                (message_id, rater),
            )
        return [self.decode_rating(r) for r in rows]

    # -- thumbs ------------------------------------------------------------------------------
    def set_thumb(self, message_id: int, rater: str, value: int) -> None:
        """1 = up, -1 = down, 0 = cleared; the latest value per (message, rater) wins."""
        message_id = check_id(message_id, "消息 ID")
        if isinstance(value, bool) or not isinstance(value, int) or value not in THUMB_VALUES:
            raise ValidationError(f"点赞值必须是 1（赞）、-1（踩）或 0（取消），收到 {show(value)}")
        now = utc_now()
        with self._write() as conn:
            self._active_user(conn, rater, "点赞或点踩", roles=RATER_ROLES)
            self._reply_row(conn, message_id)
            conn.execute(
                "INSERT INTO thumbs (message_id, rater, value, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (message_id, rater)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (message_id, rater, int(value), now, now),
            )

    def get_thumb(self, message_id: int, rater: str) -> int:
        """The rater's current thumb on the reply (0 when none)."""
        message_id = check_id(message_id, "消息 ID")
        with self._read() as conn:
            row = conn.execute(
                "SELECT value FROM thumbs WHERE message_id = ? AND rater = ?", (message_id, rater)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- comparisons -------------------------------------------------------------------------
    def add_comparison(
        self,
        message_a: int,
        message_b: int,
        choice: str,
        rater: str,
        *,
        shown_left: int,
        activate_choice: bool = True,
    ) -> int:
        """Record a blind comparison of two replies to the SAME user message.

        ``choice`` is "a" / "b" (meaning ``message_a`` / ``message_b``), "tie" or "both_bad";
        ``shown_left`` is the id displayed on the left. With ``activate_choice`` the chosen reply
        continues the conversation (a tie or "both bad" leaves the active reply as it is).
        """
        message_a = check_id(message_a, "候选回复 A 的 ID")
        message_b = check_id(message_b, "候选回复 B 的 ID")
        choice = check_choice(choice, "比较结果", CHOICES)
        shown_left = check_id(shown_left, "左侧显示的回复 ID")
        if message_a == message_b:
            raise ValidationError(f"比较的两条回复必须不同，收到两次 {message_a}")
        if shown_left not in (message_a, message_b):
            raise ValidationError(f"左侧显示的回复 {shown_left} 不是被比较的两条之一（{message_a}、{message_b}）")
        if not isinstance(activate_choice, bool):
            raise ValidationError(f"activate_choice 必须是 True 或 False，收到 {show(activate_choice)}")
        with self._write() as conn:
            self._active_user(conn, rater, "比较回复", roles=RATER_ROLES)
            reply_a = self._reply_row(conn, message_a)
            reply_b = self._reply_row(conn, message_b)
            if reply_a["parent_id"] != reply_b["parent_id"]:
                raise ValidationError(
                    f"只能比较同一条用户消息的两条回复：回复 {message_a} 回应消息 {reply_a['parent_id']}，"
                    f"回复 {message_b} 回应消息 {reply_b['parent_id']}"
                )
            cursor = conn.execute(
                "INSERT INTO comparisons (message_a, message_b, shown_left, choice, rater, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (message_a, message_b, shown_left, choice, rater, utc_now()),
            )
            if activate_choice and choice in ("a", "b"):
                self._activate(conn, reply_a if choice == "a" else reply_b)
            return int(cursor.lastrowid)

    def list_comparisons(self, conversation_id: int | None = None) -> list[dict[str, Any]]:
        where, params = "", []
        if conversation_id is not None:
            where = "WHERE m.conversation_id = ?"
            params.append(check_id(conversation_id, "对话 ID"))
        with self._read() as conn:
            return self._rows(
                conn,
                "SELECT c.*, m.conversation_id, m.parent_id FROM comparisons c"
                f" JOIN messages m ON m.id = c.message_a {where} ORDER BY c.id",
                params,
            )
