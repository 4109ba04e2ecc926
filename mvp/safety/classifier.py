"""The learned crisis classifier: char n-gram TF-IDF + one logistic regression per category.

What it is for: the second detection layer. Rules catch the phrasings someone wrote down; this
catches the ones nobody did (这几天脑子里一直在想怎么去死). Trained by scikit-learn from data the
repository ships (mvp/safety/data.py: training_examples), in seconds on 2 CPU cores:

    python -m mvp.safety train                 # writes models/safety/classifier.json.gz
    python -m mvp.safety train --if-missing    # only when missing or out of date (make run / CI)

The model file is plain JSON (gzip, no pickle: loading runs no code): vocabulary, idf, weights,
intercepts and thresholds, plus a digest of the training data, the code version and the seed.
Same data + seed give byte-identical files; the digest also covers the rules file and this code. It is an ignored build artefact (models/ is in
.gitignore) and is rebuilt automatically on first use when missing or when its digest no longer
matches the shipped data, so a clean clone, CI and `make run` all work without a step.

Inference needs numpy only (scikit-learn is needed to train): the text is normalised like the
rules see it, cut into windows of whole sentences (a long message whose risk is one clause is not
diluted), and each category is raised when any window scores over its threshold. A window's TF-IDF
vector is divided by sqrt(squared norm + SHRINK) instead of its norm, so a window of a few characters
scores near the prior rather than on the strength of one n-gram (我睡不着, 不！我不要！).

Against alarm fatigue the training set holds, besides the labelled crisis messages, hand-written hard
negatives (tests/data/crisis_hard.jsonl: insomnia, pills as prescribed, 累死了, parents scolding ...)
and about 7,000 weak negatives: client turns of the bundled dialogues that the rules leave quiet and
that contain no risk word (data.weak_negatives; never from the held-out slice that measures the
false-alarm rate). Thresholds come from out-of-fold predictions on the training data only (never a
held-out set), for the union with the rule layer, on the examples the rules were not written from;
they are the bar for a classifier-only detection (a category the rules also found is raised anyway):
suicide and self-harm get the highest threshold that keeps union recall >= TARGET_RECALL (a miss is
the worst failure), raised (never below MIN_RECALL) until at most MAX_WEAK_FLAGGED of the weak
negatives are flagged, and up to PRECISION_FLOOR only when that floor is reachable at MIN_RECALL; the
other categories the best F1.5 at p >= MIN_OTHER_THRESHOLD.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvp.paths import MODELS_DIR
from mvp.safety.detect import MASK

CLASSIFIER_VERSION = 2
# MVP_SAFETY_MODEL moves the file (a read-only checkout, a shared models/ folder).
DEFAULT_MODEL_PATH = Path(os.environ.get("MVP_SAFETY_MODEL") or MODELS_DIR / "safety" / "classifier.json.gz")
NGRAMS = (1, 3)                  # n-gram lengths scanned at inference (and the reply model's)
MESSAGE_NGRAMS = (1, 3)          # n-gram lengths of the message model's vocabulary (within NGRAMS)
MIN_DF = 3
C = 16.0                         # the reply model's (mvp/safety/reply_model.py) regularisation
MESSAGE_C = 16.0                 # inverse regularisation strength of each message logistic regression
SHRINK = 300.0                   # added to a window's squared TF-IDF norm: a short window scores near the prior
WEAK_WEIGHT = 0.5                # sample weight of a weak negative (unlabelled client turn, data.weak_negatives)
MIN_POSITIVES = 20               # a category with fewer training examples gets no model
WINDOW_CHARS = 80                # long messages are scored in windows of whole sentences of about this size
FOLDS = 5
F_BETA = 1.5                     # other categories: thresholds weight recall 1.5 times as much as precision
TARGET_RECALL = 0.95             # data.RISK_CATEGORIES: union recall kept on out-of-fold predictions ...
MIN_RECALL = 0.92                # ... and never below this (weak-negative or precision floor)
PRECISION_FLOOR = 0.85           # union precision on the labelled tuning examples (out of fold)
CONTEXT_RECALL = 0.98            # risk bar after a risk turn in the same conversation (thresholds.py)
MAX_WEAK_FLAGGED = 0.005         # classifier-only flags on the weak negatives (out of fold), every category
PROJECT_SOURCE = "crisis_labelled/"
MIN_THRESHOLD = 0.2
# A message of a few characters carries too little evidence for a statistical guess (我累了, 算了吧,
# 我今天在家): the classifier alone raises it only when it is nearly sure; the rules still see it.
SHORT_MESSAGE_CHARS = 10
SHORT_MESSAGE_MIN_P = 0.8
MIN_OTHER_THRESHOLD = 0.5        # harm_others / abuse / medical alone from the classifier: at least even odds
WEIGHT_DIGITS = 5                # rounding of stored floats: small files, identical bytes across runs
IDIOM_MARK = "□"                 # what a masked idiom looks like to the classifier
_SENTENCE = re.compile(r"[^。！？!?；;\n…]*[。！？!?；;\n…]*")
_SPACES = re.compile(r"\s\s+")


def prepare(text: str) -> str:
    """The text as the classifier sees it: normalised like the rules see it, idioms (累死了) masked."""
    from mvp.safety.detect import default_ruleset
    return default_ruleset()._prepare(text)[0].replace(MASK, IDIOM_MARK)


def windows(text: str) -> list[str]:
    """The text itself when short, else windows of whole sentences of about WINDOW_CHARS (and the text)."""
    if len(text) <= WINDOW_CHARS:
        return [text]
    out, current = [], ""
    for m in _SENTENCE.finditer(text):
        piece = m.group()
        while len(piece) > WINDOW_CHARS:                       # one very long sentence: cut it
            out.append(current + piece[:WINDOW_CHARS - len(current)])
            piece, current = piece[WINDOW_CHARS - len(current):], ""
        if len(current) + len(piece) > WINDOW_CHARS and current:
            out.append(current)
            current = ""
        current += piece
    if current:
        out.append(current)
    return out


def training_digest(seed: int) -> str:
    from mvp.safety.data import TRAINING_FILES
    from mvp.safety.rules import DEFAULT_RULES_PATH
    h = hashlib.sha256(f"v{CLASSIFIER_VERSION} seed{seed} {MESSAGE_NGRAMS} {MIN_DF} {MESSAGE_C} {SHRINK} {WEAK_WEIGHT} {F_BETA} "
                       f"{TARGET_RECALL} {MIN_RECALL} {PRECISION_FLOOR} {CONTEXT_RECALL} {MAX_WEAK_FLAGGED} {MIN_OTHER_THRESHOLD} {WINDOW_CHARS}".encode())
    here = Path(__file__).resolve().parent
    code = (here / "classifier.py", here / "thresholds.py", here / "data.py", here / "normalise.py")
    for path in (*TRAINING_FILES, DEFAULT_RULES_PATH, *code):   # thresholds depend on the rules (union)
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_BASE = 1 << 21                  # code points fit in 21 bits: an n-gram (n <= 3) is one int64 key


def _key(gram: str) -> int:
    """Code points + 1 in base 2**21: n-grams of different lengths never share a key (< 2**63)."""
    key = 0
    for ch in gram:
        key = key * _BASE + ord(ch) + 1
    return key


@dataclass
class Classifier:
    """A loaded model: `scores(text)` per category, `detect(text)` as a Detection."""

    vocab: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray                 # (features, categories)
    intercept: np.ndarray
    categories: tuple[str, ...]
    thresholds: np.ndarray
    meta: dict
    shrink: float = 0.0              # see SHRINK (0: plain L2 normalisation, as scikit-learn's TfidfVectorizer)
    context_thresholds: np.ndarray | None = None    # bars after a risk turn in the conversation (None: thresholds)

    def bars(self, context_risk: bool = False) -> np.ndarray:
        """The bar per category: plain, or (context_risk) the lower one used after a risk turn."""
        if context_risk and self.context_thresholds is not None:
            return np.minimum(self.thresholds, self.context_thresholds)
        return self.thresholds

    def __post_init__(self) -> None:
        keys = np.array([_key(g) for g in self.vocab], dtype=np.int64)
        ids = np.fromiter(self.vocab.values(), dtype=np.int64, count=len(self.vocab))
        order = np.argsort(keys)
        self._keys, self._ids = keys[order], ids[order]
        self.coef = np.ascontiguousarray(self.coef)    # rows gathered per n-gram found
        unigrams = {g: i for g, i in self.vocab.items() if len(g) == 1}
        self._uni = np.full(max(map(ord, unigrams), default=0) + 2, -1, dtype=np.int64)   # last slot: none
        self._uni[[ord(g) for g in unigrams]] = list(unigrams.values())
        # min_df vocabularies are closed under sub-n-grams (a document with abc has ab and bc): then an
        # n-gram is looked up only where both of its (n-1)-grams were found
        self._closed = all(g[:-1] in self.vocab and g[1:] in self.vocab for g in self.vocab if len(g) > 1)

    def _window_scores(self, parts: list[str]) -> np.ndarray:
        """Probabilities (windows x categories), all windows at once (vectorised n-gram lookup)."""
        text = "".join(parts)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        win = np.repeat(np.arange(len(parts)), [len(p) for p in parts])     # window of each character
        rows, cols = [], []
        lo, hi = NGRAMS
        found = None                                         # where the (n-1)-grams were found
        for n in range(1, hi + 1):
            if len(codes) < n:
                break
            m = len(codes) - n + 1
            if n == 1:
                ids = self._uni[np.minimum(codes, len(self._uni) - 1)]
                hit = ids >= 0
                at, got = np.flatnonzero(hit), ids[hit]
            else:
                same = win[:m] == win[n - 1:n - 1 + m]       # n-grams never cross a window boundary
                at = np.flatnonzero(same & found[:m] & found[1:m + 1] if self._closed else same)
                key = np.zeros(len(at), dtype=np.int64)
                for k in range(n):
                    key = key * _BASE + codes[at + k] + 1
                pos = np.searchsorted(self._keys, key)
                pos[pos >= len(self._keys)] = 0
                ok = self._keys[pos] == key
                at, got = at[ok], self._ids[pos[ok]]
                hit = np.zeros(m, dtype=bool)
                hit[at] = True
            found = hit
            if n >= lo:
                rows.append(win[at])
                cols.append(got)
        z = np.tile(self.intercept, (len(parts), 1))
        if rows and sum(len(r) for r in rows):
            r, c = np.concatenate(rows), np.concatenate(cols)
            pair, counts = np.unique(r * len(self.idf) + c, return_counts=True)
            r, c = pair // len(self.idf), pair % len(self.idf)
            w = (1.0 + np.log(counts)) * self.idf[c]
            norm = np.sqrt(np.bincount(r, weights=w * w, minlength=len(parts)) + self.shrink)
            w = w / norm[r]
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])    # r is sorted: one run per window
            z[r[starts]] += np.add.reduceat(self.coef[c] * w[:, None], starts, axis=0)
        return 1.0 / (1.0 + np.exp(-z))

    def probabilities(self, text: str) -> np.ndarray:
        """Per-category probability for one already prepared window (sklearn's TF-IDF + LR, reimplemented)."""
        return self._window_scores([_SPACES.sub(" ", text)])[0]

    def scores(self, text: str) -> dict[str, float]:
        """Highest probability over the message's windows, per category."""
        parts = [_SPACES.sub(" ", w) for w in windows(prepare(text))]
        return dict(zip(self.categories, self._window_scores(parts).max(axis=0).tolist()))

    def detect(self, text: str, context_risk: bool = False):
        """Categories whose best window reaches its bar. `context_risk`: an earlier client turn of the
        same conversation showed suicide / self-harm risk, so the lower context bars apply, and a short
        message (东西我都准备好了) needs the plain bar instead of SHORT_MESSAGE_MIN_P."""
        from mvp.safety.detect import Detection, ordered
        parts = [_SPACES.sub(" ", w) for w in windows(prepare(text))]
        probs = self._window_scores(parts)
        best = probs.argmax(axis=0)
        short = sum(len(p.replace(" ", "")) for p in parts) < SHORT_MESSAGE_CHARS
        top = probs[best, np.arange(len(self.categories))]
        alone = top >= (np.maximum(self.thresholds, SHORT_MESSAGE_MIN_P) if short else self.thresholds)
        bars = self.bars(context_risk)
        if short:
            # a short message carries little evidence: alone it needs SHORT_MESSAGE_MIN_P; after a risk
            # turn (the evidence it lacks) it needs the plain bar, not the lower context one
            lowered = context_risk & (bars < self.thresholds)
            bars = np.where(lowered, self.thresholds, np.maximum(self.thresholds, SHORT_MESSAGE_MIN_P))
        raised = (top >= bars) | alone
        cats = ordered({c for j, c in enumerate(self.categories) if raised[j]})
        col = {c: j for j, c in enumerate(self.categories)}
        note = lambda j: "" if alone[j] else " context"  # noqa: E731 - raised only because of the context
        return Detection(cats, tuple(f"classifier.{c}:{top[col[c]]:.2f}{note(col[c])} {parts[best[col[c]]][:24]}"
                                     for c in cats))

    def summary(self) -> str:
        return (f"{len(self.vocab)} n-grams, categories {', '.join(self.categories)}, thresholds "
                + ", ".join(f"{t:.2f}" for t in self.thresholds) + f", {self.meta.get('examples')} examples")


def _features(vec, texts: list[str], shrink: float):
    """TF-IDF rows (no norm) divided by sqrt(squared norm + shrink): the features of one window each."""
    import scipy.sparse as sp
    X = vec.transform(texts) if hasattr(vec, "vocabulary_") else vec.fit_transform(texts)
    sq = np.asarray(X.multiply(X).sum(axis=1)).ravel() + shrink
    scale = np.where(sq > 0, 1.0 / np.sqrt(np.where(sq > 0, sq, 1.0)), 0.0)
    return sp.diags(scale) @ X


def train(seed: int = 0, examples=None, shrink: float | None = None, report: dict | None = None) -> Classifier:
    """Fit the vectoriser and one logistic regression per category (deterministic for a seed).

    `report`, when given a dict, receives the out-of-fold figures behind each threshold."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from mvp.safety import thresholds as th
    from mvp.safety.data import RISK_CATEGORIES, WEAK_SOURCE, training_examples
    from mvp.safety.detect import _KNOWN, default_ruleset

    examples = training_examples() if examples is None else examples
    shrink = SHRINK if shrink is None else shrink
    texts = [prepare(e.text) for e in examples]
    categories = tuple(c for c in _KNOWN if sum(c in e.categories for e in examples) >= MIN_POSITIVES)
    vec = TfidfVectorizer(analyzer="char", ngram_range=MESSAGE_NGRAMS, min_df=MIN_DF, sublinear_tf=True,
                          lowercase=False, norm=None, dtype=np.float64)
    X = _features(vec, [_SPACES.sub(" ", t) for t in texts], shrink)
    found = [set(default_ruleset().detect(e.text).categories) for e in examples]
    weak = np.array([e.source.startswith(WEAK_SOURCE) for e in examples])
    weight = np.where(weak, WEAK_WEIGHT, 1.0)
    # thresholds are chosen where the rules were not written from the data (not the project's own set)
    tune = np.array([not e.source.startswith(PROJECT_SOURCE) for e in examples])
    if tune.sum() < 50:
        tune[:] = True
    coefs, intercepts, thresholds, context = [], [], [], []
    for cat in categories:
        y = np.array([cat in e.categories for e in examples])
        model = LogisticRegression(C=MESSAGE_C, class_weight="balanced", solver="liblinear", random_state=seed,
                                   max_iter=1000)
        oof = np.zeros(len(y))
        for tr, te in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(X, y):
            oof[te] = model.fit(X[tr], y[tr], sample_weight=weight[tr]).predict_proba(X[te])[:, 1]
        ruled = np.array([cat in f for f in found])
        points = th.curve(y[tune], oof[tune], ruled[tune], weak[tune])
        t = (th.risk_threshold if cat in RISK_CATEGORIES else th.f_beta_threshold)(points)
        thresholds.append(t)
        context.append(th.context_threshold(points, t) if cat in RISK_CATEGORIES else t)
        if report is not None:
            report[cat] = {"threshold": t, "context_threshold": context[-1], "oof_union": th.at(points, t),
                           "positives": int(y.sum()), "oof": oof, "y": y, "ruled": ruled}
        model.fit(X, y, sample_weight=weight)
        coefs.append(model.coef_[0])
        intercepts.append(model.intercept_[0])
    vocab = {k: int(v) for k, v in vec.vocabulary_.items()}
    meta = {"version": CLASSIFIER_VERSION, "seed": seed, "digest": training_digest(seed), "examples": len(examples),
            "weak_negatives": int(weak.sum())}
    return Classifier(vocab, vec.idf_.copy(), np.array(coefs).T, np.array(intercepts), categories,
                      np.array(thresholds), meta, float(shrink), np.array(context))


def save(model: Classifier, path: Path = DEFAULT_MODEL_PATH) -> None:
    """Write the model as gzip'd JSON, atomically, with identical bytes for identical models."""
    order = sorted(model.vocab, key=model.vocab.get)
    r = lambda a: [round(float(x), WEIGHT_DIGITS) for x in a]  # noqa: E731
    doc = {"_meta": model.meta, "shrink": model.shrink, "categories": list(model.categories), "thresholds": r(model.thresholds),
           "context_thresholds": r(model.bars(True)), "intercept": r(model.intercept), "ngrams": order, "idf": r(model.idf),
           "coef": [r(row) for row in model.coef.T]}
    raw = json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def load(path: Path = DEFAULT_MODEL_PATH) -> Classifier:
    with gzip.open(path, "rb") as f:
        doc = json.loads(f.read().decode("utf-8"))
    return Classifier({g: i for i, g in enumerate(doc["ngrams"])}, np.array(doc["idf"]),
                      np.array(doc["coef"]).T, np.array(doc["intercept"]), tuple(doc["categories"]),
                      np.array(doc["thresholds"]), doc["_meta"], float(doc.get("shrink", 0.0)),
                      np.array(doc["context_thresholds"]) if "context_thresholds" in doc else None)


def is_current(path: Path = DEFAULT_MODEL_PATH, seed: int = 0, digest: str | None = None) -> bool:
    """The file exists and was built from the shipped data by this code version."""
    if not path.exists():
        return False
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="ignore")
    except OSError:
        return False
    return f'"digest":"{digest or training_digest(seed)}"' in head


_LOCK = threading.Lock()
_DEFAULT: Classifier | None = None


def default_classifier() -> Classifier:
    """The model at DEFAULT_MODEL_PATH, built first if missing or out of date (once per process)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _LOCK:
            if _DEFAULT is None:
                if not is_current(DEFAULT_MODEL_PATH):
                    save(train(), DEFAULT_MODEL_PATH)
                _DEFAULT = load(DEFAULT_MODEL_PATH)
    return _DEFAULT
