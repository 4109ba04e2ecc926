"""The named API endpoints for gradio_client (`/new_conversation`, `/conversations`, `/chat`, `/regenerate`, `/stop`,
`/rate`, `/thumb`, `/compare`, `/choose`, `/history`, `/stages`, `/start_screening`, `/abandon_screening`, `/screening`,
`/correct_item`, `/flags`, `/review_queue`, `/review_flag`, `/audit`, `/delete_conversation`).

Each calls the same service method as the UI, with the logged-in user. `/rate` takes one argument
per dimension of config/rating.yaml (its signature is built from the settings, so a new dimension
is a new API argument with no code change).
"""

from __future__ import annotations

import inspect
from typing import Any

import gradio as gr

from mvp.app.service import Service, ServiceError

from . import render
from .common import throttled, user_errors, user_errors_stream, username


def check_arguments(demo: gr.Blocks, api_names: set[str]) -> None:
    """A call of a named endpoint with too few values: name the missing arguments (Gradio's own
    check answers ``{"error": null}``), and fill in trailing arguments that have defaults."""
    original = demo.validate_inputs

    def validate_inputs(block_fn, inputs):
        if block_fn.api_name in api_names and isinstance(inputs, list) and len(inputs) < len(block_fn.inputs):
            params = [p for p in inspect.signature(block_fn.fn).parameters.values() if p.name != "request"]
            missing = [p.name for p in params[len(inputs):] if p.default is inspect.Parameter.empty]
            if missing:
                raise gr.Error(f"缺少参数：{'、'.join(missing)}", print_exception=False)
            inputs.extend(p.default for p in params[len(inputs):len(block_fn.inputs)])
        return original(block_fn, inputs)

    demo.validate_inputs = validate_inputs


