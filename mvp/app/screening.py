"""Guided PHQ-9 / GAD-7 screening inside a conversation (part of `mvp.app.service.Service`).

The clinician (playing the client) starts a screening in a conversation; the app records a client
turn "（来访者同意开始……筛查）" and replies with the instrument's introduction and first question.
While the screening runs, each client message is an answer: it is scored (the model through the
engine, cross-checked by the rule scorer; disagreements and low confidence are marked for review),
stored in feedback.db, and the reply is the follow-up (for a vague answer) or the next question.
PHQ-9 item 9 above 0 (or risk words in an answer) starts the safety flow: the resources come first
and the conversation is flagged. A crisis said during a screening is never scored as an answer: the
screening pauses and the crisis flow (resources, crisis instruction) answers; it stays paused while the
conversation has an open risk flag, and when it resumes the current question is asked again first. Clinicians can correct any item score; corrections are stored and
exported as labelled data for the scorer.

The running state (current item, pending follow-up, paused) is saved in the store after every step
(`assessments.state`) and cached in memory; after a restart the screening resumes where it was. A
clinician can abandon a running screening (`abandon_screening`); its answered items are kept.
"""

from __future__ import annotations

import threading
from typing import Any

from mvp import safety
from mvp.assessment import AssessmentError, Screening, load_instruments

SCREENING_STAGE = "assessment"


