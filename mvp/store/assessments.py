"""Guided screenings (PHQ-9 / GAD-7): items asked, answers, automatic scores, clinician corrections.

Tables ``assessments`` and ``assessment_items``. The assessment module knows the instruments, scores
answers and computes totals and bands; the store keeps what it is given. A clinician's correction is
stored beside the automatic score (it is a rating of the scorer, exported as labelled data).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .base import StoreBase
from .errors import NotFoundError, ValidationError
from .schema import utc_now
from .validation import (
    MAX_ASSESSMENT_ITEMS,
    MAX_MESSAGE_CHARS,
    check_id,
    check_identifier,
    check_item_score,
    check_non_negative_int,
    check_optional_id,
    check_optional_label,
    check_text,
    show,
)

CORRECTOR_ROLES = ("clinician", "admin")


def _check_item_no(item_no: Any) -> int:
    if isinstance(item_no, bool) or not isinstance(item_no, int) or not 1 <= item_no <= MAX_ASSESSMENT_ITEMS:
        raise ValidationError(f"条目序号必须是 1-{MAX_ASSESSMENT_ITEMS} 的整数，收到 {show(item_no)}")
    return item_no


def _decode_item(row: dict[str, Any]) -> dict[str, Any]:
    row["needs_review"] = bool(row["needs_review"])
    return row


class AssessmentsMixin(StoreBase):
    def _assessment_row(self, conn: sqlite3.Connection, assessment_id: int) -> dict[str, Any]:
        row = self._row(conn, "SELECT * FROM assessments WHERE id = ?", (assessment_id,))
        if row is None:
            raise NotFoundError(f"评估不存在：{assessment_id}")
        return row

    def start_assessment(self, conversation_id: int, instrument: str) -> int:
        """Start a screening (instrument such as "phq9" or "gad7") in a conversation."""
        conversation_id = check_id(conversation_id, "对话 ID")
        instrument = check_identifier(instrument, "量表")
        with self._write() as conn:
            self._conversation_row(conn, conversation_id)
            cursor = conn.execute(
                "INSERT INTO assessments (conversation_id, instrument, status, started_at)"
                " VALUES (?, ?, 'in_progress', ?)",
                (conversation_id, instrument, utc_now()),
            )
            return int(cursor.lastrowid)

    def record_item(
        self,
        assessment_id: int,
        item_no: int,
        question: str,
        answer: str,
        score: int | None,
        method: str,
        needs_review: bool = False,
        message_id: int | None = None,
    ) -> None:
        """Record (or replace, after a follow-up question) the answer to one item and its automatic
        score (0-3, or None when the scorer cannot tell). Only while the screening is in progress."""
        assessment_id = check_id(assessment_id, "评估 ID")
        item_no = _check_item_no(item_no)
        question = check_text(question, "条目问题", MAX_MESSAGE_CHARS)
        answer = check_text(answer, "回答", MAX_MESSAGE_CHARS)
        score = check_item_score(score, "条目得分")
        method = check_identifier(method, "评分方式")
        if not isinstance(needs_review, bool):
            raise ValidationError(f"needs_review 必须是 True 或 False，收到 {show(needs_review)}")
        message_id = check_optional_id(message_id, "消息 ID")
        answer = self._scrubbed(answer)
        now = utc_now()
        with self._write() as conn:
            assessment = self._assessment_row(conn, assessment_id)
            if assessment["status"] != "in_progress":
                raise ValidationError(f"评估 {assessment_id} 已结束，不能再记录回答（可以更正得分）")
            if message_id is not None:
                message = self._message_row(conn, message_id)
                if message["conversation_id"] != assessment["conversation_id"]:
                    raise ValidationError(f"消息 {message_id} 不属于评估 {assessment_id} 的对话")
            conn.execute(
                "INSERT INTO assessment_items (assessment_id, item_no, question, answer, score, method,"
                " needs_review, message_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (assessment_id, item_no) DO UPDATE SET question = excluded.question,"
                " answer = excluded.answer, score = excluded.score, method = excluded.method,"
                " needs_review = excluded.needs_review, message_id = excluded.message_id,"
                " updated_at = excluded.updated_at",
                (assessment_id, item_no, question, answer, score, method, int(needs_review),
                 message_id, now, now),
            )

    def correct_item(self, assessment_id: int, item_no: int, clinician_score: int, corrected_by: str) -> None:
        """A clinician's score (0-3) for an item, kept beside the automatic one; allowed after the end."""
        assessment_id = check_id(assessment_id, "评估 ID")
        item_no = _check_item_no(item_no)
        clinician_score = check_item_score(clinician_score, "更正得分", optional=False)
        with self._write() as conn:
            self._active_user(conn, corrected_by, "更正评估得分", roles=CORRECTOR_ROLES)
            self._assessment_row(conn, assessment_id)
            cursor = conn.execute(
                "UPDATE assessment_items SET clinician_score = ?, corrected_by = ?, corrected_at = ?"
                " WHERE assessment_id = ? AND item_no = ?",
                (clinician_score, corrected_by, utc_now(), assessment_id, item_no),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"评估 {assessment_id} 没有第 {item_no} 条的回答")

    def finish_assessment(
        self, assessment_id: int, total: int, band: str | None, status: str = "finished"
    ) -> None:
        """Store the result; calling it again (after a correction) updates total and band.
        ``status`` may be "abandoned" for a screening stopped early."""
        assessment_id = check_id(assessment_id, "评估 ID")
        total = check_non_negative_int(total, "总分")
        band = check_optional_label(band, "严重程度")
        if status not in ("finished", "abandoned"):
            raise ValidationError(f"评估结束状态必须是 finished 或 abandoned，收到 {show(status)}")
        with self._write() as conn:
            self._assessment_row(conn, assessment_id)
            conn.execute(
                "UPDATE assessments SET status = ?, total = ?, band = ?,"
                " finished_at = COALESCE(finished_at, ?) WHERE id = ?",
                (status, total, band, utc_now(), assessment_id),
            )

    def save_screening_state(self, assessment_id: int, state: dict | None, paused: bool = False) -> None:
        """Keep a running screening's position (``Screening.to_dict()``) and whether it waits for the
        crisis flow, so that a restart resumes it where it was."""
        assessment_id = check_id(assessment_id, "评估 ID")
        with self._write() as conn:
            if self._assessment_row(conn, assessment_id)["status"] != "in_progress":
                raise ValidationError(f"评估 {assessment_id} 已结束")
            conn.execute("UPDATE assessments SET state = ?, paused = ? WHERE id = ?",
                         (None if state is None else json.dumps(state, ensure_ascii=False), int(bool(paused)),
                          assessment_id))

    def running_assessment(self, conversation_id: int) -> dict[str, Any] | None:
        """The conversation's screening still in progress (newest), with ``state`` decoded, or None."""
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._read() as conn:
            row = self._row(conn, "SELECT * FROM assessments WHERE conversation_id = ? AND status = 'in_progress'"
                            " ORDER BY id DESC LIMIT 1", (conversation_id,))
        if row is not None:
            row["state"] = json.loads(row["state"]) if row.get("state") else None
            row["paused"] = bool(row.get("paused"))
        return row

    def get_assessment(self, assessment_id: int) -> dict[str, Any]:
        """The screening with its ``items`` in item order."""
        assessment_id = check_id(assessment_id, "评估 ID")
        with self._read(snapshot=True) as conn:
            assessment = self._assessment_row(conn, assessment_id)
            items = self._rows(
                conn,
                "SELECT * FROM assessment_items WHERE assessment_id = ? ORDER BY item_no",
                (assessment_id,),
            )
        assessment["items"] = [_decode_item(i) for i in items]
        return assessment

    def list_assessments(self, conversation_id: int) -> list[dict[str, Any]]:
        conversation_id = check_id(conversation_id, "对话 ID")
        with self._read() as conn:
            return self._rows(
                conn, "SELECT * FROM assessments WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            )

