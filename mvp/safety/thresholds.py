"""Thresholds of the crisis classifier, chosen on out-of-fold predictions of the training data only.

What it is for: `mvp.safety.classifier.train` computes, per category, the union figures of the
classifier's out-of-fold scores and the rule layer on the training examples (`curve`), then picks
the bar a classifier-only detection needs:
  - suicide / self-harm (`risk_threshold`): the highest threshold keeping union recall >= TARGET_RECALL,
    raised (never below MIN_RECALL) until at most MAX_WEAK_FLAGGED weak negatives are flagged, and to
    PRECISION_FLOOR only when that floor is reachable at MIN_RECALL;
  - the lower bar used when the same conversation already showed risk (`context_threshold`): the
    highest threshold keeping union recall >= CONTEXT_RECALL (a borderline message after a crisis turn
    is more likely a crisis: recall first), never above the plain bar;
  - the other categories (`f_beta_threshold`): the best union F-beta at p >= MIN_OTHER_THRESHOLD.
No held-out set is ever seen here. The constants live in mvp/safety/classifier.py (they are part of
the model's digest).
"""
from __future__ import annotations

import numpy as np

from mvp.safety.classifier import (
    CONTEXT_RECALL, F_BETA, MAX_WEAK_FLAGGED, MIN_OTHER_THRESHOLD, MIN_RECALL, MIN_THRESHOLD, PRECISION_FLOOR,
    TARGET_RECALL,
)

_GRID = np.round(np.arange(MIN_THRESHOLD, 0.98, 0.01), 2)


def curve(y: np.ndarray, p: np.ndarray, rules: np.ndarray, weak: np.ndarray) -> list[dict]:
    """Union figures at each threshold of _GRID: recall and precision on the labelled examples,
    the share of weak negatives the classifier flags (the rules flag none of them, by construction)."""
    lab = ~weak
    out = []
    for t in _GRID:
        pred = (p >= t) | rules
        tp = int(np.sum(pred & y & lab)); fp = int(np.sum(pred & ~y & lab)); fn = int(np.sum(~pred & y & lab))
        out.append({"t": float(t), "recall": tp / (tp + fn) if tp + fn else 1.0,
                    "precision": tp / (tp + fp) if tp + fp else 1.0,
                    "weak_flagged": float(np.mean(p[weak] >= t)) if weak.any() else 0.0})
    return out


def risk_threshold(points: list[dict]) -> float:
    """Suicide / self-harm: the highest threshold keeping union recall >= TARGET_RECALL (a miss is the
    worst failure); raised, never past the point where recall falls under MIN_RECALL, until the weak
    negatives flagged fall to MAX_WEAK_FLAGGED; raised further to reach PRECISION_FLOOR only when that
    floor can be reached at a recall >= MIN_RECALL (recall is never given up for nothing)."""
    keep = [c["t"] for c in points if c["recall"] >= TARGET_RECALL]
    t = max(keep) if keep else MIN_THRESHOLD
    cap = max([c["t"] for c in points if c["recall"] >= MIN_RECALL], default=t)
    at = {c["t"]: c for c in points}
    if at[t]["weak_flagged"] > MAX_WEAK_FLAGGED:
        t = min([c["t"] for c in points if c["t"] >= t and c["weak_flagged"] <= MAX_WEAK_FLAGGED] + [max(t, cap)])
    floor = [c["t"] for c in points if c["t"] >= t and c["precision"] >= PRECISION_FLOOR
             and c["weak_flagged"] <= MAX_WEAK_FLAGGED and c["recall"] >= MIN_RECALL]
    return round(min(floor) if floor else t, 2)


def f_beta_threshold(points: list[dict]) -> float:
    """Other categories: the best union F-beta among thresholds flagging <= MAX_WEAK_FLAGGED weak negatives."""
    best_t, best_f = 0.5, -1.0
    for c in points:
        if c["weak_flagged"] > MAX_WEAK_FLAGGED or c["recall"] == 0 or c["t"] < MIN_OTHER_THRESHOLD:
            continue
        prec, rec = c["precision"], c["recall"]
        f = (1 + F_BETA ** 2) * prec * rec / (F_BETA ** 2 * prec + rec)
        if f > best_f + 1e-9:
            best_t, best_f = c["t"], f
    return round(best_t, 2)


def at(points: list[dict], t: float) -> dict:
    c = min(points, key=lambda c: abs(c["t"] - t))
    return {k: round(v, 4) for k, v in c.items()}


def context_threshold(points: list[dict], plain: float) -> float:
    """Suicide / self-harm after a risk turn in the same conversation: the highest threshold keeping
    union recall >= CONTEXT_RECALL, never above the plain threshold."""
    keep = [c["t"] for c in points if c["recall"] >= CONTEXT_RECALL]
    return round(min(max(keep) if keep else MIN_THRESHOLD, plain), 2)
