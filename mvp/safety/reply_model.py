"""The learned reply screen: a char n-gram classifier of unsafe model replies, next to the patterns.

What it is for: the reply_screening patterns in config/safety_rules.yaml catch the wordings someone
wrote down; on replies written later they caught only 0.62 of the unsafe ones (docs/benchmarks.md).
One model per kind (method details, encouragement, dismissal,
claiming to be human), trained on the written replies of tests/data/crisis_replies.jsonl (never its held-out
split), blocks what the patterns miss; `mvp.safety.screen` unions the two (either blocks).
Same file format, inference and build-on-first-use as mvp/safety/classifier.py:

    python -m mvp.safety train        # builds both models
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from mvp.paths import MODELS_DIR
from mvp.safety import classifier as clf

REPLY_MODEL_VERSION = 1
DEFAULT_REPLY_MODEL_PATH = Path(os.environ.get("MVP_SAFETY_REPLY_MODEL")
                                or MODELS_DIR / "safety" / "reply_classifier.json.gz")
MIN_KIND_EXAMPLES = 10
MIN_REPLY_THRESHOLD = 0.5         # few examples per kind: never block on a weaker score than even odds
CRISIS_ONLY_KINDS = ("dismissive",)
# Claims to be human turn on negation (我是 AI，不是真人医生 is the safe reply): left to the patterns.
LEARNED_KINDS = ("method_details", "encouragement", "dismissive")


def _rows() -> list[dict]:
    from mvp.safety.data import REPLIES, HELDOUT_SPLIT
    rows = [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("split") != HELDOUT_SPLIT]


def reply_digest(seed: int) -> str:
    from mvp.safety.data import REPLIES
    h = hashlib.sha256(f"reply v{REPLY_MODEL_VERSION} seed{seed} {clf.NGRAMS} {clf.C} {LEARNED_KINDS} {MIN_REPLY_THRESHOLD}".encode())
    for path in (REPLIES, Path(__file__), Path(clf.__file__), Path(clf.__file__).with_name("normalise.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def train(seed: int = 0) -> clf.Classifier:
    """One logistic regression per screening kind; each threshold = best F1 out of fold."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from mvp.safety.rules import SCREEN_KINDS

    rows = _rows()
    texts = [clf.prepare(r["text"]) for r in rows]
    kinds = tuple(k for k in SCREEN_KINDS if k in LEARNED_KINDS and sum(k in r["reasons"] for r in rows) >= MIN_KIND_EXAMPLES)
    vec = TfidfVectorizer(analyzer="char", ngram_range=clf.NGRAMS, min_df=1, sublinear_tf=True, lowercase=False,
                          dtype=np.float64)
    X = vec.fit_transform(texts)
    coefs, intercepts, thresholds = [], [], []
    for kind in kinds:
        y = np.array([kind in r["reasons"] for r in rows])
        model = LogisticRegression(C=clf.C, class_weight="balanced", solver="liblinear", random_state=seed,
                                   max_iter=1000)
        oof = np.zeros(len(y))
        for tr, te in StratifiedKFold(clf.FOLDS, shuffle=True, random_state=seed).split(X, y):
            oof[te] = model.fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
        best_t, best_f = 0.5, -1.0
        for t in np.arange(MIN_REPLY_THRESHOLD, 0.95, 0.02):
            p = oof >= t
            tp = float(np.sum(p & y))
            f = 2 * tp / (float(np.sum(p)) + float(np.sum(y))) if tp else 0.0
            if f > best_f + 1e-9:
                best_t, best_f = round(float(t), 2), f
        model.fit(X, y)
        coefs.append(model.coef_[0])
        intercepts.append(model.intercept_[0])
        thresholds.append(best_t)
    meta = {"version": REPLY_MODEL_VERSION, "seed": seed, "digest": reply_digest(seed), "examples": len(rows)}
    return clf.Classifier({k: int(v) for k, v in vec.vocabulary_.items()}, vec.idf_.copy(), np.array(coefs).T,
                          np.array(intercepts), kinds, np.array(thresholds), meta)


def is_current(path: Path = DEFAULT_REPLY_MODEL_PATH, seed: int = 0) -> bool:
    return clf.is_current(path, seed, digest=reply_digest(seed))


_LOCK = threading.Lock()
_DEFAULT: clf.Classifier | None = None


def default_reply_model() -> clf.Classifier:
    """The reply model, built first if missing or out of date (once per process)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _LOCK:
            if _DEFAULT is None:
                if not is_current(DEFAULT_REPLY_MODEL_PATH):
                    clf.save(train(), DEFAULT_REPLY_MODEL_PATH)
                _DEFAULT = clf.load(DEFAULT_REPLY_MODEL_PATH)
    return _DEFAULT


def unsafe_kinds(text: str, crisis: bool) -> dict[str, float]:
    """Screening kinds the model finds in a reply, with their probability. A learned `dismissive` counts
    only when the client's message was a crisis (like the crisis_patterns: 别想太多 is fine otherwise)."""
    model = default_reply_model()
    scores = model.scores(text)
    return {k: p for (k, p), t in zip(scores.items(), model.thresholds)
            if p >= t and (crisis or k not in CRISIS_ONLY_KINDS)}
