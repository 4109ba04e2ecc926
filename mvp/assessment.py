"""PHQ-9 / GAD-7 guided screening: instruments, answer scoring and the screening state machine.

In the assessment stage the counsellor asks the items of a screening instrument one at a time and
scores each free-text answer 0-3 (完全不会 / 好几天 / 一半以上的天数 / 几乎每天). This module is plain
Python, importable without a server or a model:

- `load_instruments()` reads and validates `config/instruments.yaml` -> {id: Instrument}.
- `score_rules()` maps explicit frequency words and day counts to a score (the table is below).
- `score_model()` asks a model, through `engine.generate`, to classify the answer.
- `score_answer()` combines both: the model classifies, the rules cross-check; disagreement, a
  missing score or low confidence marks the item `needs_review` for the clinician.
- `Screening` is the pure state machine of the guided flow; `to_dict()` / `from_dict()` keep it in a
  gr.State or the database.

Rule mapping (window = the last 14 days):

  0  完全不会, 从来没有, 没有, 一天都没有, 不会, 没怎么, 基本没有, and plain positive statements
     (挺好的, 正常, 没变化, ...)
  1  好几天, 偶尔, 有几天, 两三天, 有时候, 很少, 时不时, 隔三差五; 1-6 days
  2  一半以上, 超过一半, 大部分时间, 十来天, 七八天, 经常, 三天两头, 很多天; 7-11 days
  3  几乎每天, 天天, 每天, 一直, 总是, 老是, 一天到晚, 每时每刻; 12 or more days

Day counts accept Arabic and Chinese numerals (三四天 = 3.5, 十几天 = 12, 十来天 = 10), weeks
(一周 = 7, 一周多 = 8.4, 两周 / 整整两个星期 / 半个月 = 14) and rates (一周三四天 = 7, 每周两次 = 4).
A negated word moves one step towards the middle (不是每天 -> at most 2, 也不是没有 -> 1, 不到一半 -> 1)
and is used only when nothing else is said. Within a sentence the highest frequency wins (没有，偶尔吧
-> 1); across sentences the first one that gives a frequency wins, unless a later one is more specific
(经常……几乎每晚 -> 3). Clauses about the past (以前), concessions (虽然有时候) and coping (我一直在努力)
are ignored when the answer also speaks about now; 还好 / 挺好 after a frequency word cancel it
(大部分时候还好). Answers without a frequency (还行吧, 有点吧, off-topic) score None: the screening
asks the follow-up question. Measured accuracy: bench/bench_assessment.py.

Command line (rules only unless --model is given):

    echo "几乎每天都睡不好" | python -m mvp.assessment score --instrument phq9 --item 3
    python -m mvp.assessment score --instrument gad7 --item 1 < answers.jsonl
    python -m mvp.assessment score --instrument phq9 --item 2 --model demo < answers.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULT_INSTRUMENTS_PATH = CONFIG_DIR / "instruments.yaml"

MIN_SCORE = 0
MAX_SCORE = 3
WINDOW_DAYS = 14
# Day-count boundaries of the standard PHQ/GAD scale: 1-6 days -> 1, 7-11 -> 2, 12-14 -> 3.
MORE_THAN_HALF_DAYS = 7
NEARLY_EVERY_DAY_DAYS = 12
FEW_DAYS = 3.0  # "几天": a few days
TEENS_DAYS = 12.0  # "十几天" in a 14-day window can only mean 11-14 days
DAYS_PER_WEEK = 7
DAYS_PER_MONTH = 30
MORE_FACTOR = 1.2  # "一周多": a bit more than a week

# Confidence of the rule layer; below LOW_CONFIDENCE an item is vague (follow-up, review).
LOW_CONFIDENCE = 0.6
EXPLICIT_CONFIDENCE = 0.9
LOOSE_CONFIDENCE = 0.7  # words like 经常 / 很少 / 老是 whose mapping clinicians may dispute
POSITIVE_CONFIDENCE = 0.7
NEGATED_CONFIDENCE = 0.45
BOUNDARY_CONFIDENCE = 0.55  # a range straddling a band boundary, e.g. 六七天
WINDOW_ALL_CONFIDENCE = 0.6  # "这两周都……" without a frequency word
RECENT_WEEK_CONFIDENCE = 0.65  # "这一周天天……" = about 7 days
DONT_KNOW_CONFIDENCE = 0.2
NO_MATCH_CONFIDENCE = 0.1
HEDGE_PENALTY = 0.15
CONFLICT_PENALTY = 0.2
# Model scoring: we have no probabilities, so a parsed answer gets a fixed confidence.
MODEL_CONFIDENCE = 0.7
DISAGREEMENT_CONFIDENCE = 0.5
RULE_TRUST = 0.8  # on disagreement, rules at least this sure win over the model
MODEL_MAX_NEW_TOKENS = 8
NEGATION_LOOKBACK = 4
ADJACENT_GAP = 1

INSTRUMENT_KEYS = {"name", "timeframe", "intro", "closing", "options", "bands", "items"}
ITEM_KEYS = {"number", "text", "question", "follow_up"}
ITEM_OPTIONAL_KEYS = {"risk_item"}
BAND_KEYS = {"min", "max", "name"}
OPTION_KEYS = {"score", "label"}
STATE_VERSION = 1
METHODS = ("rules", "model", "model+rules", "none")
FOLLOW_UP_JOINER = " / "


class AssessmentError(ValueError):
    """A user or caller error: bad item number, bad score, malformed saved state."""


class InstrumentError(AssessmentError):
    """A malformed instruments file; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# Instruments


