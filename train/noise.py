"""What is noise at this data size: interval half-widths and the warnings for too small eval splits.

An accuracy measured on n items has a 95 % interval of about +-1.96 * sqrt(p(1-p)/n): with 14
preference pairs and p near 0.5 that is +-0.26, so 0.36 and 0.86 are not distinguishable. Splits
below ``MIN_EVAL_CONVERSATIONS`` conversations or ``MIN_EVAL_ITEMS`` pairs/conversations are flagged
in the export manifest, by the pipeline and by `python -m train.evaluate`; the fixed set in
data/benchmark/ (train/benchmark.py) is what versions are compared on across rounds.
"""

from __future__ import annotations

import math

MIN_EVAL_CONVERSATIONS = 10
MIN_EVAL_ITEMS = 30


def halfwidth(n: int, p: float = 0.5, z: float = 1.96) -> float | None:
    """Normal-approximation 95 % half-width of a proportion p measured on n items (None for n = 0)."""
    return z * math.sqrt(p * (1 - p) / n) if n > 0 else None


def split_warnings(eval_conversations: int | None, eval_counts: dict[str, int]) -> list[str]:
    """Chinese warnings for an eval split too small to mean anything (empty list when it is not);
    ``eval_conversations`` None: not known, only the item counts are checked."""
    out = []
    if eval_conversations is not None and eval_conversations < MIN_EVAL_CONVERSATIONS:
        out.append(f"评估划分只有 {eval_conversations} 段对话（少于 {MIN_EVAL_CONVERSATIONS}）：在它上面算出的指标基本是噪声，"
                   "请以固定评估集（data/benchmark/）和发布检查为准")
    for kind, n in sorted(eval_counts.items()):
        if n < MIN_EVAL_ITEMS:
            hw = halfwidth(n)
            extra = f"，准确率的 95% 区间约为 ±{hw:.2f}" if hw is not None else "，无法评估"
            out.append(f"评估划分的 {kind} 只有 {n} 条（少于 {MIN_EVAL_ITEMS}）{extra}：差别小于此不说明任何问题")
    return out
