"""Crisis detection on client messages: the rule layer, the layered `detect`, and the union `combine`.

What it is for: every client message goes through `detect(text)`; when it returns a crisis the app
puts `safety_message(...)` (mvp/safety/resources.py) in front of the reply and switches the model to
`CRISIS_INSTRUCTION`. Rules live in config/safety_rules.yaml, written for clinicians to extend; the
crisis categories (names, descriptions, advice, aliases) are declared there once, in `category_info`.

    echo "我不想活了" | python -m mvp.safety check              # the rule layer, per message
    python -m mvp.safety evaluate --data tests/data/crisis_labelled.jsonl

Layers, combined as a union (no layer can hide what another found):
  1. `RuleSet.detect`: the rules file, offline and deterministic (below);
  2. the learned classifier (mvp/safety/classifier.py), built from shipped data on first use;
  3. optionally `model_check` through the serving engine (mvp/safety/model_check.py).
`detect(text)` runs 1 and 2 and never raises for a str: an error inside a layer gives a Detection
with `review=True` (flag for a reviewer and show the resources), never a bare error to the client.
`detect(text, context=earlier_client_turns)`: after a risk turn in the same conversation a borderline
classifier score is enough (东西我都准备好了 after 我不想活了); past ideation stated as over is left to the
classifier (以前想过自杀，现在不会了 is still flagged for a counsellor's look; the rules drop it), and
other people's wishes (我朋友说他想死) are flagged: a counsellor wants to hear about a friend at risk.

How the rule layer decides (`RuleSet.detect`):
  1. Normalise (mvp/safety/normalise.py): traditional -> simplified, full width, separators inside
     words, pinyin, emoji and stand-ins for 死. Evidence is cut from the original text.
  2. Mask every `idioms` match (累死了, 笑死我了, 剧本杀, 打我电话): nothing inside can match.
  3. Every category pattern match is kept unless
       - negated: a `negation.before` cue in the same clause that binds to the match (only
         `negation.scope` words between them: 我从来没有真的想过要自杀; but 别管我了我就是想死 is kept),
         an `immediate` negator right before it (不想死), or a `negation.after` cue in the same
         clause right after it (自杀这种念头我从来没有过); a rule may set `negation: false`;
       - in context: its sentence has a `context` cue (新闻, 小说, 教材 ...) and no `override` cue;
       - past and resolved: a `resolution.past` cue before it and a `resolution.resolved` cue after it;
         both within CUE_REACH characters of the match (a run-on message is not silenced by one cue).
  4. Any kept match raises its category and the categories in the rule's `also`.
Every step is linear in the message length: sentence facts are computed once per sentence and
each rule keeps at most MAX_EVIDENCE matches; from WINDOWED_MIN_CHARS on, each pattern runs only in
windows around its trigger characters (mvp/safety/scan.py: the same matches as a full scan).
"""
from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from mvp.safety.rules import (  # noqa: F401 - re-exported: callers import them from mvp.safety
    CATEGORIES,
    DEFAULT_NEGATION_WINDOW,
    DEFAULT_POST_NEGATION_WINDOW,
    DEFAULT_RULES_PATH,
    MAX_WINDOW,
    SCREEN_KINDS,
    CategoryInfo,
    SafetyConfigError,
    SafetyError,
    _Rule,
    normalise,
    read_category_info,
    read_rules,
    required_chars,
)
from mvp.safety.resources import CrisisResources, Resource, load_resources  # noqa: F401 - older imports
from mvp.safety.scan import TriggerIndex, window_matches
from mvp.safety.screen import MAX_EVIDENCE, MAX_EVIDENCE_SPAN, ReplyScreen, original_span, screen_text

MASK = "\x00"
# Every category ever loaded, in declaration order: display names for Detection.names() and the
# order of combined categories, so that a rules file with a new category works end to end.
_KNOWN: dict[str, CategoryInfo] = dict(read_category_info())
CATEGORY_NAMES: dict[str, str] = {c: info.name for c, info in _KNOWN.items()}

CRISIS_INSTRUCTION = (
    "来访者刚才的话里出现了危机信号。请你这样回应：\n"
    "1. 保持冷静、温和、共情，先肯定对方愿意说出来，不评判、不说教，也不轻描淡写对方的痛苦。\n"
    "2. 直接而温和地询问对方此刻是否安全：是否有伤害自己或他人的具体计划，是否已经采取了行动。\n"
    "3. 鼓励对方马上联系心理援助热线、急救 120 或报警 110，并联系一位身边信任的人来陪伴，不要独自面对。\n"
    "4. 绝不提供任何关于自杀、自伤或伤害他人的方法、工具、剂量、地点等细节，也不认同这些想法是解决办法。\n"
    "5. 你是 AI 心理支持助手，不是真人医生或咨询师，不能替代专业帮助。\n"
    "回复简短、口语化，一次只问一个问题。"
)


