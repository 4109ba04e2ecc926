"""Conversations and chat turns: the client message in, the model's reply streamed out and stored.

A chat turn (`send`): one validation of the client message -> crisis check (rules + classifier, and
the model check when a real model serves; any failure flags the message for review) -> store the
message and its flag in one transaction -> system prompt: the stage instruction, the crisis
instruction while the conversation has an open risk flag, and a pinned risk note the context budget
never drops (see risk.py) -> stream the model's reply THROUGH the reply screen (`safety.ReplyStream`:
text is shown only once a screen of everything shown so far passes, so blocked text never reaches the
browser or the API) -> store it with its generation parameters, timings and safety findings. A
cancelled reply is stored as "interrupted". During a crisis an active screening pauses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mvp import safety
from mvp.counsel.stages import build_messages
from mvp.model.engine import GenerationError, GenerationParams
from mvp.store.validation import check_message

from .base import Event, ServiceBase, ServiceError, clean_model_text, log, public_error
from .risk import RiskState, risk_state

REVIEW_CATEGORY = "review"  # a message whose check failed: flagged for a person to look at


class ChatMixin(ServiceBase):
    # -- conversations ---------------------------------------------------------------------------
    def new_conversation(self, name: str, stage_id: str | None = None, case_id: str | None = None) -> dict:
        user = self.user(name)
        stage = self.stages.get(stage_id) if stage_id else self.stages.default
        if case_id:
            from mvp.counsel.cases import get_case

            if get_case(case_id) is None:
                raise ServiceError(f"示例个案不存在：{case_id}")
        cid = self.store.create_conversation(
            user["name"], stage.id, self.engines.primary_id, is_demo=user["role"] == "demo", case_id=case_id or None
        )
        return self.store.get_conversation(cid)

    def set_stage(self, name: str, conversation_id: int, stage_id: str) -> dict:
        user, conversation = self._conversation(name, conversation_id)
        stage = self.stages.get(stage_id)
        self._manual_stage(user["name"], conversation, stage.id)  # a stage event (memory.py)
        self.store.set_stage(conversation["id"], stage.id)
        return self.store.get_conversation(conversation["id"])

    def conversation(self, name: str, conversation_id: int) -> dict:
        """One conversation, if this account may see it (its owner or an admin)."""
        return self._conversation(name, conversation_id)[1]

    def conversations(self, name: str, limit: int = 100) -> list[dict]:
        """The account's conversations (an admin's: everyone's), most recently active first, each with
        ``reply_count``, ``unrated_count`` (replies its owner has not rated) and ``open_flags``."""
        user = self.user(name)
        owner = None if user["role"] == "admin" else user["name"]
        return self.store.list_conversations(user=owner, limit=limit)

    def rated_ids(self, name: str, conversation_id: int) -> set[int]:
        """Ids of the replies in this conversation that this account has rated."""
        user, conversation = self._conversation(name, conversation_id)
        rows = self.store.latest_ratings(conversation_id=conversation["id"], rater=user["name"])
        return {r["message_id"] for r in rows}

    def alternatives(self, name: str, message_id: int) -> list[dict]:
        """Every reply to the same client turn as this one (itself included), oldest first."""
        self._message(name, message_id)
        return self.store.list_alternatives(message_id)

    def history(self, name: str, conversation_id: int) -> list[dict]:
        self._conversation(name, conversation_id)
        return self.store.get_history(conversation_id)

    def delete_conversation(self, name: str, conversation_id: int) -> dict:
        self.user(name)
        result = self.store.delete_conversation(conversation_id, by_user=name)
        self.store.add_audit(name, "conversation_deleted", result["conversation_id"],
                             {"messages_deleted": result["messages_deleted"]})
        return result

    # -- chat ------------------------------------------------------------------------------------
    def client_context(self, conversation_id: int, before_id: int | None = None) -> list[str]:
        """The last earlier client turns (safety.CONTEXT_TURNS), oldest first: a borderline message
        right after a crisis turn is judged with that turn in mind (``safety.detect(context=...)``)."""
        turns = [m["content"] for m in self.store.get_history(conversation_id, include_notices=False)
                 if m["role"] == "user" and (before_id is None or m["id"] < before_id)]
        return turns[-safety.CONTEXT_TURNS:]

    def detect(self, text: str, context: list[str] | None = None) -> safety.Detection:
        """Every offline layer (rules + classifier, with the earlier client turns as context), plus the
        model check when one is configured. Never raises: a failed detection flags the message for
        review and shows the resources."""
        try:
            detection = safety.detect(text, rules=self.rules, context=context or ())
        except Exception as exc:  # noqa: BLE001 - fail safe, never a bare internal error
            log.exception("crisis detection failed")
            return safety.fail_safe(exc)
        if self.model_check_engine is not None:
            found = safety.model_check_bounded(text, self.model_check_engine, timeout_s=self.model_check_timeout_s)
            if not found.categories and found.evidence:
                log.warning("model check skipped: %s", found.evidence[0])
            detection = safety.combine(detection, found)
        return detection

    def risk(self, conversation_id: int) -> RiskState:
        """The conversation's open client-risk flags (see risk.py)."""
        return risk_state(self.store.open_flags(conversation_id))

    @staticmethod
    def _flag(detection: safety.Detection) -> dict | None:
        if not detection.is_crisis:
            return None
        return {"categories": list(detection.categories) or [REVIEW_CATEGORY],
                "evidence": list(detection.evidence), "source": "rules"}

    def send(
        self,
        name: str,
        conversation_id: int,
        text: Any,
        stage_id: str | None = None,
        params: GenerationParams | None = None,
    ) -> Iterator[Event]:
        """Store the client message and stream the model's reply (see the module docstring)."""
        user, conversation = self._conversation(name, conversation_id)
        with self._one_generation(user["name"]):
            text = check_message(text)
            # Everything that can refuse the turn is checked before anything is written.
            stage = self.stages.get(stage_id) if stage_id else self.stages.get(conversation["stage_id"])
            detection = self.detect(text, self.client_context(conversation["id"]))
            screening = self.active_screening(conversation["id"])
            risk = self.risk(conversation["id"])
            if not screening:
                self._check_fits(conversation, stage, text, params, detection, risk)
            if stage.id != conversation["stage_id"]:
                conversation = self.set_stage(name, conversation["id"], stage.id)
            user_message_id = self.store.add_user_message(conversation["id"], text, conversation["stage_id"],
                                                          flag=self._flag(detection))
            if screening and not detection.is_crisis and not risk.active:
                message = self._screening_turn(conversation, user_message_id, text, detection)
                yield Event(message["content"], done=True, message=message)
                return
            if screening:
                self.pause_screening(conversation["id"])  # the crisis flow comes first
            yield from self._reply(conversation, user_message_id, params, detection)

    def _check_fits(self, conversation: dict, stage, text: str, params: GenerationParams | None, detection,
                    risk: RiskState) -> None:
        """Raise ContextTooLongError / a store ValidationError before the client message is stored."""
        history = self.store.get_history(conversation["id"], include_notices=False)
        engine = self.engines.primary
        params = params or engine.default_params()
        messages = build_messages(self._instruction(stage, detection, risk),
                                  history + [{"role": "user", "content": text}])
        engine.budget.fit(messages, params.max_new_tokens, pinned=self._pinned(risk))

    def regenerate(self, name: str, conversation_id: int, params: GenerationParams | None = None) -> Iterator[Event]:
        """A new reply to the newest client message; the earlier one is kept as an alternative."""
        user, conversation = self._conversation(name, conversation_id)
        with self._one_generation(user["name"]):
            self._no_screening(conversation["id"])
            parent = self._last_user_message(conversation["id"])
            detection = self.detect(parent["content"], self.client_context(conversation["id"], parent["id"]))
            self._flag_again(conversation["id"], parent["id"], detection)
            yield from self._reply(conversation, parent["id"], params, detection)

    def _flag_again(self, conversation_id: int, message_id: int, detection: safety.Detection) -> None:
        """A re-check of a stored message (regenerate, compare) may find more than the first one did
        (a changed rules file, the model check): record it on the message's one flag."""
        flag = self._flag(detection)
        if flag is not None:
            self.store.add_flag(conversation_id, flag["categories"], flag["evidence"], source=flag["source"],
                                message_id=message_id)

    def _no_screening(self, conversation_id: int) -> None:
        if self.active_screening(conversation_id) and not self.screening_paused(conversation_id):
            raise ServiceError("量表筛查进行中：请先回答完问题，再重新生成或比较回复")

    def _last_user_message(self, conversation_id: int) -> dict:
        history = [m for m in self.store.get_history(conversation_id, include_notices=False)]
        users = [m for m in history if m["role"] == "user"]
        if not users:
            raise ServiceError("还没有来访者消息，无法重新生成")
        return users[-1]

    def _context(self, conversation: dict, parent_id: int, detection, risk: RiskState) -> tuple[list[dict], str, list]:
        path = self.store.get_path(parent_id)
        stage = self.stages.get(conversation["stage_id"])
        return build_messages(self._instruction(stage, detection, risk), path), stage.id, path

    @staticmethod
    def _instruction(stage, detection, risk: RiskState | None = None) -> str:
        """The system prompt of a turn: the stage's instruction, after the crisis one on a crisis and
        for as long as the conversation has an open risk flag."""
        if (detection is not None and detection.is_crisis) or (risk is not None and risk.active):
            return safety.CRISIS_INSTRUCTION + "\n\n" + stage.instruction
        return stage.instruction

    @staticmethod
    def _crisis_context(detection, risk: RiskState):
        """What the reply screen is told about the client: this turn's detection, or the open risk
        (a reply that dismisses risk is unsafe while the conversation is at risk, not only on the turn)."""
        if (detection is not None and detection.is_crisis) or not risk.active:
            return detection
        return safety.Detection(risk.categories)

    @staticmethod
    def _pinned(risk: RiskState) -> tuple[str, ...]:
        note = risk.note(safety.CATEGORY_NAMES)
        return (note,) if note else ()

    def _reply(
        self,
        conversation: dict,
        parent_id: int,
        params: GenerationParams | None,
        detection,
        version: dict | None = None,
        make_active: bool = True,
    ) -> Iterator[Event]:
        risk = self.risk(conversation["id"])
        messages, stage_id, path = self._context(conversation, parent_id, detection, risk)
        pinned = self._pinned(risk)
        engine = self.engines.get(version) if version else self.engines.primary
        version_id = version["id"] if version else self.engines.primary_id
        params = params or engine.default_params()
        # The session summary stands in for the turns the budget drops (memory.py); what the model
        # saw (system prompt with notes and summary, the first message seen) is stored with the reply.
        window = self._window(conversation, path, messages, engine, params, pinned)
        prompt = lambda result: self._prompt_record(messages, pinned, window, result, path)  # noqa: E731
        preamble = ""
        if detection is not None and detection.is_crisis:
            preamble = safety.safety_message(detection, self.resources) + "\n\n"
            yield Event(preamble)
        crisis = self._crisis_context(detection, risk)
        stream = safety.ReplyStream(lambda text: self.rules.screen_reply(text, crisis))
        gen = engine.start(messages, params, pinned=pinned, summary=window.text, covered=window.covered,
                           keep_summary=window.keep)
        self._running[conversation["id"]] = gen
        try:
            for _ in gen:
                text = clean_model_text(gen.text)
                if text.startswith(stream.text) and stream.feed(text[len(stream.text):]):
                    yield Event(preamble + stream.released)
            text = clean_model_text(gen.text) if gen.result is None else clean_model_text(gen.result.text)
            if text.startswith(stream.text):
                stream.feed(text[len(stream.text):])
        except GenerationError as exc:
            raise ServiceError(public_error(exc)) from None
        except GeneratorExit:
            # The consumer went away (a cancelled request, a closed tab): stop the model and keep
            # what was generated as an interrupted reply.
            gen.cancel()
            for _ in gen:
                pass
            if gen.result is not None:
                self._store_reply(conversation, parent_id, stage_id, version_id, gen.result, preamble, detection,
                                  make_active, prompt=prompt(gen.result), risk=risk)
            raise
        finally:
            self._running.pop(conversation["id"], None)
        message, notices = self._store_reply(
            conversation, parent_id, stage_id, version_id, gen.result, preamble, detection, make_active,
            prompt=prompt(gen.result), risk=risk, screen=stream.close(),
        )
        if make_active and self._suggest_stage(conversation, message["id"], engine):
            notices.append("已满足本阶段的退出信号：可在对话上方接受或暂不进入下一阶段")
        yield Event(message["content"], done=True, message=message, notices=notices)

    def _store_reply(self, conversation, parent_id, stage_id, version_id, result, preamble, detection, make_active,
                     prompt: tuple[str, dict], risk: RiskState, screen=None):
        """Screen and store a finished (or interrupted) reply; returns (message, notices).

        The exact system prompt the model saw (summary included) and where its view of the dialogue
        started go into gen_params (the export rebuilds each sample's prompt from them) and the length of a crisis preamble into the safety record, so
        training data can separate what the model wrote from what the app put in front of it."""
        text = clean_model_text(result.text)
        crisis = self._crisis_context(detection, risk)
        if screen is None:  # an interrupted reply: screen what was generated
            screen = self.rules.screen_reply(text, crisis)
        content = preamble + (screen.text if screen.blocked else text)
        status = "blocked" if screen.blocked else ("interrupted" if result.finish_reason == "cancelled" else "complete")
        safety_info = None
        if preamble or screen.blocked:
            safety_info = {
                "categories": list(detection.categories) if detection else [],
                "evidence": list(detection.evidence) if detection else [],
                "preamble": bool(preamble),
                "preamble_chars": len(preamble),
                "blocked": screen.blocked,
                "reasons": list(screen.reasons),
                "original": text if screen.blocked else None,
            }
        message_id = self.store.add_assistant_message(
            conversation["id"],
            parent_id,
            content,
            stage_id=stage_id,
            model_version_id=version_id,
            gen_params={**result.params, "system_prompt": prompt[0], "context": prompt[1]},
            metrics=result.metrics(),
            status=status,
            safety=safety_info,
            make_active=make_active,
        )
        if screen.blocked:
            self.store.add_flag(
                conversation["id"], "unsafe_reply", list(screen.reasons), source="output_screen",
                message_id=message_id,
            )
        notices = []
        if result.dropped_turns:
            notices.append(f"对话较长，最早的 {result.dropped_turns} 轮已移出模型上下文"
                           + ("，由会谈摘要代替（见左侧）" if result.summary_used else ""))
        if screen.blocked:
            notices.append("模型回复未通过安全检查，已替换为安全回复并标记")
        return self.store.get_message(message_id), notices

    def stop(self, name: str, conversation_id: int) -> bool:
        """Stop the reply being generated in this conversation; it is stored as interrupted."""
        _, conversation = self._conversation(name, conversation_id)
        gen = self._running.get(conversation["id"])
        if gen is None:
            return False
        gen.cancel()
        return True