@dataclass(frozen=True)
class Item:
    no: int
    text: str
    question: str
    follow_up: str
    risk_item: bool = False


@dataclass(frozen=True)
class Band:
    min: int
    max: int
    name: str


@dataclass(frozen=True)
class Instrument:
    id: str
    name: str
    timeframe: str
    intro: str
    closing: str
    options: tuple[tuple[int, str], ...]
    bands: tuple[Band, ...]
    items: tuple[Item, ...]

    @property
    def max_total(self) -> int:
        return MAX_SCORE * len(self.items)

    def item(self, item_no: int) -> Item:
        """The item numbered `item_no` (1-based); AssessmentError when out of range."""
        if not isinstance(item_no, int) or not 1 <= item_no <= len(self.items):
            raise AssessmentError(f"{self.id} has items 1-{len(self.items)}, not {item_no!r}")
        return self.items[item_no - 1]

    def band(self, total: int) -> str:
        """Name of the severity band holding `total` (0..max_total)."""
        for band in self.bands:
            if band.min <= total <= band.max:
                return band.name
        raise AssessmentError(f"{self.id} total must be 0-{self.max_total}, not {total!r}")


def _fail(path: Path, key: str, problem: str) -> InstrumentError:
    return InstrumentError(f"{path}: {key}: {problem}")


