"""Training samples from a feedback-store snapshot: DPO pairs, KTO labels, SFT conversations, per-turn
SFT samples and assessment items. Pure Python over the dicts of `Store.export_snapshot()`: no SQL,
no files (`train.export` writes the formats). Every row left out is counted with its reason.
The types are in `train.sample_types`, the steps after building (scrub, deduplicate, split) in
`train.sample_steps`; both are re-exported here.

Rules (issue 4):
- Prompt of a reply = its system prompt + the dialogue along its parent links, exactly as the model
  saw it: `gen_params["system_prompt"]` when the app recorded it, else the instruction of the reply's
  stage from the stages file, with the crisis instruction in front when the reply carried a crisis
  preamble (as `mvp.app.service` builds it). Context messages keep their stored text. When a session
  summary stood in for dropped turns (in the recorded system prompt), the dialogue starts where the
  model's view started (`train.memory_export.seen_context`).
- A reply's own text = what the model wrote: the crisis preamble the app prepends is removed when its
  length is recorded, and a blocked reply contributes its original (unsafe) text, only ever as a
  negative example.
- Several raters: latest rating per (reply, rater), aggregated by mean or majority of `overall`;
  raters whose agreement is low can be left out or down-weighted (`rater_weights`, from train.rater_policy).
- DPO: comparisons (ties, "both bad" and conflicting votes give no pair), rewrites (rewrite over the
  reply), scores (alternatives of one turn whose aggregate gap >= margin).
- KTO: every rated reply, label = aggregate >= threshold, or the net thumb when no overall score.
- SFT, compact: the active path of a conversation up to its last approved reply (rewritten, or
  aggregate >= threshold), rewrites substituted, as long as every reply in it is approved and all
  share one system prompt (all assistant turns of a sample are trained on, so none may be unapproved).
  Approved replies past that point are counted, and are still in the per-turn samples.
- Per-turn (BianQue): every approved reply with its exact prompt.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from train import formats, memory_export
from train.sample_steps import deduplicate, scrub_samples, split_conversations  # noqa: F401 - re-exported
from train.sample_types import (AGGREGATES, KINDS, PREAMBLE_CHARS_KEY, SYSTEM_PROMPT_KEY,  # noqa: F401
                                BuildResult, Sample, SampleError, SampleOptions, ScrubMessages,
                                aggregate_scores, distinct_rewrites)


class Builder:
    """Indexes one snapshot and derives every kind of sample from it."""

    def __init__(self, snapshot: dict[str, list[dict]], stages, options: SampleOptions,
                 crisis_instruction: str | None = None, rater_weights: dict[str, float] | None = None):
        self.opt = options
        self.weights = rater_weights or {}  # rater -> weight (0: excluded); absent raters weigh 1
        self.stages = stages
        self.crisis_instruction = crisis_instruction
        self.result = BuildResult(samples={kind: [] for kind in KINDS}, assessment=[])
        self.drops, self.notes = self.result.drops, self.result.notes
        self._filter(snapshot)
        self.by_id = {m["id"]: m for m in self.messages}
        self._paths: dict[int, tuple[int, ...]] = {}
        self._prompts: dict[int, list[dict] | None] = {}
        self._prompt_reason: dict[int, str] = {}
        self._systems: dict[int, str | None] = {}
        self.ratings: dict[int, list[dict]] = defaultdict(list)
        for rating in self.rating_rows:
            self.ratings[rating["message_id"]].append(rating)
        self.thumbs: dict[int, list[int]] = defaultdict(list)
        for thumb in self.thumb_rows:
            self.thumbs[thumb["message_id"]].append(int(thumb["value"]) * self.weights.get(thumb.get("rater"), 1))
        self._scores: dict[int, float | None] = {}

    # -- input selection ---------------------------------------------------------------------
    def _keep(self, row: dict, what: str, rater: bool = True) -> bool:
        if row.get("is_demo") and not self.opt.include_demo:
            self.result.excluded[f"demo_{what}"] += 1
            return False
        if rater and row.get("rater_disabled") and not self.opt.include_disabled:
            self.result.excluded[f"disabled_rater_{what}"] += 1
            return False
        if rater and self.weights.get(row.get("rater"), 1) <= 0:  # agreement below --min-rater-alpha
            self.result.excluded[f"low_agreement_rater_{what}"] += 1
            return False
        return True

    def _filter(self, snapshot: dict[str, list[dict]]) -> None:
        self.conversations = [c for c in snapshot["conversations"] if self._keep(c, "conversations", False)]
        kept = {c["id"] for c in self.conversations}
        self.messages = [m for m in snapshot["messages"] if m["conversation_id"] in kept]
        self.result.excluded["demo_messages"] = len(snapshot["messages"]) - len(self.messages)
        self.rating_rows = [r for r in snapshot["ratings"] if r.get("is_latest", True)
                            and self._keep(r, "ratings")]
        self.thumb_rows = [t for t in snapshot["thumbs"] if t["value"] and self._keep(t, "thumbs")]
        self.comparison_rows = [k for k in snapshot["comparisons"] if self._keep(k, "comparisons")]
        self.item_rows = [i for i in snapshot.get("assessment_items", [])
                          if self._keep(i, "assessment_items", False)]
        self.result.excluded = Counter({k: v for k, v in self.result.excluded.items() if v})
        self.result.inputs = {
            "conversations": len(self.conversations), "messages": len(self.messages),
            "ratings": len(self.rating_rows), "thumbs": len(self.thumb_rows),
            "comparisons": len(self.comparison_rows), "assessment_items": len(self.item_rows),
        }

    def has_feedback(self) -> bool:
        """Ratings, thumbs or comparisons left after the exclusions (assessments alone are not)."""
        return bool(self.rating_rows or self.thumb_rows or self.comparison_rows)

    # -- prompts and reply texts ---------------------------------------------------------------
    def path(self, message_id: int) -> tuple[int, ...]:
        """Ids from the root to this message along parent links (memoised: linear overall)."""
        chain, current = [], message_id
        while current is not None and current not in self._paths:
            chain.append(current)
            current = self.by_id[current]["parent_id"]
        path = self._paths[current] if current is not None else ()
        for mid in reversed(chain):
            path = path + (mid,)
            self._paths[mid] = path
        return path

    def system_prompt(self, reply: dict) -> str | None:
        """The system prompt the reply was generated with (None: its stage is not in the file)."""
        if reply["id"] not in self._systems:
            self._systems[reply["id"]] = self._system_prompt(reply)
        return self._systems[reply["id"]]

    def _system_prompt(self, reply: dict) -> str | None:
        params = reply.get("gen_params")
        recorded = params.get(SYSTEM_PROMPT_KEY) if isinstance(params, dict) else None
        if isinstance(recorded, str):
            return recorded
        stage = self.stages.by_id.get(reply["stage_id"])
        if stage is None:
            return None
        if (reply.get("safety") or {}).get("preamble"):
            if self.crisis_instruction:
                return self.crisis_instruction + "\n\n" + stage.instruction
            self.notes["crisis_instruction_unavailable"] += 1
        return stage.instruction

    def prompt(self, reply: dict, kind: str) -> list[dict] | None:
        """System + dialogue before this reply; None (and counted under `kind`) when impossible."""
        mid = reply["id"]
        if mid not in self._prompts:
            system = self.system_prompt(reply)
            prompt = None
            if system is None:
                reason = f"unknown_stage:{reply['stage_id']}"
            else:
                context, seen = memory_export.seen_context([self.by_id[i] for i in self.path(mid)[:-1]], reply)
                self.notes["replies_with_session_summary"] += seen
                prompt = formats.with_system(system, [
                    formats.message(m["role"], m["content"]) for m in context
                    if m["role"] in (formats.USER, formats.ASSISTANT)
                ])
                problem = formats.role_problem(prompt + [formats.message(formats.ASSISTANT, "")])
                reason = f"role_order:{problem}" if problem else ""
                if (reply.get("metrics") or {}).get("dropped_turns") and len(context) == len(self.path(mid)) - 1:
                    # The engine fitted a long history by dropping old turns; the export keeps the
                    # whole history (training has its own max_length), and says how often.
                    self.notes["replies_generated_from_truncated_history"] += 1
                prompt = None if problem else prompt
            self._prompts[mid] = prompt
            self._prompt_reason[mid] = reason
        if self._prompts[mid] is None:
            self.drops[kind][self._prompt_reason[mid]] += 1
        return self._prompts[mid]

    def model_text(self, reply: dict) -> str | None:
        """What the model wrote (no crisis preamble; the original text of a blocked reply)."""
        safety = reply.get("safety") or {}
        if reply["status"] == "blocked":
            original = safety.get("original")
            return original if isinstance(original, str) and original.strip() else None
        text = reply["content"]
        if safety.get("preamble"):
            cut = safety.get(PREAMBLE_CHARS_KEY)
            if isinstance(cut, int) and 0 <= cut <= len(text):
                text = text[cut:]
            else:
                self.notes["crisis_preamble_kept_in_reply"] += 1
        return text if text.strip() else None

    # -- judgements ------------------------------------------------------------------------------
    def score(self, mid: int) -> float | None:
        """Aggregate `overall` over raters (None: no overall score, or no majority)."""
        if mid not in self._scores:
            rated = [r for r in self.ratings.get(mid, []) if r["overall"] is not None]
            value, tied = aggregate_scores([r["overall"] for r in rated], self.opt.aggregate,
                                           [self.weights.get(r.get("rater"), 1) for r in rated])
            if tied:
                self.notes["replies_without_majority_score"] += 1
            self._scores[mid] = value
        return self._scores[mid]

    def rewrites(self, mid: int) -> list[str]:
        """Distinct rewrites of a reply, oldest rating first."""
        return distinct_rewrites(self.ratings.get(mid, []))

    def approved_target(self, reply: dict) -> tuple[str, str] | None:
        """(text to train on, source) for an approved reply: latest rewrite, or a reply rated high."""
        rewrites = self.rewrites(reply["id"])
        if rewrites:
            return rewrites[-1], "rewrite"
        score = self.score(reply["id"])
        if score is None or score < self.opt.sft_threshold:
            return None
        if reply["status"] == "blocked":
            self.notes["blocked_reply_rated_high_not_trained"] += 1
            return None
        text = self.model_text(reply)
        return (text, "rating") if text is not None else None

    # -- DPO ---------------------------------------------------------------------------------
    def _pair(self, source: str, winner: dict, chosen: str | None, loser: dict, rejected: str | None,
              from_model: Sequence[dict]) -> None:
        if chosen is None or rejected is None:
            self.drops["dpo"][f"{source}:empty_or_unavailable_text"] += 1
            return
        if winner is not loser and self.system_prompt(winner) != self.system_prompt(loser):
            self.drops["dpo"][f"{source}:different_system_prompt"] += 1
            return
        prompt = self.prompt(loser, "dpo")
        if prompt is None:
            return
        self.result.samples["dpo"].append(Sample(
            "dpo", source, loser["conversation_id"], prompt, chosen=chosen, rejected=rejected,
            message_ids=tuple(dict.fromkeys((winner["id"], loser["id"]))),
            model_version_ids=_versions(from_model)))

    def comparison_pairs(self) -> None:
        latest: dict[tuple, dict] = {}
        for row in sorted(self.comparison_rows, key=lambda r: r["id"]):
            a, b = row["message_a"], row["message_b"]
            key = (min(a, b), max(a, b), row["rater"])
            if key in latest:
                self.notes["comparisons_superseded_by_same_rater"] += 1
            latest[key] = row
        votes: dict[tuple[int, int], Counter] = defaultdict(Counter)
        for (x, y, _), row in latest.items():
            choice = row["choice"]
            votes[(x, y)][row["message_a"] if choice == "a" else row["message_b"] if choice == "b" else choice] += 1
        for (x, y), counter in sorted(votes.items()):
            winners = [m for m in (x, y) if counter[m]]
            if len(winners) == 2:
                self.drops["dpo"]["comparison:conflicting_votes"] += 1
                continue
            if not winners:
                reason = "tie" if counter["tie"] >= counter["both_bad"] else "both_bad"
                self.drops["dpo"][f"comparison:{reason}"] += 1
                continue
            winner, loser = self.by_id[winners[0]], self.by_id[y if winners[0] == x else x]
            if winner["status"] == "blocked":
                self.drops["dpo"]["comparison:blocked_reply_chosen"] += 1
                continue
            self._pair("comparison", winner, self.model_text(winner), loser, self.model_text(loser),
                       (winner, loser))

    def rewrite_pairs(self) -> None:
        for mid in sorted(self.ratings):
            reply = self.by_id[mid]
            for rewrite in self.rewrites(mid):
                original = self.model_text(reply)
                if original is not None and rewrite.strip() == original.strip():
                    self.drops["dpo"]["rewrite:identical_to_reply"] += 1
                    continue
                self._pair("rewrite", reply, rewrite, reply, original, (reply,))

    def score_pairs(self) -> None:
        turns: dict[int, list[int]] = defaultdict(list)
        for mid in sorted(self.ratings):
            if self.score(mid) is not None:
                turns[self.by_id[mid]["parent_id"]].append(mid)
        for mids in turns.values():
            for i, x in enumerate(mids):
                for y in mids[i + 1:]:
                    sx, sy = self.score(x), self.score(y)
                    if abs(sx - sy) < self.opt.score_margin:
                        self.drops["dpo"]["score:gap_below_margin"] += 1
                        continue
                    winner, loser = (self.by_id[x], self.by_id[y]) if sx > sy else (self.by_id[y], self.by_id[x])
                    if winner["status"] == "blocked":
                        self.drops["dpo"]["score:blocked_reply_chosen"] += 1
                        continue
                    self._pair("score", winner, self.model_text(winner), loser, self.model_text(loser),
                               (winner, loser))

    # -- KTO ---------------------------------------------------------------------------------
    def kto_samples(self) -> None:
        for mid in sorted(set(self.ratings) | set(self.thumbs)):
            reply = self.by_id[mid]
            score, thumbs = self.score(mid), self.thumbs.get(mid, [])
            if score is not None:
                label, source = score >= self.opt.kto_threshold, "rating"
                if thumbs and (sum(thumbs) > 0) != label and sum(thumbs) != 0:
                    self.notes["thumb_disagrees_with_rating"] += 1
            elif thumbs:
                if sum(thumbs) == 0:
                    self.drops["kto"]["thumbs_cancel_out"] += 1
                    continue
                label, source = sum(thumbs) > 0, "thumb"
            else:
                has_overall = any(r["overall"] is not None for r in self.ratings.get(mid, []))
                self.drops["kto"]["no_majority_score" if has_overall else "rated_without_overall_score"] += 1
                continue
            if label and reply["status"] == "blocked":
                self.drops["kto"]["blocked_reply_labelled_good"] += 1
                continue
            text = self.model_text(reply)
            if text is None:
                self.drops["kto"]["empty_or_unavailable_text"] += 1
                continue
            prompt = self.prompt(reply, "kto")
            if prompt is not None:
                self.result.samples["kto"].append(Sample(
                    "kto", source, reply["conversation_id"], prompt, completion=text, label=bool(label),
                    message_ids=(mid,), model_version_ids=_versions([reply])))

    # -- SFT ---------------------------------------------------------------------------------
    def sft_samples(self) -> None:
        from mvp.store import active_path

        approved: dict[int, tuple[str, str]] = {}
        for mid in sorted(self.ratings):
            target = self.approved_target(self.by_id[mid])
            if target is not None:
                approved[mid] = target
        for mid, (text, source) in approved.items():
            prompt = self.prompt(self.by_id[mid], "turn")
            if prompt is not None:
                reply = self.by_id[mid]
                self.result.samples["turn"].append(Sample(
                    "turn", source, reply["conversation_id"], prompt, completion=text, message_ids=(mid,),
                    model_version_ids=_versions([reply] if source == "rating" else [])))
        by_conversation: dict[int, list[dict]] = defaultdict(list)
        for message in self.messages:
            by_conversation[message["conversation_id"]].append(message)
        on_paths: set[int] = set()
        for cid, messages in sorted(by_conversation.items()):
            path = active_path(messages)
            on_paths.update(m["id"] for m in path)
            self._sft_conversation(cid, path, approved)
        off_path = sum(1 for mid in approved if mid not in on_paths)
        if off_path:
            self.drops["sft"]["approved_reply_not_on_active_path"] += off_path

    def _sft_conversation(self, cid: int, path: list[dict], approved: dict[int, tuple[str, str]]) -> None:
        dialogue: list[dict] = []
        system, used, stop, ids = None, [], "", []
        for node in path:
            ids.append(node["id"])
            if node["role"] == formats.USER:
                dialogue.append(formats.message(formats.USER, node["content"]))
                continue
            if stop:
                if node["id"] in approved:
                    self.drops["sft"][stop] += 1
                continue
            node_system = self.system_prompt(node)
            if node["id"] not in approved:
                stop = "approved_reply_after_unapproved_one"
            elif node_system is None:
                stop = f"unknown_stage:{node['stage_id']}"
                self.drops["sft"][stop] += 1
            elif system is not None and node_system != system:
                stop = "approved_reply_after_system_prompt_change"
                self.drops["sft"][stop] += 1
            else:
                system = node_system
                dialogue.append(formats.message(formats.ASSISTANT, approved[node["id"]][0]))
                used.append(node)
        if not used:
            return
        seen, _ = memory_export.seen_context([{"id": i} for i in ids], used[0])  # after a session summary
        dialogue = [m for m, i in zip(dialogue, ids) if i >= seen[0]["id"]] if seen else dialogue
        messages = formats.trim_trailing_user(formats.with_system(system, dialogue))
        problem = formats.role_problem(messages)
        if problem:
            self.drops["sft"][f"role_order:{problem}"] += 1
            return
        from_model = [n for n in used if approved[n["id"]][1] == "rating"]
        source = "rewrite" if len(from_model) < len(used) else "rating"
        self.result.samples["sft"].append(Sample(
            "sft", source, cid, messages, message_ids=tuple(n["id"] for n in used),
            model_version_ids=_versions(from_model)))

    # -- assessment ----------------------------------------------------------------------------
    def assessment_rows(self) -> None:
        for item in self.item_rows:
            self.result.assessment.append({
                "conversation_id": item["conversation_id"], "assessment_id": item["assessment_id"],
                "instrument": item["instrument"], "item": item["item_no"], "question": item["question"],
                "answer": item["answer"], "model_score": item["score"], "method": item["method"],
                "needs_review": bool(item["needs_review"]), "clinician_score": item["clinician_score"],
                "assessment_status": item["assessment_status"],
            })

    def build(self) -> BuildResult:
        self.comparison_pairs()
        self.rewrite_pairs()
        self.score_pairs()
        self.kto_samples()
        self.sft_samples()
        self.assessment_rows()
        return self.result


def _versions(messages: Sequence[dict]) -> tuple[int, ...]:
    return tuple(sorted({m["model_version_id"] for m in messages if m.get("model_version_id") is not None}))


def build_samples(snapshot: dict[str, list[dict]], stages, options: SampleOptions,
                  crisis_instruction: str | None = None, rater_weights: dict[str, float] | None = None) -> Builder:
    """A Builder for the snapshot (call `.has_feedback()` and `.build()`); `rater_weights` from the
    agreement check of `train.export` (0 = leave the rater's judgements out)."""
    return Builder(snapshot, stages, options, crisis_instruction, rater_weights)


__all__ = ["AGGREGATES", "BuildResult", "Builder", "Sample", "SampleError", "SampleOptions",
           "build_samples", "deduplicate", "scrub_samples", "split_conversations"]
