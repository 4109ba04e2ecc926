"""The types of `train.samples`: what counts as good (SampleOptions), one sample before formatting
(Sample), what a build returns (BuildResult). Pure data, no I/O; used by train.samples, train.sample_steps,
train.export and train.export_files.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

AGGREGATES = ("mean", "majority")
MIN_SCORE, MAX_SCORE = 1, 5
SYSTEM_PROMPT_KEY = "system_prompt"  # in gen_params: the exact system prompt, preferred when present
PREAMBLE_CHARS_KEY = "preamble_chars"  # in safety: length of the crisis preamble before the model text
KINDS = ("dpo", "kto", "sft", "turn")
HASH_SCALE = 2**64

ScrubMessages = Callable[[list[dict]], tuple[list[dict], dict]]


class SampleError(ValueError):
    """Options that cannot work (bad threshold, unknown aggregate)."""


@dataclass(frozen=True)
class SampleOptions:
    """What counts as good, and which data is used."""

    kto_threshold: float = 4.0
    sft_threshold: float = 4.0
    score_margin: float = 2.0
    aggregate: str = "mean"
    include_demo: bool = False
    include_disabled: bool = False

    def __post_init__(self) -> None:
        for name in ("kto_threshold", "sft_threshold"):
            value = getattr(self, name)
            if not MIN_SCORE <= value <= MAX_SCORE:
                raise SampleError(f"{name} 必须在 {MIN_SCORE}-{MAX_SCORE} 之间，收到 {value}")
        if not 0 < self.score_margin <= MAX_SCORE - MIN_SCORE:
            raise SampleError(f"score_margin 必须在 (0, {MAX_SCORE - MIN_SCORE}] 之间，收到 {self.score_margin}")
        if self.aggregate not in AGGREGATES:
            raise SampleError(f"aggregate 必须是 {' / '.join(AGGREGATES)}，收到 {self.aggregate!r}")


@dataclass
class Sample:
    """One row before formatting. `prompt` holds the whole conversation for kind "sft"."""

    kind: str
    source: str
    conversation_id: int
    prompt: list[dict]
    chosen: str = ""
    rejected: str = ""
    completion: str = ""
    label: bool | None = None
    message_ids: tuple[int, ...] = ()
    model_version_ids: tuple[int, ...] = ()

    def key(self) -> tuple:
        """Identity for exact-duplicate removal (everything a trainer sees)."""
        body = tuple((m["role"], m["content"]) for m in self.prompt)
        return (self.kind, body, self.chosen, self.rejected, self.completion)

    def meta(self) -> dict:
        return {"source": self.source, "conversation_id": self.conversation_id,
                "message_ids": list(self.message_ids), "model_version_ids": list(self.model_version_ids)}


@dataclass
class BuildResult:
    samples: dict[str, list[Sample]]
    assessment: list[dict]
    drops: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    excluded: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    inputs: dict = field(default_factory=dict)


def aggregate_scores(values: list, how: str, weights: list | None = None) -> tuple[float | None, bool]:
    """(aggregate `overall` of several raters, whether a majority was tied): mean, or majority vote
    (None on a tie or with no values). `weights` (one per value, default 1) down-weight raters who
    agree little with the others (`train.export --rater-policy weight`)."""
    weights = [1.0] * len(values) if weights is None else weights
    if not values or sum(weights) <= 0:
        return None, False
    if how == "mean":
        return round(sum(v * w for v, w in zip(values, weights)) / sum(weights), 4), False
    votes: Counter = Counter()
    for value, weight in zip(values, weights):
        votes[value] += weight
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, True
    return float(ranked[0][0]), False


def distinct_rewrites(ratings: list[dict]) -> list[str]:
    """Distinct non-blank rewrites of a reply's ratings, oldest rating first."""
    out: list[str] = []
    for rating in sorted(ratings, key=lambda r: r["id"]):
        text = rating.get("rewrite")
        if text and text.strip() and text not in out:
            out.append(text)
    return out