def rate_endpoint(service: Service):
    """``rate(message_id, <one score per dimension>, tags, comment, rewrite)`` for gr.api."""
    dimensions = tuple(service.rating.dimensions)
    P = inspect.Parameter

    def rate(*args: Any) -> dict:
        values = dict(zip(names, args))
        request = values.pop("request", None)
        fields = {d: values[d] for d in dimensions if values.get(d) is not None}
        return service.rate(username(request), values["message_id"], **fields, tags=values.get("tags") or [],
                            comment=values.get("comment") or None, rewrite=values.get("rewrite") or None)

    params = [P("message_id", P.POSITIONAL_OR_KEYWORD, annotation=int)]
    params += [P(d, P.POSITIONAL_OR_KEYWORD, default=None, annotation=Any) for d in dimensions]
    params += [P("tags", P.POSITIONAL_OR_KEYWORD, default=None, annotation=list | None),
               P("comment", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
               P("rewrite", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
               P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)]
    names = [p.name for p in params]
    rate.__signature__ = inspect.Signature(params, return_annotation=dict)
    rate.__annotations__ = {p.name: p.annotation for p in params} | {"return": dict}
    rate.__doc__ = "A detailed rating of any reply: scores 1-5 (or null) per dimension, tags, comment, expert rewrite."
    return rate


def register_api(service: Service, model_slots: int = 1) -> set[str]:
    """Named endpoints for gradio_client (must be called inside the Blocks context); returns their names."""
    names: set[str] = set()

    def api(fn):
        names.add(fn.__name__)
        return gr.api(user_errors(fn), api_name=fn.__name__)

    def api_stream(fn):
        names.add(fn.__name__)
        return gr.api(user_errors_stream(fn), api_name=fn.__name__, concurrency_id="model",
                      concurrency_limit=model_slots)

    @api
    def stages(request: gr.Request) -> list:
        """The treatment stages: id, name, description, instruction, goals, exit_signals."""
        service.user(username(request))
        return [{**vars(s), "exit_signals": vars(s.exit_signals)} for s in service.stages]

    @api
    def new_conversation(stage_id: str = "", case_id: str = "", request: gr.Request = None) -> dict:
        """Start a conversation in a stage (empty: the first stage), optionally from a sample case."""
        return service.new_conversation(username(request), stage_id or None, case_id or None)

    @api
    def conversations(limit: int = 100, request: gr.Request = None) -> list:
        """Your conversations (an admin's: everyone's), most recently active first, each with
        stage_id, model_version_id, reply_count, unrated_count, open_flags, created_at, updated_at."""
        return service.conversations(username(request), limit)

    @api_stream
    def chat(conversation_id: int, message: str, stage_id: str = "", request: gr.Request = None) -> dict:
        """Send a client message; streams {"text", "done", "message_id", "user_message_id", "notices", ...}."""
        name = username(request)
        for event in throttled(service.send(name, conversation_id, message, stage_id or None)):
            yield render.event_dict(event)

    @api_stream
    def regenerate(conversation_id: int, request: gr.Request = None) -> dict:
        """A new reply to the newest client message (the earlier one is kept as an alternative)."""
        for event in throttled(service.regenerate(username(request), conversation_id)):
            yield render.event_dict(event)

    @api
    def stop(conversation_id: int, request: gr.Request = None) -> bool:
        """Stop the reply being generated in this conversation (it is kept as interrupted)."""
        return service.stop(username(request), conversation_id)

    @api
    def history(conversation_id: int, request: gr.Request = None) -> list:
        """The active path of the conversation, with message ids."""
        return [render.public_message(m) for m in service.history(username(request), conversation_id)]

    api(rate_endpoint(service))

    @api
    def thumb(message_id: int, value: int, request: gr.Request = None) -> dict:
        """Thumbs up (1), down (-1) or cleared (0) on a reply."""
        return service.thumb(username(request), message_id, value)

    @api
    def compare(conversation_id: int, opponent_version_id: int = 0, request: gr.Request = None) -> dict:
        """Two blind replies to the newest client message: {message_a, message_b, text_a, text_b}."""
        return service.compare(username(request), conversation_id, opponent_version_id or None)

    @api
    def choose(message_a: int, message_b: int, choice: str, request: gr.Request = None) -> dict:
        """Which of the two compared replies is better: a, b, tie or both_bad."""
        return service.choose(username(request), message_a, message_b, choice)

    @api
    def flags(include_reviewed: bool = False, request: gr.Request = None) -> list:
        """Admin: flagged conversations (crisis messages, blocked replies)."""
        return service.flags(username(request), include_reviewed=bool(include_reviewed))

    @api
    def review_queue(include_reviewed: bool = False, request: gr.Request = None) -> list:
        """Admin: one row per flagged message with its text, the turn before it, categories, flag_ids."""
        return service.review_queue(username(request), include_reviewed=bool(include_reviewed))

    @api
    def review_flag(flag_id: int, note: str = "", request: gr.Request = None) -> bool:
        """Admin: mark a flag reviewed."""
        service.review_flag(username(request), flag_id, note or None)
        return True

    @api
    def start_screening(conversation_id: int, instrument: str = "phq9", request: gr.Request = None) -> dict:
        """Start PHQ-9 (phq9) or GAD-7 (gad7): the reply is the introduction and the first item;
        each later /chat message is an answer, scored and followed by the next item."""
        return service.start_screening(username(request), conversation_id, instrument)

    @api
    def abandon_screening(conversation_id: int, request: gr.Request = None) -> dict:
        """Stop the running screening early (its answered items are kept); returns the screening state."""
        return service.abandon_screening(username(request), conversation_id)

    @api
    def screening(conversation_id: int, request: gr.Request = None) -> dict:
        """The latest screening of a conversation: items with answers, scores, method, review marks, total, band."""
        return service.screening_state(username(request), conversation_id)

    @api
    def correct_item(assessment_id: int, item_no: int, score: int, request: gr.Request = None) -> dict:
        """A clinician's corrected score (0-3) for one screening item."""
        return service.correct_item(username(request), assessment_id, item_no, score)

    @api
    def audit(limit: int = 200, request: gr.Request = None) -> list:
        """Admin: the newest administrative acts (flag reviewed, export, deletion, account changes)."""
        return service.audit(username(request), limit)

    @api
    def delete_conversation(conversation_id: int, request: gr.Request = None) -> dict:
        """Delete a conversation with its messages, ratings and comparisons (owner or admin)."""
        return service.delete_conversation(username(request), conversation_id)

    # -- session memory and stages (mvp/app/service/memory.py) ----------------------------------------
    @api
    def memory(conversation_id: int, request: gr.Request = None) -> dict:
        """The 会谈摘要 panel: latest summary (content, author, turns covered), risk line, where the
        model's view starts (cut_message_id), the pending stage suggestion, case and session number."""
        return service.memory_view(username(request), conversation_id)

    @api
    def correct_summary(conversation_id: int, text: str, request: gr.Request = None) -> dict:
        """Store a clinician's correction of the session summary: what the model gets from the next turn."""
        return service.correct_summary(username(request), conversation_id, text)

    @api
    def answer_suggestion(conversation_id: int, accept: bool, request: gr.Request = None) -> dict:
        """Accept (the stage changes) or dismiss the pending stage suggestion; both are stored as events."""
        if not isinstance(accept, bool):
            raise ServiceError("accept 必须是 true 或 false")
        return service.answer_suggestion(username(request), conversation_id, accept)

    @api
    def new_session(conversation_id: int, request: gr.Request = None) -> dict:
        """Start the next session of this conversation's client case (last stage and summary carried over)."""
        return service.new_session(username(request), conversation_id)

    return names
