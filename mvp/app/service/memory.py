"""Session memory and stage progress in the service: what stands in for dropped turns, and when to
suggest the next stage.

Each reply's prompt is [system: stage (and crisis) instruction + pinned risk note + 会谈摘要] + the
newest whole turns (`_window`). The summary covers every turn the context budget left out: when the
window moves past what the summary covers, the summary is updated over the newly dropped turns only
(and a few turns ahead, so the update happens every few turns, not every turn): extractive for the
demo model (mvp/counsel/memory.py), one extra generation for a real model (falling back to the
extractive text when the answer is not a summary). A clinician's correction is stored as a new
summary and is what the model gets from then on; later updates add to it. The risk facts of the
safety flags are always added to the summary the model gets.

Each reply stores what the model saw in gen_params: `system_prompt` (instruction + notes + summary)
and `context` (first message id seen, the summary id, dropped turns): `stored_prompt` rebuilds the
prompt from them. After a reply, the stage's exit signals are checked (mvp/counsel/progress.py)
and a suggestion is stored as a stage event for the clinician to accept or dismiss.
"""

from __future__ import annotations

from dataclasses import dataclass

from mvp import safety
from mvp.counsel import memory, progress
from mvp.model.dialogue import system_with_notes
from mvp.model.engine import GenerationParams
from mvp.store import case_key_of
from mvp.store.validation import check_message

from .base import ServiceBase, ServiceError, clean_model_text, log

SUMMARY_WRITERS = ("auto", "extractive", "model")
LOOKAHEAD_TURNS = 3  # the summary covers this many turns beyond the cut, so it moves every few turns
MAX_WINDOW_UPDATES = 3
CONTEXT_KEY = "context"  # in a reply's gen_params: what the model saw beyond the system prompt
RISK_SOURCES = ("rules", "model", "assessment", "manual")


@dataclass
class Window:
    """The summary part of one reply's prompt."""

    text: str | None  # what the model gets as the summary (risk line included), None: no summary
    covered: int  # dialogue messages the summary stands for (never shown)
    keep: bool  # a summary carried from an earlier session: used even when nothing is dropped
    summary_id: int | None


