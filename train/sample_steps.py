"""The steps after `train.samples` has built the samples: scrub personal data (one mapping per
conversation), remove duplicates and contradictions, split conversations into train/eval by a seeded
hash. Pure Python over BuildResult; called by `train.export`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence

from train import formats
from train.sample_types import HASH_SCALE, BuildResult, Sample, ScrubMessages

SUMMARY_MARK = "会谈摘要（"  # mvp.model.dialogue.SUMMARY_TEMPLATE: a system prompt with a session summary


def scrub_samples(result: BuildResult, scrub_messages: ScrubMessages) -> Counter:
    """Replace personal data the same way in every text of a conversation's samples; returns the
    counts per kind of data (each distinct text of a conversation counted once)."""
    by_conversation: dict[int, list[Sample]] = defaultdict(list)
    for samples in result.samples.values():
        for sample in samples:
            by_conversation[sample.conversation_id].append(sample)
    items_by_conversation: dict[int, list[dict]] = defaultdict(list)
    for item in result.assessment:
        items_by_conversation[item["conversation_id"]].append(item)
    totals: Counter = Counter()
    for cid in sorted(set(by_conversation) | set(items_by_conversation)):
        texts: dict[str, str] = {}
        for sample in by_conversation.get(cid, []):
            for m in sample.prompt:
                if m["role"] != formats.SYSTEM or SUMMARY_MARK in m["content"]:  # a summary quotes the client
                    texts.setdefault(m["content"], m["role"])
            for text in (sample.chosen, sample.rejected, sample.completion):
                if text:
                    texts.setdefault(text, formats.ASSISTANT)
        for item in items_by_conversation.get(cid, []):
            texts.setdefault(item["answer"], formats.USER)
        originals = list(texts)
        scrubbed, counts = scrub_messages([formats.message(texts[t], t) for t in originals])
        totals.update({k: int(v) for k, v in dict(counts).items() if v})
        mapping = {o: s["content"] for o, s in zip(originals, scrubbed)}
        for sample in by_conversation.get(cid, []):
            sample.prompt = [formats.message(m["role"], mapping.get(m["content"], m["content"])) for m in sample.prompt]
            sample.chosen, sample.rejected, sample.completion = (
                mapping.get(sample.chosen, sample.chosen), mapping.get(sample.rejected, sample.rejected),
                mapping.get(sample.completion, sample.completion))
        for item in items_by_conversation.get(cid, []):
            item["answer"] = mapping[item["answer"]]
    return totals


def deduplicate(result: BuildResult) -> None:
    """Remove exact duplicates; drop contradicting rows (a pair and its reverse, one reply with both
    KTO labels) and pairs whose two texts became identical. Everything counted per kind."""
    for kind, samples in result.samples.items():
        drops = result.drops[kind]
        kept: list[Sample] = []
        seen: dict[tuple, Sample] = {}
        labels: dict[tuple, set] = defaultdict(set)
        for sample in samples:
            if kind == "dpo" and sample.chosen.strip() == sample.rejected.strip():
                drops[f"{sample.source}:identical_chosen_rejected"] += 1
                continue
            key = sample.key()
            labels[key].add(sample.label)
            if key in seen:
                drops[f"{sample.source}:duplicate"] += 1
                continue
            seen[key] = sample
            kept.append(sample)
        if kind == "dpo":
            reverse = {(s.kind, k[1], s.rejected, s.chosen, "") for k, s in seen.items()}
            conflicted = [s for s in kept if s.key() in reverse]
            for sample in conflicted:
                drops[f"{sample.source}:contradicted_by_reverse_pair"] += 1
            kept = [s for s in kept if s.key() not in reverse]
        if kind == "kto":
            conflicted = [s for s in kept if len(labels[s.key()]) > 1]
            for sample in conflicted:
                drops[f"{sample.source}:same_reply_labelled_both_ways"] += 1
            kept = [s for s in kept if len(labels[s.key()]) == 1]
        result.samples[kind] = kept


def split_conversations(conversation_ids: Sequence[int], seed: int, eval_fraction: float,
                        min_eval: int = 0) -> set[int]:
    """Eval conversations: those whose seeded hash falls below the fraction (stable as data grows);
    at least one eval and one train conversation when there are two or more and the fraction is > 0,
    and at least ``min_eval`` (but never more than half of all) by the same hash order."""
    ids = sorted(set(conversation_ids))
    if eval_fraction <= 0 or len(ids) < 2:
        return set()

    def position(cid: int) -> float:
        digest = hashlib.sha256(f"{seed}:{cid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / HASH_SCALE

    ranked = sorted(ids, key=position)
    chosen = {cid for cid in ids if position(cid) < eval_fraction}
    chosen.update(ranked[:min(min_eval, len(ids) // 2)])
    if not chosen:
        chosen = {ranked[0]}
    if len(chosen) == len(ids):
        chosen.discard(ranked[-1])
    return chosen
