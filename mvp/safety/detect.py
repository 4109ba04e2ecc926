"""Crisis detection on client messages and screening of model replies.

What it is for: every client message goes through `detect(text)`; when it returns a crisis the app
puts `safety_message(...)` (calm words plus hotlines from config/crisis_resources.yaml) in front of
the reply and switches the model to `CRISIS_INSTRUCTION`. Every model reply goes through
`screen_reply(...)` before the client sees it. Rules live in config/safety_rules.yaml, written for
clinicians to extend; this module only applies them. Everything here works offline without a model.

How to run (clinicians try their rule changes this way):
    echo "我不想活了" | python -m mvp.safety check
    python -m mvp.safety check --rules config/safety_rules.yaml < messages.jsonl   # {"text": ...}
    python -m mvp.safety screen --crisis < replies.txt

Categories: suicide, self_harm, harm_others, abuse, medical (see `CATEGORIES`, `CATEGORY_NAMES`).

How the rule layer decides (`RuleSet.detect`):
  1. Normalise: traditional -> simplified for common characters, full-width letters and digits ->
     ASCII, ASCII punctuation -> Chinese punctuation, lower case, whitespace next to a Chinese
     character removed ("我 不 想 活 了" -> "我不想活了"). Evidence is cut from the original text.
  2. Mask every `idioms` match (累死了, 笑死我了, 剧本杀, 打我电话): nothing inside can match.
  3. Every category pattern match is kept unless
       - negated: a `negation.before` cue in the same clause within `negation_window` characters
         before it, an `immediate` negator right before it (不想死), or a `negation.after` cue in the
         same clause right after it (自杀这种念头我从来没有过); a rule may set `negation: false`;
       - in context: its sentence has a `context` cue (新闻, 小说, 教材, 来访者 ...) and no
         `override` cue (我也);
       - past and resolved: its sentence has a `resolution.past` cue before it and a
         `resolution.resolved` cue after it (以前有过想死的念头，但现在没有了).
  4. Any kept match raises its category and the categories in the rule's `also`.
  Decisions: a past attempt or past abuse NOT stated as over is flagged (a history of attempts is the
  strongest risk factor); one stated as over is not. "我不想活了" is risk (the 不 belongs to the
  pattern); "不想死" is not. A third person's risk told by the client (我朋友说想自杀) is flagged on
  purpose: the hotlines help the helper too and a reviewer should see it.

Model check (optional): `model_check(text, engine)` asks the same engine for a JSON classification;
`combine(rule_det, model_det)` is the union: the model can add categories, never remove one, so the
rule layer alone decides whether a crisis is at least flagged, offline and deterministically.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from mvp.paths import CONFIG_DIR
from mvp.safety.rules import (  # noqa: F401 - re-exported: callers import them from mvp.safety
    CATEGORIES,
    DEFAULT_NEGATION_WINDOW,
    DEFAULT_POST_NEGATION_WINDOW,
    MAX_WINDOW,
    SCREEN_KINDS,
    SafetyConfigError,
    SafetyError,
    _Checker,
    _read_yaml,
    _Rule,
    _Suppression,
    normalise,
    read_rules,
    required_chars,
)

CATEGORY_NAMES: dict[str, str] = {
    "suicide": "自杀风险",
    "self_harm": "自伤",
    "harm_others": "伤害他人",
    "abuse": "遭受暴力或虐待",
    "medical": "急性医疗紧急情况",
}

DEFAULT_RULES_PATH = CONFIG_DIR / "safety_rules.yaml"
DEFAULT_RESOURCES_PATH = CONFIG_DIR / "crisis_resources.yaml"

MAX_EVIDENCE = 20                 # evidence strings kept per detection
MAX_EVIDENCE_SPAN = 40            # characters of matched text kept per evidence string
MODEL_CHECK_MAX_NEW_TOKENS = 48
MODEL_ANSWER_MAX_CHARS = 400      # the part of a model answer that is parsed
MASK = "\x00"

CRISIS_INSTRUCTION = (
    "来访者刚才的话里出现了危机信号。请你这样回应：\n"
    "1. 保持冷静、温和、共情，先肯定对方愿意说出来，不评判、不说教，也不轻描淡写对方的痛苦。\n"
    "2. 直接而温和地询问对方此刻是否安全：是否有伤害自己或他人的具体计划，是否已经采取了行动。\n"
    "3. 鼓励对方马上联系心理援助热线、急救 120 或报警 110，并联系一位身边信任的人来陪伴，不要独自面对。\n"
    "4. 绝不提供任何关于自杀、自伤或伤害他人的方法、工具、剂量、地点等细节，也不认同这些想法是解决办法。\n"
    "5. 你是 AI 心理支持助手，不是真人医生或咨询师，不能替代专业帮助。\n"
    "回复简短、口语化，一次只问一个问题。"
)

MODEL_CHECK_PROMPT = (
    "你是心理咨询平台的安全分类器。阅读来访者的一条消息，判断其中是否包含以下风险，可以多选：\n"
    "suicide：自杀的想法、计划、准备或行为\n"
    "self_harm：伤害自己的行为或冲动（如割伤、烫伤、打自己）\n"
    "harm_others：想要伤害或杀害他人\n"
    "abuse：正在或曾经遭受暴力、性侵、虐待、威胁或禁锢\n"
    "medical：急性医疗紧急情况（如已经服下过量药物或毒物、大量出血、昏迷）\n"
    "成语和夸张（如“累死了”“笑死我了”）、明确的否定（如“我从没想过自杀”）、新闻书籍电影或专业学习中的讨论都不算风险。\n"
    '只输出一行 JSON，例如 {"categories": ["suicide"]}；没有风险时输出 {"categories": []}。'
)

_ALIASES: tuple[tuple[str, str], ...] = (
    ("self_harm", "self_harm"), ("self-harm", "self_harm"), ("harm_others", "harm_others"),
    ("suicide", "suicide"), ("abuse", "abuse"), ("medical", "medical"),
    ("自杀", "suicide"), ("轻生", "suicide"), ("自伤", "self_harm"), ("自残", "self_harm"),
    ("伤害他人", "harm_others"), ("伤人", "harm_others"), ("暴力", "abuse"), ("虐待", "abuse"),
    ("性侵", "abuse"), ("医疗", "medical"), ("急救", "medical"),
)
_NONE_ANSWER = re.compile(r"^\W*(无|没有|否|none|null|no|\[\])\W*$", re.IGNORECASE)
_ALIAS_NEGATION = re.compile(r"(无|(不|没有|非|未|否|not|no)\s?(属于|是|涉及|包含|存在|含有|有|符合)?)\W{0,2}$",
                             re.IGNORECASE)


@dataclass(frozen=True)
class Detection:
    """Result of a check: categories in `CATEGORIES` order and "category.rule:matched text" evidence."""

    categories: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()

    @property
    def is_crisis(self) -> bool:
        return bool(self.categories)

    def names(self) -> tuple[str, ...]:
        """Chinese display names of the categories."""
        return tuple(CATEGORY_NAMES[c] for c in self.categories)


@dataclass(frozen=True)
class ReplyScreen:
    """Screening of a model reply: `text` is the reply itself or, when blocked, a safe replacement."""

    blocked: bool
    reasons: tuple[str, ...]
    text: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resource:
    name: str
    phone: str


@dataclass(frozen=True)
class CrisisResources:
    """Hotlines and emergency numbers from config/crisis_resources.yaml."""

    hotlines: tuple[Resource, ...]
    emergency_medical: str
    emergency_police: str
    verified: str = ""

    def phone_numbers(self) -> tuple[str, ...]:
        """Every number shown to clients (the PII scrubber keeps these)."""
        return tuple(r.phone for r in self.hotlines) + (self.emergency_medical, self.emergency_police)

    def hotline_text(self) -> str:
        return "；".join(f"{r.name} {r.phone}" for r in self.hotlines)


# --- rule layer (rules file: mvp/safety/rules.py) ----------------------------------------------

_CLAUSE_BREAK = re.compile(r"[，。！？；：、\n.…~]|但是|但|可是|不过|然而|只是")
_SENTENCE_BREAK = re.compile(r"[。！？；\n…]")


class RuleSet:
    """Compiled rules from a safety_rules.yaml file; `detect` and `screen_reply` apply them."""

    def __init__(self, path: Path, rules: list[_Rule], idioms: re.Pattern | None, suppression: _Suppression,
                 screening: dict[str, tuple[re.Pattern, re.Pattern | None]], replacements: dict[str, str]) -> None:
        self.path = path
        self.rules = rules
        self.replacements = replacements
        self.prefilter = True    # skip rules that cannot match (see required_chars); tests turn it off
        self._idioms = idioms
        self._sup = suppression
        self._screening = screening

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RuleSet":
        """Read and validate a rules file (default config/safety_rules.yaml)."""
        path = Path(path) if path is not None else DEFAULT_RULES_PATH
        return cls(path, *read_rules(path))

    # -- detection --

    def _prepare(self, text: str) -> tuple[str, list[int] | None]:
        norm, index = normalise(text)
        if self._idioms is not None and self._idioms.search(norm):
            chars = list(norm)
            for m in self._idioms.finditer(norm):
                chars[m.start():m.end()] = MASK * (m.end() - m.start())
            norm = "".join(chars)
        return norm, index

    def _negated(self, text: str, start: int, end: int) -> bool:
        """A negation cue in the clause before the match, right after it, or a correction after it."""
        sup = self._sup
        if start and text[start - 1] in sup.immediate:
            return True
        lo = max(0, start - sup.window)
        for cut in _CLAUSE_BREAK.finditer(text, lo, start):
            lo = cut.end()
        if lo < start and sup.before.search(text, lo, start):      # pos/endpos: lookbehinds see context
            return True
        cut = _CLAUSE_BREAK.search(text, end, end + 2 * sup.post_window)
        clause_end = cut.start() if cut else len(text)
        if sup.after.search(text, end, min(clause_end, end + sup.post_window)):
            return True
        if cut is None:
            return False
        # a correction opening the next clause: "她说要打死我，其实从来没打过"
        next_start = cut.end() if cut.group() in "，、" else cut.start()
        return bool(sup.correction.match(text[next_start:next_start + 2 * sup.post_window]))

    def _suppressed_by_sentence(self, text: str, start: int, end: int) -> bool:
        """Context cue in the sentence (without a first-person override), or past and resolved."""
        sup = self._sup
        s = start
        while s > 0 and not _SENTENCE_BREAK.match(text, s - 1):
            s -= 1
        m = _SENTENCE_BREAK.search(text, end)
        e = m.start() if m else len(text)
        if sup.context.search(text, s, e) and not (sup.override and sup.override.search(text, s, e)):
            return True
        return bool(sup.past.search(text, s, end)) and bool(sup.resolved.search(text, end, e))

    def _matches(self, norm: str, rules: Iterable[_Rule]) -> Iterator[tuple[_Rule, re.Match]]:
        chars = set(norm) if self.prefilter else None
        for rule in rules:
            for regex, trigger in rule.parts:
                if chars is not None and trigger is not None and chars.isdisjoint(trigger):
                    continue
                for m in regex.finditer(norm):
                    if m.end() == m.start():
                        continue
                    if rule.negatable and self._negated(norm, m.start(), m.end()):
                        continue
                    if self._suppressed_by_sentence(norm, m.start(), m.end()):
                        continue
                    yield rule, m

    def detect(self, text: str) -> Detection:
        """Rule-layer detection for one client message."""
        if not isinstance(text, str):
            raise TypeError(f"detect() needs a str, got {type(text).__name__}")
        norm, index = self._prepare(text)
        found: set[str] = set()
        hits: list[tuple[int, int, _Rule]] = []
        for rule, m in self._matches(norm, self.rules):
            found.update((rule.category, *rule.also))
            hits.append((m.start(), -m.end(), rule))
        evidence: list[str] = []
        kept: list[tuple[int, int, _Rule]] = []
        for start, neg_end, rule in sorted(hits, key=lambda h: (h[0], h[1])):
            if any(r is rule and s <= start and -neg_end <= e for s, e, r in kept):
                continue                   # inside a longer match of the same rule
            kept.append((start, -neg_end, rule))
            evidence.append(f"{rule.category}.{rule.id}:{_original_span(text, index, start, -neg_end)}")
        return Detection(tuple(c for c in CATEGORIES if c in found), tuple(dict.fromkeys(evidence))[:MAX_EVIDENCE])

    # -- reply screening --

    def screen_reply(self, text: str, user_detection: Detection | None = None,
                     resources: CrisisResources | None = None) -> ReplyScreen:
        """Block a model reply that gives method details, encourages harm, dismisses risk or claims to be human."""
        crisis = bool(user_detection and user_detection.is_crisis)
        norm, index = normalise(text)
        reasons: list[str] = []
        evidence: list[str] = []
        for kind in SCREEN_KINDS:
            always, crisis_only = self._screening[kind]
            for regex in (always, crisis_only if crisis else None):
                if regex is None:
                    continue
                for m in regex.finditer(norm):
                    if m.end() == m.start() or self._negated(norm, m.start(), m.end()):
                        continue
                    if kind not in reasons:
                        reasons.append(kind)
                    evidence.append(f"{kind}:{_original_span(text, index, m.start(), m.end())}")
        if not reasons:
            return ReplyScreen(False, (), text)
        return ReplyScreen(True, tuple(reasons), self._replacement(reasons, crisis, resources),
                           tuple(dict.fromkeys(evidence))[:MAX_EVIDENCE])

    def _replacement(self, reasons: list[str], crisis: bool, resources: CrisisResources | None) -> str:
        parts = []
        if "human_claim" in reasons:
            parts.append(self.replacements["human_claim"])
        if crisis or "method_details" in reasons or "encouragement" in reasons:
            res = resources or _default_resources()
            parts.append(self.replacements["crisis"].format(
                emergency_medical=res.emergency_medical, emergency_police=res.emergency_police,
                hotlines=res.hotline_text()))
        elif "dismissive" in reasons or not parts:
            parts.append(self.replacements["default"])
        return "\n\n".join(parts)


def _original_span(text: str, index: list[int] | None, start: int, end: int) -> str:
    if index is not None:
        start, end = index[start], index[end - 1] + 1
    return text[start:end][:MAX_EVIDENCE_SPAN]


@functools.lru_cache(maxsize=1)
def default_ruleset() -> RuleSet:
    """The RuleSet from config/safety_rules.yaml, loaded once per process."""
    return RuleSet.load()


def detect(text: str) -> Detection:
    """Rule-layer detection with the default rules file."""
    return default_ruleset().detect(text)


def screen_reply(text: str, user_detection: Detection | None = None,
                 resources: CrisisResources | None = None) -> ReplyScreen:
    """Reply screening with the default rules file (see `RuleSet.screen_reply`)."""
    return default_ruleset().screen_reply(text, user_detection, resources)


# --- crisis resources and the safety message ------------------------------------------------------


def load_resources(path: str | Path | None = None) -> CrisisResources:
    """Read and validate crisis_resources.yaml (default config/crisis_resources.yaml)."""
    path = Path(path) if path is not None else DEFAULT_RESOURCES_PATH
    data = _read_yaml(path)
    ck = _Checker(path)
    ck.keys(data, "", ("version", "verified", "hotlines", "emergency"), required=("hotlines", "emergency"))
    if not isinstance(data["hotlines"], list) or not data["hotlines"]:
        raise ck.fail("hotlines", "must be a non-empty list of {name, phone}")
    hotlines = []
    for i, entry in enumerate(data["hotlines"]):
        ck.keys(entry, f"hotlines[{i}]", ("name", "phone", "note"), required=("name", "phone"))
        phone = ck.text(entry["phone"], f"hotlines[{i}].phone")
        if not re.fullmatch(r"[0-9][0-9 -]{1,18}[0-9]", phone):
            raise ck.fail(f"hotlines[{i}].phone", f"'{phone}' is not a phone number (digits, spaces, dashes)")
        hotlines.append(Resource(ck.text(entry["name"], f"hotlines[{i}].name"), phone))
    emergency = ck.keys(data["emergency"], "emergency", ("medical", "police"), required=("medical", "police"))
    return CrisisResources(tuple(hotlines), ck.text(emergency["medical"], "emergency.medical"),
                           ck.text(emergency["police"], "emergency.police"), str(data.get("verified") or ""))


@functools.lru_cache(maxsize=1)
def _default_resources() -> CrisisResources:
    return load_resources()


_CATEGORY_ADVICE = {
    "medical": "如果你已经服下了药物、受了伤，或者身体正处在危险中，请现在就拨打 {medical} 急救电话，"
               "或者请身边的人马上送你去最近的医院急诊。",
    "suicide": "如果你此刻有结束生命的想法或打算，请先让自己离开危险的地方，把药物、刀具等东西放远一些，"
               "待在有人的地方。",
    "self_harm": "如果你现在有伤害自己的冲动，请先把可能伤到自己的东西放远一些，给自己一点时间，"
                 "让这股冲动慢慢过去。",
    "harm_others": "如果你担心自己会控制不住伤害别人，请先离开让你冲动的场合，远离刀具等物品，"
                   "给自己一点冷静下来的时间。",
    "abuse": "如果你现在处在危险之中，请尽快去安全的地方，并拨打 {police} 报警。发生这样的事，不是你的错。",
}


def safety_message(detection: Detection, resources: CrisisResources | None = None) -> str:
    """A calm Chinese message with crisis resources, shown before the reply; "" when no crisis."""
    if not detection.is_crisis:
        return ""
    res = resources or _default_resources()
    lines = ["谢谢你愿意把这些告诉我，我能感受到你现在很不好受。你的安全对我来说是最重要的。"]
    for cat in CATEGORIES:
        if cat in detection.categories:
            lines.append(_CATEGORY_ADVICE[cat].format(medical=res.emergency_medical, police=res.emergency_police))
    lines.append("你不必一个人扛着，这些专业的求助渠道可以帮到你：")
    lines += [f"· {r.name}：{r.phone}" for r in res.hotlines]
    lines.append(f"· 情况紧急时：拨打 {res.emergency_medical}（急救）或 {res.emergency_police}（报警）")
    lines.append("也可以联系一位你信任的人，请他/她现在陪在你身边。我也会在这里继续陪你聊。")
    return "\n".join(lines)


# --- optional model-based check -----------------------------------------------------------------


def _default_model_params() -> Any:
    try:
        from mvp.model.engine import GenerationParams  # lazy: the engine is optional for this module
    except ImportError as exc:
        raise SafetyError("model_check needs mvp.model.engine.GenerationParams; pass params= explicitly "
                          f"or install the engine ({exc})") from None
    kwargs: dict[str, Any] = {"max_new_tokens": MODEL_CHECK_MAX_NEW_TOKENS}
    names = {f.name for f in dataclasses.fields(GenerationParams)} if dataclasses.is_dataclass(GenerationParams) else set()
    if "do_sample" in names:
        kwargs["do_sample"] = False
    if "seed" in names:
        kwargs["seed"] = 0
    if "temperature" in names and "do_sample" not in names:
        try:
            return GenerationParams(**kwargs, temperature=0.0)
        except (TypeError, ValueError):
            pass
    return GenerationParams(**kwargs)


def parse_model_answer(answer: str) -> tuple[str, ...]:
    """Categories named in a classifier answer: JSON first, then keywords that are not negated."""
    answer = answer[:MODEL_ANSWER_MAX_CHARS]
    found: list[str] = []
    m = re.search(r"\{[^{}]*\}", answer)
    if m:
        try:
            obj = json.loads(m.group())
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "categories" in obj:
            items = obj["categories"]
            items = [items] if isinstance(items, str) else items if isinstance(items, list) else []
            for item in items:
                item = str(item).strip().lower()
                found += [cat for alias, cat in _ALIASES if alias in item]
            return tuple(c for c in CATEGORIES if c in found)
    if _NONE_ANSWER.match(answer.strip()):
        return ()
    lowered = answer.lower()
    for alias, cat in _ALIASES:
        for hit in re.finditer(re.escape(alias), lowered):
            if not _ALIAS_NEGATION.search(lowered[max(0, hit.start() - 6):hit.start()]):
                found.append(cat)
    return tuple(c for c in CATEGORIES if c in found)


def model_check(text: str, engine: Any, params: Any = None) -> Detection:
    """Ask the engine (anything with `generate(messages, params)` returning `.text`) to classify `text`."""
    messages = [{"role": "system", "content": MODEL_CHECK_PROMPT}, {"role": "user", "content": text}]
    result = engine.generate(messages, params if params is not None else _default_model_params())
    answer = getattr(result, "text", result)
    answer = answer if isinstance(answer, str) else str(answer)
    categories = parse_model_answer(answer)
    snippet = " ".join(answer.split())[:MAX_EVIDENCE_SPAN]
    return Detection(categories, tuple(f"model.{c}:{snippet}" for c in categories))


def combine(rule_det: Detection, model_det: Detection | None) -> Detection:
    """Union: the model may add categories, never remove what the rules found."""
    if model_det is None:
        return rule_det
    cats = set(rule_det.categories) | set(model_det.categories)
    evidence = tuple(dict.fromkeys(rule_det.evidence + model_det.evidence))[:MAX_EVIDENCE]
    return Detection(tuple(c for c in CATEGORIES if c in cats), evidence)


# --- command line -------------------------------------------------------------------------------


def read_messages(stream: Iterable[str]) -> Iterator[str]:
    """Messages from lines: a JSON object with a string "text" field, else the line itself."""
    for line in stream:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                yield obj["text"]
                continue
        yield line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mvp.safety",
        description="Try the crisis rules: read messages from stdin (one per line, or JSONL with a "
                    "\"text\" field) and print one JSON object per message.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{check,screen}")
    check = sub.add_parser("check", help="detect crisis categories in client messages",
                           description="Print {\"text\", \"categories\", \"evidence\"} per message.")
    check.add_argument("--rules", type=Path, default=None,
                       help=f"rules file to use (default: {DEFAULT_RULES_PATH})")
    screen = sub.add_parser("screen", help="screen model replies (method details, encouragement, ...)",
                            description="Print {\"text\", \"blocked\", \"reasons\", \"evidence\", \"replacement\"} per reply.")
    screen.add_argument("--rules", type=Path, default=None,
                        help=f"rules file to use (default: {DEFAULT_RULES_PATH})")
    screen.add_argument("--crisis", action="store_true",
                        help="screen as if the client's message was a crisis (also applies crisis_patterns)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    try:
        rules = RuleSet.load(args.rules)
    except SafetyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    user = Detection(("suicide",), ()) if getattr(args, "crisis", False) else None
    for text in read_messages(stdin):
        if args.command == "check":
            det = rules.detect(text)
            row: dict[str, Any] = {"text": text, "categories": list(det.categories), "evidence": list(det.evidence)}
        else:
            res = rules.screen_reply(text, user)
            row = {"text": text, "blocked": res.blocked, "reasons": list(res.reasons),
                   "evidence": list(res.evidence), "replacement": res.text if res.blocked else None}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