class MemoryMixin(ServiceBase):
    summary_writer = "auto"  # "extractive" | "model" | "auto" (extractive for the demo model)

    # -- the summary in the prompt ----------------------------------------------------------------
    def _model_writes(self, engine) -> bool:
        if self.summary_writer == "auto":
            return not (getattr(engine, "info", None) or {}).get("is_demo", False)
        return self.summary_writer == "model"

    @staticmethod
    def _dialogue(path: list[dict]) -> list[dict]:
        return [m for m in path if m["role"] in ("user", "assistant")]

    def _risk_line(self, conversation_id: int, dialogue: list[dict]) -> str:
        turns, n = {}, 0
        for m in dialogue:
            n += m["role"] == "user"
            turns[m["id"]] = n
        facts = []
        for flag in reversed(self.store.list_flags(include_reviewed=True, conversation_id=conversation_id)):
            if flag.get("source") not in RISK_SOURCES:
                continue
            quote = " ".join(str(flag.get("message_content") or "").split())[:40] if flag.get("message_role") == "user" else ""
            names = "、".join(safety.CATEGORY_NAMES.get(c, c) for c in flag["categories"])
            facts.append((turns.get(flag.get("message_id")), names, quote))
        return memory.risk_line(facts)

    def _summary_on_path(self, conversation_id: int, dialogue: list[dict]) -> tuple[dict | None, int]:
        """The newest summary that covers a prefix of this path (or nothing of it), and how many of
        the path's messages it covers."""
        index = {m["id"]: i for i, m in enumerate(dialogue)}
        for row in reversed(self.store.list_summaries(conversation_id)):
            last = row["last_message_id"]
            if last is None:
                return row, 0
            if last in index:
                return row, index[last] + 1
        return None, 0

    def _window(self, conversation: dict, path: list[dict], messages: list[dict], engine, params, pinned) -> Window:
        """The summary for this prompt, updated first when the budget drops turns it does not cover."""
        dialogue = self._dialogue(path)
        risk = self._risk_line(conversation["id"], dialogue)
        row, covered = self._summary_on_path(conversation["id"], dialogue)
        for _ in range(MAX_WINDOW_UPDATES + 1):
            keep = bool(row and row.get("source_conversation_id"))
            content = row["content"] if row else ""
            for limit in (None, memory.MAX_SUMMARY_CHARS // 2, memory.MAX_SUMMARY_CHARS // 6):
                text = memory.for_model(content, risk, limit)
                fit = engine.budget.fit(messages, params.max_new_tokens, pinned=pinned, summary=text, covered=covered,
                                        keep_summary=keep)
                if fit.summary_used or text is None or (fit.first_visible == 0 and not keep):
                    break  # in the prompt, or not needed; else shorter, so that it fits a small context
            if fit.first_visible <= covered:
                return Window(text, covered, keep, row["id"] if row else None)
            before = covered
            row, covered = self._move_summary(conversation, dialogue, row, covered, fit.first_visible, engine)
            if covered <= before:
                break
        return Window(text, covered, keep, row["id"] if row else None)

    def _move_summary(self, conversation, dialogue, row, covered, first_visible, engine) -> tuple[dict, int]:
        """A new summary covering the dialogue up to a few turns past `first_visible`."""
        last = len(dialogue) - 1  # the newest client message: never covered
        visible = sum(m["role"] == "user" for m in dialogue[first_visible:])
        ahead = max(0, min(LOOKAHEAD_TURNS, visible // 3))  # a step ahead, small against what is seen
        target = min(last, first_visible + 2 * ahead)
        while target > first_visible and dialogue[target]["role"] != "user":
            target -= 1
        new = dialogue[covered:target]
        first_turn = sum(m["role"] == "user" for m in dialogue[:covered]) + 1
        state = memory.update((row or {}).get("state") or memory.empty_state(), new, first_turn)
        first, last_turn = memory.turn_range(state)
        content, author, kind = None, "extractive", "extractive"
        if self._model_writes(engine):
            content = self._model_summary(engine, (row or {}).get("content") or "", new)
            author = kind = "model" if content else "extractive"
        base = ((row or {}).get("state") or {}).get("based_on")
        if content is None:
            if row is None or (row["author_kind"] == "extractive" and not base):
                content = memory.render(state)
            else:  # a clinician's, the model's or a carried summary: kept as written, the turns after it added
                addition = (row.get("state") or {}).get("addition") if base else None
                if not base:
                    base = {"summary_id": row["id"], "author": row["author"], "author_kind": row["author_kind"],
                            "text": row["content"]}
                addition = memory.update(addition or memory.empty_state(), new, first_turn)
                content = memory.extend(base["text"], memory.render(addition))
                state.update(based_on=base, addition=addition)
        content = content or f"（第 {first or 1}–{last_turn} 轮没有可摘录的要点）"
        summary_id = self.store.add_summary(
            conversation["id"], content, author, kind, first_message_id=dialogue[0]["id"],
            last_message_id=dialogue[target - 1]["id"], first_turn=first or 1, last_turn=max(last_turn, first or 1),
            state=state, source_conversation_id=(row or {}).get("source_conversation_id"))
        return self.store.get_summary(summary_id), target

    @staticmethod
    def _model_summary(engine, previous: str, new: list[dict]) -> str | None:
        """One extra generation: the model updates the summary; None when its answer is not one."""
        try:
            result = engine.generate(memory.model_prompt(previous, new),
                                     GenerationParams(max_new_tokens=memory.MODEL_SUMMARY_MAX_NEW_TOKENS, temperature=0))
            return memory.parse_model_summary(clean_model_text(result.text))
        except Exception as exc:  # noqa: BLE001 - the extractive summary stands in on any failure
            log.warning("model summary failed, extractive summary used: %s", exc)
            return None

    @staticmethod
    def _prompt_record(messages: list[dict], pinned, window: Window, result, path: list[dict]) -> tuple[str, dict]:
        """(system prompt the model saw, the `context` record) for a finished generation."""
        summary = window.text if result.summary_used else None
        system = system_with_notes(messages[:1], pinned, summary)[0]["content"]
        dialogue = [m for m in path if m["role"] in ("user", "assistant")]
        first = dialogue[min(result.first_visible, len(dialogue) - 1)]["id"] if dialogue else None
        return system, {"first_message_id": first, "summary_id": window.summary_id if summary else None,
                        "dropped_turns": result.dropped_turns, "summary_used": bool(summary)}

    # -- what the clinician sees and does ---------------------------------------------------------
    def stored_prompt(self, name: str, message_id: int) -> list[dict]:
        """The prompt a stored reply was generated from: its system prompt and the dialogue from the
        first message the model saw to the client message it answered."""
        _, reply = self._message(name, message_id)
        params = reply.get("gen_params") or {}
        if reply["role"] != "assistant" or "system_prompt" not in params:
            raise ServiceError("这条消息没有记录提示（只有模型回复才有）")
        path = self._dialogue(self.store.get_path(reply["id"])[:-1])
        first = (params.get(CONTEXT_KEY) or {}).get("first_message_id")
        start = next((i for i, m in enumerate(path) if m["id"] == first), 0)
        return [{"role": "system", "content": params["system_prompt"]}] + [
            {"role": m["role"], "content": m["content"], "id": m["id"]} for m in path[start:]]

    def memory_view(self, name: str, conversation_id: int) -> dict:
        """The summary panel: the latest summary (content, author, turns covered), the risk line, where
        the model's view starts, the pending stage suggestion and which session of which case this is."""
        _, conversation = self._conversation(name, conversation_id)
        history = self.store.get_history(conversation["id"], include_notices=False)
        row = self.store.latest_summary(conversation["id"])
        last_reply = next((m for m in reversed(history) if m["role"] == "assistant"), None)
        context = ((last_reply or {}).get("gen_params") or {}).get(CONTEXT_KEY) or {}
        cut = context.get("first_message_id") if context.get("dropped_turns") else None
        return {"conversation": conversation, "summary": row, "risk": self._risk_line(conversation["id"], history),
                "cut_message_id": cut, "dropped_turns": context.get("dropped_turns", 0),
                "suggestion": progress.pending(self.store.list_stage_events(conversation["id"])),
                "case_key": case_key_of(conversation), "session_no": conversation.get("session_no") or 1}

    def correct_summary(self, name: str, conversation_id: int, text) -> dict:
        """Store the clinician's correction; it covers what the summary it corrects covered."""
        user, conversation = self._conversation(name, conversation_id)
        text = check_message(text, "会谈摘要", memory.MAX_SUMMARY_CHARS * 3)
        row = self.store.latest_summary(conversation["id"])
        row = row or {}
        summary_id = self.store.add_summary(
            conversation["id"], text.strip(), user["name"], "clinician", first_message_id=row.get("first_message_id"),
            last_message_id=row.get("last_message_id"), first_turn=row.get("first_turn", 0),
            last_turn=row.get("last_turn", 0), state=row.get("state"), source_conversation_id=row.get("source_conversation_id"))
        return self.store.get_summary(summary_id)

    # -- stages -------------------------------------------------------------------------------------
    def _stage_signals(self, conversation: dict) -> progress.StageSignals:
        history = self.store.get_history(conversation["id"], include_notices=False)
        turns = 0
        for m in reversed(history):
            if m["stage_id"] != conversation["stage_id"]:
                break
            turns += m["role"] == "user"
        finished = any(a["status"] == "finished" for a in self.store.list_assessments(conversation["id"]))
        return progress.StageSignals(turns, finished, self.risk(conversation["id"]).active)

    def _suggest_stage(self, conversation: dict, reply_id: int, engine) -> dict | None:
        """After a reply: store a suggestion when the stage's exit signals hold (never raises)."""
        try:
            conversation = self.store.get_conversation(conversation["id"])
            stage = self.stages.get(conversation["stage_id"])
            signals = self._stage_signals(conversation)
            events = [{**e, "turns": (e["detail"] or {}).get("client_turns_in_stage")}
                      for e in self.store.list_stage_events(conversation["id"])]
            if progress.quiet(events, stage.id, signals.client_turns_in_stage):
                return None
            judge = None
            if self._model_writes(engine):
                def judge(messages):
                    return engine.generate(messages, GenerationParams(max_new_tokens=progress.JUDGE_MAX_NEW_TOKENS,
                                                                      temperature=0)).text
            dialogue = self.store.get_history(conversation["id"], include_notices=False)
            found = progress.suggest(stage, self.stages.next_after(stage.id), signals, judge, dialogue)
            if found is None:
                return None
            self.store.add_stage_event(conversation["id"], "suggested", found.from_stage, found.to_stage, "system",
                                       message_id=reply_id, detail=found.record())
            return found.record()
        except Exception:  # noqa: BLE001 - a suggestion is a help, never a reason to fail a turn
            log.exception("stage suggestion failed")
            return None

    def answer_suggestion(self, name: str, conversation_id: int, accept: bool) -> dict:
        """Accept (the stage changes) or dismiss the pending suggestion; both are stored as events."""
        user, conversation = self._conversation(name, conversation_id)
        events = self.store.list_stage_events(conversation["id"])
        pending = progress.pending(events)
        if pending is None:
            raise ServiceError("当前没有待处理的阶段建议")
        stage = self.stages.get(pending["to_stage"])
        turns = self._stage_signals(conversation).client_turns_in_stage
        detail = {"suggestion_id": pending["id"], "client_turns_in_stage": turns}
        self.store.add_stage_event(conversation["id"], "accepted" if accept else "dismissed", pending["from_stage"],
                                   stage.id, user["name"], message_id=pending["message_id"], detail=detail)
        if accept:
            self.store.set_stage(conversation["id"], stage.id)
        return self.store.get_conversation(conversation["id"])

    def _manual_stage(self, user_name: str, conversation: dict, stage_id: str) -> None:
        if stage_id != conversation["stage_id"]:
            self.store.add_stage_event(conversation["id"], "manual", conversation["stage_id"], stage_id, user_name)

    # -- sessions of one case -----------------------------------------------------------------------
    def new_session(self, name: str, conversation_id: int) -> dict:
        """Session n+1 of this conversation's case: the last stage, and the last summary carried over
        (an extractive summary of the whole session when it had none)."""
        user, previous = self._conversation(name, conversation_id)
        cid = self.store.create_session(previous["id"], user["name"], self.engines.primary_id)
        row = self.store.latest_summary(previous["id"])
        dialogue = self.store.get_history(previous["id"], include_notices=False)
        state = (row or {}).get("state")
        if row is not None and row["last_message_id"] is not None and dialogue:
            covered = next((i + 1 for i, m in enumerate(dialogue) if m["id"] == row["last_message_id"]), len(dialogue))
            state = memory.update(state or memory.empty_state(), dialogue[covered:], row["last_turn"] + 1)
            addition = memory.update(memory.empty_state(), dialogue[covered:], row["last_turn"] + 1)
            content = memory.extend(row["content"], memory.render(addition))
        elif row is not None:
            content = row["content"]
        else:
            state = memory.update(memory.empty_state(), dialogue, 1)
            content = memory.render(state)
        number = previous.get("session_no") or 1
        risk = self._risk_line(previous["id"], dialogue)
        if content or risk:
            text = f"上次会谈（第 {number} 次）：\n" + memory.for_model(content, risk)
            self.store.add_summary(cid, text[:memory.MAX_SUMMARY_CHARS * 2], "system", "carried", state=state,
                                   source_conversation_id=previous["id"])
        return self.store.get_conversation(cid)