class ScreeningMixin:
    """Methods of Service for screenings; expects self.store, self.stages, self.engines, self.user."""

    def _init_screening(self) -> None:
        self.instruments = load_instruments()
        self._screenings: dict[int, tuple[int, Screening]] = {}
        self._paused: set[int] = set()  # conversations whose screening waits for the crisis flow
        self._screening_lock = threading.Lock()

    def _save_screening(self, conversation_id: int) -> None:
        active = self._screenings.get(conversation_id)
        if active:
            self.store.save_screening_state(active[0], active[1].to_dict(), conversation_id in self._paused)

    def pause_screening(self, conversation_id: int) -> None:
        """The crisis flow comes first: no answer is scored until the screening resumes."""
        if self.active_screening(conversation_id):
            self._paused.add(conversation_id)
            self._save_screening(conversation_id)

    def screening_paused(self, conversation_id: int) -> bool:
        self.active_screening(conversation_id)
        return conversation_id in self._paused

    def active_screening(self, conversation_id: int) -> tuple[int, Screening] | None:
        """The running screening: from memory, or as saved in the store (after a restart)."""
        active = self._screenings.get(conversation_id)
        if active is None:
            row = self.store.running_assessment(conversation_id)
            if row is None or not row["state"]:
                return None
            try:
                screening = Screening.from_dict(row["state"], self.instruments)
            except AssessmentError:
                return None
            active = self._screenings.setdefault(conversation_id, (row["id"], screening))
            if row["paused"]:
                self._paused.add(conversation_id)
        return active

    def abandon_screening(self, name: str, conversation_id: int) -> dict:
        """Stop the running screening early; answered items stay, the conversation continues as chat."""
        _, conversation = self._conversation(name, conversation_id)
        with self._screening_lock:
            active = self.active_screening(conversation["id"])
            if active is None:
                raise AssessmentError("这个对话里没有进行中的筛查")
            assessment_id, screening = active
            self.store.finish_assessment(assessment_id, screening.total, screening.band, status="abandoned")
            self._screenings.pop(conversation["id"], None)
            self._paused.discard(conversation["id"])
        return self.screening_state(name, conversation["id"])

    def start_screening(self, name: str, conversation_id: int, instrument: str) -> dict:
        """Start PHQ-9 or GAD-7 in a conversation; returns the stored reply (intro + first item)."""
        user, conversation = self._conversation(name, conversation_id)
        if not isinstance(instrument, str) or instrument not in self.instruments:
            raise AssessmentError(f"未知的量表 {instrument!r}（可选：{', '.join(self.instruments)}）")
        if self.active_screening(conversation["id"]):
            raise AssessmentError("这个对话里已有一个进行中的筛查：请先完成它，或点击“放弃筛查”")
        inst = self.instruments[instrument]
        if conversation["stage_id"] != SCREENING_STAGE and SCREENING_STAGE in self.stages.by_id:
            conversation = self.set_stage(name, conversation["id"], SCREENING_STAGE)
        assessment_id = self.store.start_assessment(conversation["id"], inst.id)
        screening = Screening(inst)
        client_turn = self.store.add_user_message(
            conversation["id"], f"（来访者同意开始{inst.name}筛查）", conversation["stage_id"]
        )
        text = f"{inst.intro}\n\n{screening.next_prompt()}"
        message = self._store_scripted(conversation, client_turn, text, inst.id, 1)
        self._screenings[conversation["id"]] = (assessment_id, screening)
        self._save_screening(conversation["id"])
        return {"assessment_id": assessment_id, "message_id": message["id"], "text": text,
                "screening": self.screening_state(name, conversation["id"])}

    def _store_scripted(self, conversation: dict, parent_id: int, text: str, instrument: str, item: int | None,
                        safety_info: dict | None = None) -> dict:
        """Store a scripted (not generated) counsellor turn of a screening."""
        message_id = self.store.add_assistant_message(
            conversation["id"], parent_id, text, stage_id=conversation["stage_id"],
            model_version_id=self.engines.primary_id,
            gen_params={"scripted": True, "screening": instrument, "item": item},
            metrics={"finish_reason": "stop", "new_tokens": 0, "prompt_tokens": 0, "ttft_s": 0.0,
                     "total_s": 0.0, "dropped_turns": 0},
            safety=safety_info,
        )
        return self.store.get_message(message_id)

    def _screening_turn(self, conversation: dict, user_message_id: int, text: str, detection) -> dict:
        """Score a client answer, store it, and store the next counsellor question."""
        with self._screening_lock:
            assessment_id, screening = self.active_screening(conversation["id"])
            if conversation["id"] in self._paused:  # back from the crisis flow: ask the question again
                self._paused.discard(conversation["id"])
                self._save_screening(conversation["id"])
                return self._store_scripted(conversation, user_message_id,
                                            f"谢谢你愿意继续。我们回到刚才的问卷：\n\n{screening.next_prompt()}",
                                            screening.instrument.id, screening.current_item)
            item = screening.instrument.item(screening.current_item)
            engine = None if self.engines.primary.info.get("is_demo") else self.engines.primary
            step = screening.answer(text, engine)
            if not step.follow_up:
                record = screening.items[-1]
                self.store.record_item(
                    assessment_id, record["item_no"], record["question"], record["answer"], record["score"],
                    record["method"], needs_review=record["needs_review"], message_id=user_message_id,
                )
            risk = step.risk or (detection is not None and detection.is_crisis)
            reply = screening.next_prompt()
            if step.done:
                reply = f"{reply}\n\n（{screening.instrument.name}总分 {screening.total}，{screening.band}）"
                self.store.finish_assessment(assessment_id, screening.total, screening.band)
                del self._screenings[conversation["id"]]
            else:
                self._save_screening(conversation["id"])
        safety_info = None
        if risk:
            categories = detection.categories if detection is not None and detection.is_crisis else ("suicide",)
            det = safety.Detection(tuple(categories), tuple(detection.evidence if detection else ()) or (f"{screening.instrument.id} item {item.no}",))
            if not (detection is not None and detection.is_crisis):  # send() already flagged a detected crisis
                self.store.add_flag(conversation["id"], "suicide", [f"{screening.instrument.id} 第{item.no}题：{text[:80]}"],
                                    source="assessment", message_id=user_message_id)
            preamble = safety.safety_message(det, self.resources)
            reply = f"{preamble}\n\n{reply}"
            safety_info = {"categories": list(det.categories), "evidence": list(det.evidence), "preamble": True,
                           "preamble_chars": len(preamble) + 2, "blocked": False, "reasons": [], "original": None}
        message = self._store_scripted(conversation, user_message_id, reply, screening.instrument.id,
                                       None if step.done else screening.current_item, safety_info)
        return message

    def screening_state(self, name: str, conversation_id: int) -> dict:
        """The side panel: every item (question, answer, score, how it was scored), total, band."""
        _, conversation = self._conversation(name, conversation_id)
        active = self.active_screening(conversation["id"])
        assessments = self.store.list_assessments(conversation["id"])
        if not assessments:
            return {"assessment_id": None, "active": False, "items": [], "total": 0, "band": ""}
        latest = self.store.get_assessment(assessments[-1]["id"])
        instrument = self.instruments.get(latest["instrument"])
        items = latest["items"]
        total = sum((i["clinician_score"] if i["clinician_score"] is not None else (i["score"] or 0)) for i in items)
        return {
            "assessment_id": latest["id"],
            "instrument": latest["instrument"],
            "status": latest["status"],
            "active": active is not None and active[0] == latest["id"],
            "paused": conversation["id"] in self._paused,
            "current_item": active[1].current_item if active else None,
            "items": items,
            "total": total,
            "band": instrument.band(total) if instrument else "",
            "needs_review": sum(1 for i in items if i["needs_review"]),
        }

    def correct_item(self, name: str, assessment_id: int, item_no: int, score: Any) -> dict:
        """A clinician's correction of one item score (a rating of the scorer's judgement)."""
        user = self.user(name)
        if user["role"] == "demo":
            raise AssessmentError("演示账号不能更正评分")
        assessment = self.store.get_assessment(assessment_id)
        self._conversation(name, assessment["conversation_id"])
        self.store.correct_item(assessment["id"], item_no, score, user["name"])
        active = self.active_screening(assessment["conversation_id"])
        if active and active[0] == assessment["id"]:
            active[1].correct(item_no, score)
            self._save_screening(assessment["conversation_id"])
        return self.screening_state(name, assessment["conversation_id"])