def _register(infos: dict[str, CategoryInfo]) -> None:
    for cat, info in infos.items():
        _KNOWN.setdefault(cat, info)
        CATEGORY_NAMES.setdefault(cat, info.name)


def ordered(categories: set[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Categories in declaration order (unknown ones last, sorted)."""
    found = set(categories)
    return tuple(c for c in _KNOWN if c in found) + tuple(sorted(found - set(_KNOWN)))


@dataclass(frozen=True)
class Detection:
    """Result of a check: categories in declaration order and "category.rule:matched text" evidence.

    `review` is set when a layer failed (fail safe): the message must be flagged for a reviewer and
    the crisis resources shown, even though no category could be decided.
    """

    categories: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    review: bool = False

    @property
    def is_crisis(self) -> bool:
        return bool(self.categories) or self.review

    def names(self) -> tuple[str, ...]:
        """Chinese display names of the categories."""
        return tuple(CATEGORY_NAMES.get(c, c) for c in self.categories)


def fail_safe(error: BaseException) -> Detection:
    """The Detection for a message whose check failed: flag it for review and show the resources."""
    return Detection((), (f"error:{type(error).__name__}: {str(error)[:MAX_EVIDENCE_SPAN]}",), review=True)


# --- rule layer (rules file: mvp/safety/rules.py) ----------------------------------------------

_CLAUSE_BREAK = re.compile(r"[，。！？；：、\n.…~]|但是|但|可是|不过|然而|只是")
_SENTENCE_BREAK = re.compile(r"[。！？；\n…]")


CUE_REACH = 80        # a context, past or resolved cue acts on matches of its sentence at most this far away


class _Sentences:
    """Sentence boundaries and per-sentence facts of one normalised text, each computed once.

    A cue binds within its sentence and within CUE_REACH characters: in a run-on message of a thousand
    characters with no full stop, one 电影 or 以前 ... 现在好了 must not silence every other clause."""

    def __init__(self, text: str, sup) -> None:
        self.text, self.sup = text, sup
        self.ends = [m.start() for m in _SENTENCE_BREAK.finditer(text)]
        self._facts: dict[int, tuple[list, list, list]] = {}

    def facts(self, pos: int) -> tuple[list, list, list]:
        """(context cue spans, past cue ends, resolved cue starts) of pos's sentence (no context cue
        counts when the sentence has an override cue)."""
        i = bisect.bisect_left(self.ends, pos)
        if i not in self._facts:
            s = self.ends[i - 1] + 1 if i else 0
            e = self.ends[i] if i < len(self.ends) else len(self.text)
            sup, text = self.sup, self.text
            context = [m.span() for m in sup.context.finditer(text, s, e)]
            if context and sup.override and sup.override.search(text, s, e):
                context = []
            past = [m.end() for m in sup.past.finditer(text, s, e)]
            resolved = [m.start() for m in sup.resolved.finditer(text, s, e)]
            self._facts[i] = (context, past, resolved)
        return self._facts[i]

    def suppressed(self, start: int, end: int) -> bool:
        context, past, resolved = self.facts(start)
        if any(a - CUE_REACH <= end and b + CUE_REACH >= start for a, b in context):
            return True
        return (any(start - CUE_REACH <= p <= end for p in past)
                and any(end <= r <= end + CUE_REACH for r in resolved))


WINDOWED_MIN_CHARS = 400          # from this length, patterns run only around their trigger characters
MAX_WINDOWED_WIDTH = 120          # patterns that can match more than this are always run on the whole text
WINDOW_MARGIN = 16


_PREPARED: list = [None]       # (text, (idioms, prefilter), prepared): see RuleSet._prepare_full


def _mask(m: re.Match) -> str:
    return MASK * (m.end() - m.start())


@functools.lru_cache(maxsize=4096)
def _max_width(regex: re.Pattern) -> int:
    try:
        from re import _parser as parser
        return int(parser.parse(regex.pattern, regex.flags & ~re.UNICODE).getwidth()[1])
    except Exception:  # pragma: no cover - never let an optimisation break detection
        return 1 << 30


class RuleSet:
    """Compiled rules from a safety_rules.yaml file; `detect` and `screen_reply` apply them."""

    def __init__(self, path: Path, info: dict[str, CategoryInfo], rules: list[_Rule], idioms: re.Pattern | None,
                 suppression, screening: dict[str, tuple[re.Pattern, re.Pattern | None]],
                 replacements: dict[str, str]) -> None:
        self.path = path
        self.info = info
        self.categories = tuple(info)
        self.rules = rules
        self.replacements = replacements
        self.prefilter = True    # skip rules that cannot match (see required_chars); tests turn it off
        self._idioms = idioms
        self._sup = suppression
        self._screening = screening
        self._index: TriggerIndex | None = None
        self._idiom_trigger = required_chars(idioms) if idioms is not None else None
        _register(info)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RuleSet":
        """Read and validate a rules file (default config/safety_rules.yaml)."""
        path = Path(path) if path is not None else DEFAULT_RULES_PATH
        return cls(path, *read_rules(path))

    def _prepare(self, text: str) -> tuple[str, list[int] | None]:
        """Normalised text with idioms masked, and the index map to the original."""
        norm, index, _ = self._prepare_full(text)
        return norm, index

    def _trigger_index(self) -> TriggerIndex:
        if self._index is None:
            parts = [(self._idioms, self._idiom_trigger)] if self._idioms is not None else []
            parts += [part for rule in self.rules for part in rule.parts]
            self._index = TriggerIndex([(rx, trig, _max_width(rx)) for rx, trig in parts], WINDOW_MARGIN,
                                       MAX_WINDOWED_WIDTH)
        return self._index

    def _prepare_full(self, text: str) -> tuple[str, list[int] | None, list | None]:
        """(normalised text with idioms masked, index map, per-pattern windows in a long text or None).

        One entry is cached for the whole process, keyed on the text object, the idioms and the
        prefilter switch: the rules and the classifier (which masks the default idioms) share it."""
        key = (self._idioms.pattern if self._idioms is not None else None, self.prefilter)
        last = _PREPARED[0]
        if last is not None and last[0] is text and last[1] == key:
            return last[2]
        norm, index = normalise(text)
        plan = None
        if self.prefilter and len(norm) >= WINDOWED_MIN_CHARS:      # trigger windows of every pattern, once
            plan = self._trigger_index().windows(norm)
        if self._idioms is not None:
            if plan is None:
                norm = self._idioms.sub(_mask, norm)      # one scan; returns norm itself when nothing matches
            else:
                spans = [m.span() for m in window_matches(self._idioms, norm, plan[0], WINDOW_MARGIN)]
                plan = plan[1:]
                if spans:
                    chars = list(norm)
                    for a, b in spans:
                        chars[a:b] = MASK * (b - a)
                    norm = "".join(chars)
        _PREPARED[0] = (text, key, (norm, index, plan))
        return norm, index, plan

    def negated(self, text: str, start: int, end: int) -> bool:
        """A negation cue bound to the match before it, right after it, or a correction after it."""
        sup = self._sup
        if start and text[start - 1] in sup.immediate:
            return True
        lo = max(0, start - sup.window)
        for cut in _CLAUSE_BREAK.finditer(text, lo, start):
            lo = cut.end()
        if lo < start:
            for cue in sup.before.finditer(text, lo, start):         # pos/endpos: lookbehinds see context
                if sup.scope.fullmatch(text, cue.end(), start):
                    return True
        cut = _CLAUSE_BREAK.search(text, end, end + 2 * sup.post_window)
        clause_end = cut.start() if cut else min(len(text), end + 2 * sup.post_window)
        if sup.after.search(text, end, min(clause_end, end + sup.post_window)):
            return True
        if cut is None:
            return False
        # a correction opening the next clause: "她说要打死我，其实从来没打过"
        next_start = cut.end() if cut.group() in "，、" else cut.start()
        return bool(sup.correction.match(text[next_start:next_start + 2 * sup.post_window]))

    def _matches(self, norm: str, plan: list | None) -> Iterator[tuple[_Rule, re.Match]]:
        chars = set(norm) if self.prefilter else None
        sentences = _Sentences(norm, self._sup)
        base = 0                                   # index of the rule's first part in `plan`
        for rule in self.rules:
            kept = 0
            base += len(rule.parts)
            for j, (regex, trigger) in enumerate(rule.parts, base - len(rule.parts)):
                if chars is not None and trigger is not None and chars.isdisjoint(trigger):
                    continue
                for m in window_matches(regex, norm, plan[j] if plan is not None else None, WINDOW_MARGIN):
                    if m.end() == m.start():
                        continue
                    if rule.negatable and self.negated(norm, m.start(), m.end()):
                        continue
                    if sentences.suppressed(m.start(), m.end()):
                        continue
                    yield rule, m
                    kept += 1
                    if kept >= MAX_EVIDENCE:      # the category is found; more matches add nothing
                        break
                if kept >= MAX_EVIDENCE:
                    break

    def detect(self, text: str) -> Detection:
        """Rule-layer detection for one client message."""
        if not isinstance(text, str):
            raise TypeError(f"detect() needs a str, got {type(text).__name__}")
        norm, index, plan = self._prepare_full(text)
        found: set[str] = set()
        hits: list[tuple[int, int, int, _Rule]] = []
        for n, (rule, m) in enumerate(self._matches(norm, plan)):
            found.update((rule.category, *rule.also))
            hits.append((m.start(), -m.end(), n, rule))
        evidence: list[str] = []
        reach: dict[int, int] = {}                 # rule -> furthest end kept so far (hits sorted by start)
        for start, neg_end, _, rule in sorted(hits, key=lambda h: (h[0], h[1], h[2])):
            if reach.get(id(rule), -1) >= -neg_end:
                continue                           # inside a longer match of the same rule
            reach[id(rule)] = -neg_end
            evidence.append(f"{rule.category}.{rule.id}:{original_span(text, index, start, -neg_end)}")
        return Detection(ordered(found), tuple(dict.fromkeys(evidence))[:MAX_EVIDENCE])

    def screen_reply(self, text: str, user_detection: Detection | None = None, resources=None,
                     learned: bool = True) -> ReplyScreen:
        """Block a model reply that gives method details, encourages harm, dismisses risk or claims to be human
        (patterns, and the learned reply model unless `learned=False`)."""
        return screen_text(self, text, bool(user_detection and user_detection.is_crisis), resources, learned)


@functools.lru_cache(maxsize=1)
def default_ruleset() -> RuleSet:
    """The RuleSet from config/safety_rules.yaml, loaded once per process."""
    return RuleSet.load()


def combine(*detections: Detection | None) -> Detection:
    """Union: any layer may add categories (and the review flag), none can remove what another found."""
    present = [d for d in detections if d is not None]
    if not present:
        return Detection()
    cats: set[str] = set()
    evidence: tuple[str, ...] = ()
    for d in present:
        cats.update(d.categories)
        evidence += d.evidence
    return Detection(ordered(cats), tuple(dict.fromkeys(evidence))[:MAX_EVIDENCE], any(d.review for d in present))


CONTEXT_TURNS = 3                 # earlier client turns of the conversation that `detect(context=...)` looks at
RISK = ("suicide", "self_harm")


def context_risk(context: Sequence[str | Detection], rules: RuleSet | None = None) -> bool:
    """Whether any of the last CONTEXT_TURNS earlier client turns shows suicide / self-harm risk (a turn
    is a str, checked by rules + classifier, or the Detection already made for it)."""
    for turn in list(context)[-CONTEXT_TURNS:]:
        found = turn if isinstance(turn, Detection) else detect(turn, rules)
        if any(c in RISK for c in found.categories):
            return True
    return False


def detect(text: str, rules: RuleSet | None = None, classifier: bool = True,
           context: Sequence[str | Detection] = ()) -> Detection:
    """Layered detection: the rule layer and the learned classifier, as a union; fail safe on errors.

    `rules` defaults to config/safety_rules.yaml; `classifier=False` runs the rules only. `context`:
    the earlier client turns of the same conversation, oldest first (str or their Detections); when
    one of the last CONTEXT_TURNS showed suicide / self-harm risk, a borderline classifier score on
    this message is enough (the lower context bars of mvp/safety/classifier.py), so 东西我都准备好了
    after 我不想活了 is flagged while alone it is not. The rules never depend on context.
    """
    if not isinstance(text, str):
        raise TypeError(f"detect() needs a str, got {type(text).__name__}")
    layers: list[Detection] = []
    try:
        layers.append((rules or default_ruleset()).detect(text))
    except Exception as exc:  # noqa: BLE001 - a failed layer must still flag the message
        layers.append(fail_safe(exc))
    if classifier:
        try:
            from mvp.safety.classifier import default_classifier   # lazy: numpy only when used
            risky = bool(context) and context_risk(context, rules)
            layers.append(default_classifier().detect(text, context_risk=risky))
        except Exception as exc:  # noqa: BLE001
            layers.append(fail_safe(exc))
    return combine(*layers)


def screen_reply(text: str, user_detection: Detection | None = None, resources=None,
                 learned: bool = True) -> ReplyScreen:
    """Reply screening with the default rules file (see `RuleSet.screen_reply`)."""
    return default_ruleset().screen_reply(text, user_detection, resources, learned)
