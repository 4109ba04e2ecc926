"""Session memory in the export: the summaries (会谈摘要) and the stage transitions of each conversation.

Pure Python over `Store.export_snapshot()` (its "summaries" and "stage_events"); `train.export` writes
the rows to `memory/summaries.jsonl` and `memory/stage_transitions.jsonl` and counts them in the
manifest. The SFT and preference samples themselves already carry the summary where the dropped turns
would be: a reply's recorded system prompt includes the summary the model got, and its prompt starts
at the first message the model saw (`train.samples`).

A stage-transition row is one stage event: 'accepted' (a suggestion the clinician took) and 'manual'
(a stage the clinician picked) are transitions (`transition: true`); 'suggested' and 'dismissed' are
kept too (a dismissed suggestion is a "not yet" label). Each row carries the last
`CONTEXT_MESSAGES` messages of the dialogue before the event, so a model can learn when to move on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from train import formats

CONTEXT_MESSAGES = 12
TRANSITION_KINDS = ("accepted", "manual")


def _path(by_id: dict[int, dict], message_id: int | None) -> list[dict]:
    out, current = [], message_id
    while current is not None and current in by_id:
        out.append(by_id[current])
        current = by_id[current]["parent_id"]
    return [m for m in reversed(out) if m["role"] in (formats.USER, formats.ASSISTANT)]


def seen_context(context: list[dict], reply: dict) -> tuple[list[dict], bool]:
    """A reply's context as the model saw it: from the first message it saw when a session summary
    stood in for the earlier turns (the summary is in the recorded system prompt), else all of it;
    and whether it was cut."""
    seen = (reply.get("gen_params") or {}).get("context") or {}
    if not isinstance(seen, dict) or not seen.get("summary_used"):
        return context, False
    start = next((i for i, m in enumerate(context) if m["id"] == seen.get("first_message_id")), 0)
    return context[start:], start > 0


def memory_rows(snapshot: dict, include_demo: bool = False,
                scrub_messages: Callable | None = None) -> tuple[list[dict], list[dict], dict]:
    """(summary rows, stage-event rows, scrub counts) of the snapshot's kept conversations."""
    kept = {c["id"] for c in snapshot["conversations"] if include_demo or not c.get("is_demo")}
    by_conversation: dict[int, dict[int, dict]] = defaultdict(dict)
    for m in snapshot["messages"]:
        if m["conversation_id"] in kept:
            by_conversation[m["conversation_id"]][m["id"]] = m
    summaries = [{
        "conversation_id": s["conversation_id"], "summary_id": s["id"], "content": s["content"],
        "author_kind": s["author_kind"], "first_turn": s["first_turn"], "last_turn": s["last_turn"],
        "first_message_id": s["first_message_id"], "last_message_id": s["last_message_id"],
        "source_conversation_id": s["source_conversation_id"], "is_latest": s["is_latest"], "created_at": s["created_at"],
    } for s in snapshot.get("summaries", []) if s["conversation_id"] in kept]
    events = []
    for e in snapshot.get("stage_events", []):
        if e["conversation_id"] not in kept:
            continue
        messages = by_conversation[e["conversation_id"]]
        anchor = e["message_id"]
        if anchor is None:  # a manual change: the newest message written before it
            before = [m for m in messages.values() if m["created_at"] <= e["at"] and m["role"] != "system-notice"]
            anchor = max((m["id"] for m in before if m["is_active"]), default=None)
        context = _path(messages, anchor)[-CONTEXT_MESSAGES:]
        detail = e.get("detail") or {}
        events.append({
            "conversation_id": e["conversation_id"], "event_id": e["id"], "kind": e["kind"],
            "transition": e["kind"] in TRANSITION_KINDS, "from_stage": e["from_stage"], "to_stage": e["to_stage"],
            "by": "system" if e["actor"] == "system" else "clinician", "reasons": detail.get("reasons", []),
            "method": detail.get("method"), "client_turns_in_stage": detail.get("client_turns_in_stage"),
            "at": e["at"], "messages": [formats.message(m["role"], m["content"]) for m in context],
        })
    counts: dict = {}
    if scrub_messages is not None:
        summaries, events, counts = _scrub(summaries, events, scrub_messages)
    return summaries, events, counts


def _scrub(summaries: list[dict], events: list[dict], scrub_messages: Callable) -> tuple[list, list, dict]:
    """Personal data replaced in every text, one mapping per conversation (as for the samples)."""
    totals: dict = defaultdict(int)
    texts_by: dict[int, dict[str, str]] = defaultdict(dict)
    for s in summaries:
        texts_by[s["conversation_id"]].setdefault(s["content"], formats.USER)
    for e in events:
        for m in e["messages"]:
            texts_by[e["conversation_id"]].setdefault(m["content"], m["role"])
    mappings = {}
    for cid, texts in texts_by.items():
        originals = list(texts)
        scrubbed, counts = scrub_messages([formats.message(texts[t], t) for t in originals])
        for k, v in dict(counts).items():
            totals[k] += int(v)
        mappings[cid] = {o: s["content"] for o, s in zip(originals, scrubbed)}
    for s in summaries:
        s["content"] = mappings[s["conversation_id"]][s["content"]]
    for e in events:
        e["messages"] = [formats.message(m["role"], mappings[e["conversation_id"]][m["content"]]) for m in e["messages"]]
    return summaries, events, dict(totals)


def memory_counts(summaries: list[dict], events: list[dict]) -> dict:
    """The manifest's counts of the memory rows."""
    kinds: dict[str, int] = defaultdict(int)
    for e in events:
        kinds[e["kind"]] += 1
    return {"summaries": len(summaries), "summaries_by_author": _by(summaries, "author_kind"),
            "stage_events": dict(sorted(kinds.items())), "stage_transitions": sum(e["transition"] for e in events)}


def _by(rows: list[dict], key: str) -> dict:
    out: dict[str, int] = defaultdict(int)
    for row in rows:
        out[row[key]] += 1
    return dict(sorted(out.items()))