def _check_keys(path: Path, key: str, data: Any, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise _fail(path, key, "expected a mapping")
    missing = required - data.keys()
    unknown = data.keys() - required - optional
    if missing:
        raise _fail(path, key, f"missing key(s) {sorted(missing)}")
    if unknown:
        raise _fail(path, key, f"unknown key(s) {sorted(unknown)}")
    return data


def _text(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, "expected non-empty text")
    return value.strip()


def _int(path: Path, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, key, f"expected an integer, got {value!r}")
    return value


def _parse_instrument(path: Path, inst_id: str, data: Any) -> Instrument:
    key = f"instruments.{inst_id}"
    data = _check_keys(path, key, data, INSTRUMENT_KEYS)
    for list_key in ("options", "bands", "items"):
        if not isinstance(data[list_key], list) or not data[list_key]:
            raise _fail(path, f"{key}.{list_key}", "expected a non-empty list")
    options = []
    for i, raw in enumerate(data["options"]):
        k = f"{key}.options[{i}]"
        raw = _check_keys(path, k, raw, OPTION_KEYS)
        options.append((_int(path, f"{k}.score", raw["score"]), _text(path, f"{k}.label", raw["label"])))
    if [score for score, _ in options] != list(range(MIN_SCORE, MAX_SCORE + 1)):
        raise _fail(path, f"{key}.options", f"scores must be {MIN_SCORE}-{MAX_SCORE} in order")
    items = []
    for i, raw in enumerate(data["items"]):
        k = f"{key}.items[{i}]"
        raw = _check_keys(path, k, raw, ITEM_KEYS, ITEM_OPTIONAL_KEYS)
        if _int(path, f"{k}.number", raw["number"]) != i + 1:
            raise _fail(path, f"{k}.number", f"items must be numbered 1, 2, ... in order; expected {i + 1}")
        risk = raw.get("risk_item", False)
        if not isinstance(risk, bool):
            raise _fail(path, f"{k}.risk_item", "expected true or false")
        items.append(Item(i + 1, _text(path, f"{k}.text", raw["text"]),
                          _text(path, f"{k}.question", raw["question"]),
                          _text(path, f"{k}.follow_up", raw["follow_up"]), risk))
    bands, expected_min = [], 0
    for i, raw in enumerate(data["bands"]):
        k = f"{key}.bands[{i}]"
        raw = _check_keys(path, k, raw, BAND_KEYS)
        lo, hi = _int(path, f"{k}.min", raw["min"]), _int(path, f"{k}.max", raw["max"])
        if lo != expected_min or hi < lo:
            raise _fail(path, k, f"bands must be contiguous from 0; expected min {expected_min} <= max")
        bands.append(Band(lo, hi, _text(path, f"{k}.name", raw["name"])))
        expected_min = hi + 1
    if expected_min - 1 != MAX_SCORE * len(items):
        raise _fail(path, f"{key}.bands", f"last band must end at {MAX_SCORE * len(items)} (3 x items)")
    return Instrument(inst_id, _text(path, f"{key}.name", data["name"]),
                      _text(path, f"{key}.timeframe", data["timeframe"]),
                      _text(path, f"{key}.intro", data["intro"]),
                      _text(path, f"{key}.closing", data["closing"]),
                      tuple(options), tuple(bands), tuple(items))


def load_instruments(path: str | Path | None = None) -> dict[str, Instrument]:
    """Load and validate the instruments file (default: config/instruments.yaml)."""
    path = Path(path) if path is not None else DEFAULT_INSTRUMENTS_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InstrumentError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise InstrumentError(f"{path}: not valid YAML: {exc}") from exc
    data = _check_keys(path, "(top level)", data, {"instruments"})
    if not isinstance(data["instruments"], dict) or not data["instruments"]:
        raise _fail(path, "instruments", "expected a non-empty mapping of instrument id -> instrument")
    return {str(i): _parse_instrument(path, str(i), d) for i, d in data["instruments"].items()}


# ---------------------------------------------------------------------------------------------
# Scores


@dataclass(frozen=True)
class ItemScore:
    """A score 0-3 or None, how it was obtained, how sure, and a short Chinese explanation."""

    score: int | None
    method: str
    confidence: float
    evidence: str
    needs_review: bool = False


# ---------------------------------------------------------------------------------------------
# Rule scorer. Phrases are tried longest first; the lists document the mapping.

ZERO_PHRASES = ("完全不会", "从来没有", "从来没", "从没有", "从没", "从来不会", "从来不", "从不",
                "一天都没有", "一次都没有", "一次也没有", "一点都不", "一点也不", "完全没有", "根本没有",
                "都没有", "基本没有", "基本上没有", "基本不会", "没有过", "并没有", "没有", "不会",
                "没怎么", "没想过", "没觉得", "不存在", "零天")
ONE_PHRASES = ("好几天", "偶尔", "有几天", "两三天", "有时候", "有时", "有些时候", "有那么几天",
               "少数几天", "个别几天", "时不时", "隔三差五", "没几天", "一阵一阵", "不常")
TWO_PHRASES = ("一半以上", "超过一半", "大部分时间", "大部分时候", "大部分日子", "大部分", "大多数时候",
               "大多数", "多数时候", "一大半", "大半", "过半", "一半多", "一半", "十来天", "七八天", "八九天",
               "很多天", "好多天", "挺多天", "三天两头")
THREE_PHRASES = ("几乎每天", "几乎天天", "差不多每天", "基本每天", "基本上每天", "基本天天", "基本上天天",
                 "每一天", "每天", "天天", "几乎每晚", "一直", "总是", "老是", "整天", "成天", "一天到晚", "每时每刻",
                 "时时刻刻", "无时无刻", "每晚", "夜夜", "没有一天不", "没有一天是", "从早到晚")
LOOSE_PHRASES = frozenset({"经常", "常常", "频繁", "常见", "很少", "不常", "老是", "大部分", "大多数", "不太会",
                           "不至于", "大半"})
# Loose words: scored, but with LOOSE_CONFIDENCE (clinicians may put 经常 at 2 or 3).
LOOSE_WORD_SCORES = {"经常": 2, "常常": 2, "频繁": 2, "常见": 2, "很少": 1, "不太会": 0, "不至于": 0}

# Statements of being fine: score 0 alone, and cancel a frequency word before them in the clause.
STRONG_POSITIVE = ("挺好", "很好", "不错", "正常", "没变化", "没什么变化", "有精神", "有干劲", "有兴趣",
                   "满意", "坐得住", "能放松", "容易放松", "能控制", "控制得住", "控制住", "心挺大",
                   "看得进去", "没什么问题", "没问题", "不差", "没什么好")
# "还好" / "还行" alone are vague, but "大部分时候还好" cancels 大部分时候.
WEAK_POSITIVE = ("还好", "还行", "还可以", "好多了", "好了")
DONT_KNOW = ("说不好", "说不上", "说不清", "不清楚", "不太清楚", "不知道", "不确定", "记不清", "没注意",
             "没数过", "不记得")
# Nouns that make "没有/没什么" part of the symptom (没有力气) rather than a denial.
SYMPTOM_NOUNS = ("力气", "兴趣", "精神", "精力", "胃口", "食欲", "希望", "活力", "意思", "动力", "劲")
HEDGES = ("可能", "好像", "也许", "或许", "估计", "说不定", "记不清", "记不太清", "应该是")
PAST_MARKERS = ("以前", "之前", "原来", "从前", "上个月", "去年", "前段时间", "前阵子")
# Clauses set aside when the answer says something else: the past, concessions (虽然有时候……) and
# coping (我一直在努力……) are not the frequency of the symptom asked about.
CONCESSIVE_STARTS = ("虽然", "即使", "即便", "尽管", "哪怕")
COPING_MARKERS = ("努力", "尽量", "尝试", "试着", "想办法", "提醒自己", "克制", "付诸", "实施", "计划")

_WINDOW_RE = re.compile(
    r"(?:这|过去的?|最近的?|近)(?:两|2)(?:周|个?星期|个?礼拜)"
    r"|(?:两|2|十四|14)(?:周|个?星期|个?礼拜|天)(?:里|内|中|当中|之内|以来)")
_RECENT_WEEK_RE = re.compile(r"(?:这|最近|近)一?(?:个)?(?:周|星期|礼拜)")
_TIME_REF_RE = re.compile(r"这两天|这几天|最近几天|最近两天|那几天|前一周|前一个星期|上周|上个星期|上个礼拜"
                          r"|一整天|一整晚|一整夜|整晚|整夜|一晚上")
EVENT_UNITS = ("次", "回")  # "醒来好几次" counts events, maybe in one night: not as specific as days
_CN_NUM = r"[零一二两三四五六七八九十几]{1,3}"
_NUM = (rf"\d+(?:\.\d+)?(?:\s*(?:-|~|到|至)\s*\d+)?|[零一二两三四五六七八九十]{{1,3}}(?:到|至)[零一二两三四五六七八九十]{{1,3}}"
        rf"|{_CN_NUM}")
_RATE_RE = re.compile(
    rf"(?P<per_n>每|{_NUM})个?(?P<per>周|星期|礼拜|月)"
    r"(?:里|中|内|的话|都|会|有|总有|大概|差不多|也就|就|只有|能有|有个|可能|出现|发生)*"
    rf"(?P<num>{_NUM})(?:个)?(?P<unit>天|次|回|晚上?)")
_COUNT_RE = re.compile(
    rf"(?P<half>大?半个月)|(?P<num>{_NUM})(?P<approx>来|多)?(?:个)?(?P<more>多)?"
    r"(?P<unit>星期|礼拜|周|月|天|日|晚上?|夜|次|回)")
_INTENSIFIERS = r"(?:太|怎么|是|很|特别|那么|算|多|都)*"
_NEGATED_BEFORE_RE = re.compile(
    rf"(?:不是|没有|并非|不算|并不|不到|不止|不只|谈不上|算不上|(?<!差)不|没){_INTENSIFIERS}$")
_ADJACENT_RE = re.compile(rf"^{_INTENSIFIERS}$")
_NEGATED_ZERO_BEFORE_RE = re.compile(r"(?:不是|并非|不能说)(?:完全)?$")
_ZERO_FOLLOWED_RE = re.compile(r"^(?:都|也)(?:没|不)")
_SENTENCE_SPLIT_RE = re.compile(r"(?:[。!！?？;；\n]|(?<!\d)\.(?!\d))+")
_CLAUSE_SPLIT_RE = re.compile(r"[,，、…~～\s]+|但是|不过|可是|然而|但|反而")
_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_MASK = "□"


# Phrases as specific as a day count; they beat looser words (经常, 有时候) said earlier in the answer.
SPECIFIC_PHRASES = frozenset({"几乎每天", "几乎天天", "几乎每晚", "差不多每天", "基本每天", "基本上每天", "基本天天",
                              "基本上天天", "每一天", "每天", "天天", "每晚", "一半以上", "超过一半", "一半多", "过半",
                              "好几天", "有几天", "两三天", "十来天", "七八天", "八九天", "完全不会", "从来没有",
                              "一天都没有", "一次都没有"})
_PHRASE_SCORES: dict[str, int] = {
    **{p: 0 for p in ZERO_PHRASES}, **{p: 1 for p in ONE_PHRASES}, **{p: 2 for p in TWO_PHRASES},
    **{p: 3 for p in THREE_PHRASES}, **LOOSE_WORD_SCORES}
_UNIT_DAYS = {"星期": DAYS_PER_WEEK, "礼拜": DAYS_PER_WEEK, "周": DAYS_PER_WEEK, "月": DAYS_PER_MONTH}
_WINDOW_NOT_ALL_RE = re.compile(r"没|不|还好|挺好|好多了")


@dataclass
class _Cand:
    """One frequency statement found in a clause."""

    score: int
    confidence: float
    evidence: str
    start: int
    end: int
    zero_word: bool = False  # a denial word (没有, 不会): may instead negate the next word
    negated: bool = False
    has_few: bool = False  # contains 几: interrogative next to 说不上
    specific: bool = False  # a day count or a phrase in SPECIFIC_PHRASES
    aside: bool = False  # in a clause about the past, a concession or coping


# Lookbehinds for phrases that also arise across a word boundary: 今天天气 is 今天 + 天气, not 天天.
PHRASE_GUARDS = {"天天": r"(?<![今昨明前后白当聊])"}


def _phrase_regex(phrases: Iterable[str]) -> re.Pattern:
    """Alternation of the phrases, longest first, with PHRASE_GUARDS applied."""
    return re.compile("|".join(PHRASE_GUARDS.get(p, "") + re.escape(p)
                               for p in sorted(set(phrases), key=len, reverse=True)))


_STRONG_RE = _phrase_regex(STRONG_POSITIVE)
_WEAK_RE = _phrase_regex(WEAK_POSITIVE)
_DONT_KNOW_RE = _phrase_regex(DONT_KNOW)


@lru_cache(maxsize=8)
def _phrase_table(extra: tuple[tuple[str, int], ...]) -> tuple[re.Pattern, dict[str, int]]:
    scores = {**_PHRASE_SCORES, **dict(extra)}
    return _phrase_regex(scores), scores


def _cn_number(token: str) -> float | None:
    """Chinese or Arabic numeral token -> value; ranges (三四, 3-4, 四到五, 十一二) give their middle."""
    token = token.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", token):
        return float(token)
    m = re.fullmatch(r"(.+?)\s*(?:-|~|到|至)\s*(.+)", token)
    if m:
        lo, hi = _cn_number(m.group(1)), _cn_number(m.group(2))
        return (lo + hi) / 2 if lo is not None and hi is not None else None
    if token == "几":
        return FEW_DAYS
    if token == "十几":
        return TEENS_DAYS
    if "十" in token:
        head, _, tail = token.partition("十")
        tens = 1 if head == "" else _CN_DIGITS.get(head)
        if tens is None or "十" in tail:
            return None
        if tail == "":
            return float(tens * 10)
        rest = _cn_number(tail)
        return tens * 10 + rest if rest is not None and rest < 10 else None
    if len(token) == 1:
        value = _CN_DIGITS.get(token)
        return float(value) if value is not None else None
    if len(token) == 2 and all(c in _CN_DIGITS for c in token):
        a, b = _CN_DIGITS[token[0]], _CN_DIGITS[token[1]]
        if 0 < b - a <= 2:
            return (a + b) / 2
    return None


def days_to_score(days: float) -> int:
    """Days in the two-week window -> 0-3 (0 -> 0, 1-6 -> 1, 7-11 -> 2, 12+ -> 3)."""
    if days <= 0:
        return 0
    if days < MORE_THAN_HALF_DAYS:
        return 1
    if days < NEARLY_EVERY_DAY_DAYS:
        return 2
    return 3


def _days_confidence(days: float, token: str) -> float:
    """Lower for a range that straddles a band boundary (六七天, 十一二天)."""
    ranged = bool(re.search(r"[-~到至]", token) or re.fullmatch(r"十?[一二两三四五六七八九]{2}", token))
    near_boundary = any(abs(days - (b - 0.5)) < 1 for b in (MORE_THAN_HALF_DAYS, NEARLY_EVERY_DAY_DAYS))
    return BOUNDARY_CONFIDENCE if ranged and near_boundary else EXPLICIT_CONFIDENCE


def _mask(text: str, start: int, end: int) -> str:
    """Blank out a span so later patterns do not match inside it (positions stay the same)."""
    return text[:start] + _MASK * (end - start) + text[end:]


def _mask_time_refs(clause: str, flags: dict) -> str:
    """Blank out phrases that name a period rather than count days (这两周, 这几天, 一整天)."""
    work = clause
    for m in _WINDOW_RE.finditer(clause):
        work = _mask(work, m.start(), m.end())
        rest = clause[m.end():]
        flags["window_all"] |= "都" in rest[:6] and not _WINDOW_NOT_ALL_RE.search(rest)
    for m in _RECENT_WEEK_RE.finditer(work):
        flags["recent_week"] = True
        work = _mask(work, m.start(), m.end())
    for m in _TIME_REF_RE.finditer(work):
        work = _mask(work, m.start(), m.end())
    return work


def _find_candidates(clause: str, work: str, extra: tuple[tuple[str, int], ...]) -> list[_Cand]:
    """Rates (一周三四天), then phrases, then day counts, each masking what it used."""
    cands: list[_Cand] = []
    for m in _RATE_RE.finditer(work):
        value = _cn_number(m.group("num"))
        periods = 1.0 if m.group("per_n") == "每" else _cn_number(m.group("per_n"))
        if value is None or not periods:
            continue
        per = periods * (DAYS_PER_MONTH if m.group("per") == "月" else DAYS_PER_WEEK)
        days = min(value * WINDOW_DAYS / per, WINDOW_DAYS)
        cands.append(_Cand(days_to_score(days), _days_confidence(days, m.group("num")), f"“{m.group()}”≈{days:g}天",
                           m.start(), m.end(), has_few="几" in m.group("num"), specific=True))
        work = _mask(work, m.start(), m.end())
    phrase_re, scores = _phrase_table(extra)
    for m in phrase_re.finditer(work):
        phrase, score = m.group(), scores[m.group()]
        if score == 0 and (clause[m.end():].startswith(SYMPTOM_NOUNS)
                           or (phrase.startswith("没有") and clause[max(0, m.start() - 1):m.start()] == "有")):
            continue  # 没有力气 describes the symptom; 有没有 is a question
        conf = LOOSE_CONFIDENCE if phrase in LOOSE_PHRASES else EXPLICIT_CONFIDENCE
        cands.append(_Cand(score, conf, f"“{phrase}”→{score}", m.start(), m.end(), zero_word=score == 0,
                           has_few="几" in phrase, specific=phrase in SPECIFIC_PHRASES))
        work = _mask(work, m.start(), m.end())
    for m in _COUNT_RE.finditer(work):
        token = m.group("half") or m.group("num")
        if m.group("half"):
            days = float(WINDOW_DAYS)
        else:
            value = _cn_number(token)
            if value is None:
                continue
            scale = _UNIT_DAYS.get(m.group("unit"), 1)
            more = m.group("approx") == "多" or bool(m.group("more"))
            days = value * scale * (MORE_FACTOR if more and scale > 1 else 1) + (1 if more and scale == 1 else 0)
        if _ZERO_FOLLOWED_RE.match(clause[m.end():]):
            days = 0.0  # 一天都没有
        cands.append(_Cand(days_to_score(days), _days_confidence(days, token), f"“{m.group()}”≈{days:g}天",
                           m.start(), m.end(), has_few="几" in token, specific=m.group("unit") not in EVENT_UNITS))
    return sorted(cands, key=lambda c: c.start)


def _apply_negation(clause: str, cands: list[_Cand]) -> list[_Cand]:
    """Mark 不是每天 / 也不是没有; a denial word right before a frequency word is its negator."""
    for cand in cands:
        before = clause[max(0, cand.start - NEGATION_LOOKBACK):cand.start]
        pattern = _NEGATED_ZERO_BEFORE_RE if cand.zero_word else _NEGATED_BEFORE_RE
        cand.negated = bool(pattern.search(before))
    absorbed = {id(zero) for zero, nxt in zip(cands, cands[1:])
                if zero.zero_word and not nxt.zero_word and _ADJACENT_RE.match(clause[zero.end:nxt.start])}
    for zero, nxt in zip(cands, cands[1:]):
        if id(zero) in absorbed:
            nxt.negated = True
    return [c for c in cands if id(c) not in absorbed]


def _apply_positive(clause: str, cands: list[_Cand]) -> list[_Cand]:
    """还好 / 挺好 cancel frequency words before them in the clause; strong ones also score 0."""
    for regex, strong in ((_STRONG_RE, True), (_WEAK_RE, False)):
        for m in regex.finditer(clause):
            if clause[max(0, m.start() - 1):m.start()] in ("不", "没"):
                continue
            cands = [c for c in cands if not (c.end <= m.start() and c.score > 0)]
            if strong:
                cands.append(_Cand(0, POSITIVE_CONFIDENCE, f"“{m.group()}”→0", m.start(), m.end()))
    return cands


def _clause_candidates(clause: str, extra: tuple[tuple[str, int], ...], flags: dict) -> list[_Cand]:
    """Frequency statements of one clause; updates `flags` (window_all, dont_know)."""
    clause_flags = {"window_all": False, "recent_week": False}
    work = _mask_time_refs(clause, clause_flags)
    flags["window_all"] |= clause_flags["window_all"]
    cands = _apply_positive(clause, _apply_negation(clause, _find_candidates(clause, work, extra)))
    dont_know = list(_DONT_KNOW_RE.finditer(clause))
    if dont_know:
        flags["dont_know"] = True  # 说不上有几天: the 几 is a question, not a count
        cands = [c for c in cands if not c.has_few
                 and not any(0 <= c.start - m.end() <= ADJACENT_GAP for m in dont_know)]
    aside = (any(p in clause for p in PAST_MARKERS) or clause.startswith(CONCESSIVE_STARTS)
             or any(p in clause for p in COPING_MARKERS))
    for cand in cands:
        cand.aside = aside
        if clause_flags["recent_week"] and cand.score == MAX_SCORE and not cand.negated:
            cand.score, cand.confidence = 2, RECENT_WEEK_CONFIDENCE  # 这一周天天: about 7 days
            cand.evidence += "（只说了最近一周≈7天）"
    return cands


def _negate(score: int) -> int:
    """A negated frequency word moves one step towards the middle of the scale."""
    return {0: 1, 1: 2, 2: 1, 3: 2}[score]


def _select(per_sentence: list[list[_Cand]]) -> list[_Cand]:
    """Which statements decide the score.

    People answer first and elaborate after: the first sentence that gives a frequency about the
    symptom now wins, unless it is loose (经常) and a later sentence is specific (几乎每晚). Clauses
    set aside (past, concession, coping) count only when nothing else does.
    """
    current = [[c for c in found if not c.aside] for found in per_sentence]
    cands = next((found for found in current if found), None)
    if cands is None:
        return [c for found in per_sentence for c in found]
    if not any(c.specific for c in cands):
        cands = next((found for found in current if any(c.specific and not c.negated for c in found)), cands)
    return cands


def score_rules(answer: str, instrument: Instrument | None = None, item: Item | None = None) -> ItemScore:
    """Score a free-text answer from explicit frequency words and day counts (see module docstring).

    `instrument` adds its option labels as phrases; `item` is accepted for symmetry with
    `score_model` and is not used by the rules today. Returns score None when the answer gives no
    frequency (vague or off-topic), with low confidence.
    """
    text = unicodedata.normalize("NFKC", answer or "").strip().lower()
    extra = tuple((label, score) for score, label in instrument.options) if instrument else ()
    flags = {"window_all": False, "dont_know": False}
    per_sentence = [[c for clause in _CLAUSE_SPLIT_RE.split(sentence) if clause
                     for c in _clause_candidates(clause, extra, flags)]
                    for sentence in _SENTENCE_SPLIT_RE.split(text)]
    cands = _select(per_sentence)
    plain = [c for c in cands if not c.negated]
    cap = MAX_SCORE
    if plain:
        if any(c.negated and c.score == MAX_SCORE for c in cands):
            cap = MAX_SCORE - 1  # 不是每天，…… : whatever else is said, not 3
        chosen = plain
    else:
        chosen = [replace(c, score=_negate(c.score), confidence=NEGATED_CONFIDENCE,
                          evidence=f"{c.evidence}，被否定→{_negate(c.score)}") for c in cands]
    if not chosen:
        if flags["window_all"]:
            return ItemScore(MAX_SCORE, "rules", WINDOW_ALL_CONFIDENCE, "“这两周都……”→3")
        if flags["dont_know"]:
            return ItemScore(None, "rules", DONT_KNOW_CONFIDENCE, "来访者说不清频率")
        return ItemScore(None, "rules", NO_MATCH_CONFIDENCE, "回答中没有找到频率表述")
    score = min(max(c.score for c in chosen), cap)
    confidence = max(c.confidence for c in chosen if min(c.score, cap) == score)
    if max(c.score for c in chosen) - min(c.score for c in chosen) >= 2:
        confidence -= CONFLICT_PENALTY
    if any(h in text for h in HEDGES):
        confidence -= HEDGE_PENALTY
    evidence = "；".join(c.evidence for c in chosen)
    return ItemScore(score, "rules", round(max(confidence, 0.0), 2), evidence)


# ---------------------------------------------------------------------------------------------
# Model scorer

MODEL_SYSTEM_PROMPT = "你是心理测评的评分助手。请根据来访者的回答，判断问卷条目所描述的情况在过去两周出现的频率。"
_OPTION_WORDS = (("几乎每天", 3), ("一半以上", 2), ("好几天", 1), ("完全不会", 0))
DEFAULT_OPTIONS: tuple[tuple[int, str], ...] = ((0, "完全不会"), (1, "好几天"), (2, "一半以上的天数"), (3, "几乎每天"))


def build_model_messages(answer: str, item: Item, instrument: Instrument | None = None) -> list[dict]:
    """The classification prompt as role/content messages."""
    options = instrument.options if instrument else DEFAULT_OPTIONS
    timeframe = instrument.timeframe if instrument else "过去两周"
    lines = [f"问卷条目：{item.text}", f"时间范围：{timeframe}", f"来访者的回答：{answer.strip()}", "选项："]
    lines += [f"{score} = {label}" for score, label in options]
    lines.append("只回答一个数字 0-3。")
    return [{"role": "system", "content": MODEL_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def parse_model_score(text: str) -> int | None:
    """First standalone digit 0-3 in the model's reply, else an option word, else None."""
    m = re.search(r"(?<!\d)[0-3](?!\d)", text or "")
    if m:
        return int(m.group())
    for word, score in _OPTION_WORDS:
        if word in (text or ""):
            return score
    return None


def score_model(answer: str, item: Item, engine: Any, instrument: Instrument | None = None) -> ItemScore | None:
    """Ask the model through `engine.generate(messages, params)`; None when the reply has no score."""
    from mvp.engine import GenerationParams  # lazy: keeps this module importable without torch

    params = GenerationParams(temperature=0.0, max_new_tokens=MODEL_MAX_NEW_TOKENS)
    reply = engine.generate(build_model_messages(answer, item, instrument), params)
    text = str(getattr(reply, "text", reply)).strip()
    score = parse_model_score(text)
    if score is None:
        return None
    return ItemScore(score, "model", MODEL_CONFIDENCE, f"模型输出“{text[:20]}”→{score}")


def score_answer(answer: str, instrument: Instrument, item_no: int, engine: Any = None) -> ItemScore:
    """Score one answer: the model (when an engine is given) cross-checked by the rules.

    needs_review is set when the two disagree, when either gives no score, or when confidence is
    below LOW_CONFIDENCE. A failing engine falls back to the rules (and is marked for review).
    """
    item = instrument.item(item_no)
    rules = score_rules(answer, instrument, item)
    if engine is None:
        return replace(rules, needs_review=rules.score is None or rules.confidence < LOW_CONFIDENCE)
    try:
        model = score_model(answer, item, engine, instrument)
    except Exception as exc:  # noqa: BLE001 - any backend failure must leave a usable rule score
        model, rules = None, replace(rules, evidence=f"{rules.evidence}；模型评分失败：{type(exc).__name__}")
    if model is None and rules.score is None:
        return ItemScore(None, "none", 0.0, f"{rules.evidence}；模型无法判断", needs_review=True)
    if model is None:
        return replace(rules, evidence=f"{rules.evidence}；模型无法判断", needs_review=True)
    if rules.score is None:
        return replace(model, confidence=DISAGREEMENT_CONFIDENCE, needs_review=True)
    evidence = f"{model.evidence}；规则：{rules.evidence}"
    if model.score == rules.score:
        confidence = max(model.confidence, rules.confidence)
        return ItemScore(rules.score, "model+rules", confidence, evidence,
                         needs_review=rules.confidence < LOW_CONFIDENCE)
    use_rules = rules.confidence >= RULE_TRUST
    return ItemScore(rules.score if use_rules else model.score, "rules" if use_rules else "model",
                     DISAGREEMENT_CONFIDENCE, f"模型与规则不一致：{evidence}", needs_review=True)


# ---------------------------------------------------------------------------------------------
# Risk words (a minimal local check; the safety module owns real crisis detection)

RISK_RE = re.compile(r"想死|不想活|活着没(?:什么|啥)?意思|死了算了|不如死|自杀|轻生|结束(?:自己的)?生命"
                     r"|伤害自己|伤害我自己|自残|割腕|跳楼|跳下去|一了百了|了结自己")
RISK_NEGATION_LOOKBACK = 6  # 从来没有想过要|伤害自己
_RISK_NEGATED_RE = re.compile(r"(?:没|不|未|别)[^，,。.；;！!？?]{0,4}$")


def has_risk_words(text: str) -> bool:
    """True when the text mentions self-harm or suicide, unless plainly denied (没想过自杀)."""
    for m in RISK_RE.finditer(text or ""):
        if not _RISK_NEGATED_RE.search(text[max(0, m.start() - RISK_NEGATION_LOOKBACK):m.start()]):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Screening state machine


@dataclass(frozen=True)
class StepResult:
    item_no: int
    score: ItemScore
    follow_up: bool  # True: the answer was vague, next_prompt() is the follow-up question
    risk: bool
    done: bool


@dataclass
class _Record:
    item_no: int
    question: str
    answer: str
    score: int | None
    method: str
    needs_review: bool
    confidence: float
    evidence: str
    clinician_score: int | None = None
    risk: bool = False


class Screening:
    """One guided screening: asks items in order, one follow-up at most per vague answer.

    Deterministic and free of I/O; keep it in a gr.State via to_dict()/from_dict().
    """

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self._records: list[_Record] = []
        self._pending: _Record | None = None  # the vague first answer awaiting its follow-up

    @property
    def current_item(self) -> int | None:
        """1-based number of the item being asked, None when done."""
        return None if self.done else len(self._records) + 1

    @property
    def done(self) -> bool:
        return len(self._records) == len(self.instrument.items)

    @property
    def awaiting_follow_up(self) -> bool:
        return self._pending is not None

    def next_prompt(self) -> str:
        """The question to ask now: the item's question, its follow-up, or the closing words."""
        if self.done:
            return self.instrument.closing
        item = self.instrument.items[len(self._records)]
        return item.follow_up if self._pending else item.question

    def answer(self, text: str, engine: Any = None) -> StepResult:
        """Score the client's answer to the current question and advance the flow."""
        if self.done:
            raise AssessmentError("the screening is finished; start a new one")
        if not isinstance(text, str):
            raise AssessmentError(f"answer must be text, got {type(text).__name__}")
        item = self.instrument.items[len(self._records)]
        scored = score_answer(text, self.instrument, item.no, engine)
        risk_words = has_risk_words(text)
        vague = scored.score is None or scored.confidence < LOW_CONFIDENCE
        if vague and self._pending is None:
            risk = risk_words or (item.risk_item and bool(scored.score))
            self._pending = _Record(item.no, item.question, text, scored.score, scored.method, True,
                                    scored.confidence, scored.evidence, risk=risk)
            return StepResult(item.no, scored, True, risk, False)
        if self._pending is not None:
            first, self._pending = self._pending, None
            text = first.answer + FOLLOW_UP_JOINER + text
            risk_words = risk_words or first.risk
            if scored.score is None and first.score is not None:
                scored = ItemScore(first.score, first.method, first.confidence, first.evidence)
            scored = replace(scored, needs_review=scored.needs_review or vague)
        # An item-9 answer left unclear after the follow-up is flagged too: a clinician must ask.
        risk = risk_words or (item.risk_item and (scored.score is None or scored.score > 0))
        self._records.append(_Record(item.no, item.question, text, scored.score, scored.method,
                                     scored.needs_review, scored.confidence, scored.evidence, risk=risk))
        return StepResult(item.no, scored, False, risk, self.done)

    def correct(self, item_no: int, score: int | None) -> None:
        """Store the clinician's score for an answered item (None removes the correction)."""
        if score is not None and (not isinstance(score, int) or isinstance(score, bool)
                                  or not MIN_SCORE <= score <= MAX_SCORE):
            raise AssessmentError(f"a score must be {MIN_SCORE}-{MAX_SCORE}, not {score!r}")
        self.instrument.item(item_no)
        if item_no > len(self._records):
            raise AssessmentError(f"item {item_no} has not been answered yet")
        self._records[item_no - 1].clinician_score = score

    @property
    def total(self) -> int:
        """Sum of the item scores so far; a clinician's correction replaces the item's score."""
        return sum(r.clinician_score if r.clinician_score is not None else (r.score or 0)
                   for r in self._records)

    @property
    def band(self) -> str:
        return self.instrument.band(self.total)

    @property
    def risk(self) -> bool:
        """True once any answer raised the risk flag."""
        return any(r.risk for r in self._records) or bool(self._pending and self._pending.risk)

    @property
    def items(self) -> list[dict]:
        """Answered items for the side panel and the store."""
        return [{"item_no": r.item_no, "question": r.question, "answer": r.answer, "score": r.score,
                 "method": r.method, "needs_review": r.needs_review, "clinician_score": r.clinician_score}
                for r in self._records]

    def to_dict(self) -> dict:
        """JSON-serialisable state."""
        return {"version": STATE_VERSION, "instrument": self.instrument.id,
                "records": [vars(r).copy() for r in self._records],
                "pending": vars(self._pending).copy() if self._pending else None}

    @classmethod
    def from_dict(cls, data: dict, instruments: dict[str, Instrument] | None = None) -> "Screening":
        """Rebuild a screening saved by to_dict(); AssessmentError when the data is malformed."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise AssessmentError(f"not a saved screening (version {STATE_VERSION} expected)")
        instruments = instruments if instruments is not None else load_instruments()
        if data.get("instrument") not in instruments:
            raise AssessmentError(f"unknown instrument {data.get('instrument')!r} in saved screening")
        screening = cls(instruments[data["instrument"]])
        try:
            screening._records = [_Record(**r) for r in data["records"]]
            screening._pending = _Record(**data["pending"]) if data.get("pending") else None
        except (KeyError, TypeError) as exc:
            raise AssessmentError(f"malformed saved screening: {exc}") from exc
        if len(screening._records) > len(screening.instrument.items) or any(
                r.item_no != i + 1 for i, r in enumerate(screening._records)):
            raise AssessmentError("malformed saved screening: items out of order")
        for record in screening._records + ([screening._pending] if screening._pending else []):
            for value in (record.score, record.clinician_score):
                if value is not None and (not isinstance(value, int) or not MIN_SCORE <= value <= MAX_SCORE):
                    raise AssessmentError(f"malformed saved screening: score {value!r} for item {record.item_no}")
        return screening


# ---------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mvp.assessment", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score answers read from stdin, one JSON line out per answer",
                           description="Read answers from stdin (one per line, or JSONL with an 'answer' "
                                       "field) and print one JSON object per answer.")
    score.add_argument("--instrument", required=True, help="instrument id from config/instruments.yaml (phq9, gad7)")
    score.add_argument("--item", required=True, type=int, help="item number, 1-based (PHQ-9: 1-9, GAD-7: 1-7)")
    score.add_argument("--model", default=None,
                       help="model folder, hub id or 'demo': score with the model, cross-checked by the rules "
                            "(default: rules only)")
    score.add_argument("--instruments-file", default=None, type=Path,
                       help=f"instruments YAML (default: {DEFAULT_INSTRUMENTS_PATH})")
    return parser


def read_answers(lines: Iterable[str]) -> Iterable[str]:
    """Answers from plain lines or JSONL objects with an 'answer' field; blank lines are skipped."""
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssessmentError(f"stdin line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj.get("answer"), str):
                raise AssessmentError(f"stdin line {n}: JSON object without an 'answer' text field")
            yield obj["answer"]
        else:
            yield line


def _load_engine(model: str) -> Any:
    """Load a model through the app's one loader (lazy: torch is imported only here)."""
    try:
        from mvp.engine import Engine
        from mvp.loader import ModelLoadError, ModelSpec, load_model
    except ImportError as exc:
        raise AssessmentError(f"--model needs mvp.loader and mvp.engine, which cannot be imported: {exc}") from exc
    try:
        return Engine(load_model(ModelSpec(model=model)))
    except (ModelLoadError, OSError, ValueError) as exc:
        raise AssessmentError(f"cannot load model {model!r}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        instruments = load_instruments(args.instruments_file)
        if args.instrument not in instruments:
            parser.error(f"unknown instrument {args.instrument!r}; choose from {', '.join(sorted(instruments))}")
        instrument = instruments[args.instrument]
        if not 1 <= args.item <= len(instrument.items):
            parser.error(f"--item must be 1-{len(instrument.items)} for {instrument.id}, not {args.item}")
        engine = _load_engine(args.model) if args.model else None
        for answer in read_answers(sys.stdin):
            result = score_answer(answer, instrument, args.item, engine)
            print(json.dumps({"answer": answer, "score": result.score, "method": result.method,
                              "needs_review": result.needs_review}, ensure_ascii=False), flush=True)
    except AssessmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
