"""Rule-based scorer of PHQ-9 / GAD-7 answers: explicit frequency words and day counts -> 0-3.

What it is for: `score_rules()` scores a client's free-text answer to a screening item without a
model, offline and deterministically; mvp.assessment uses it alone or to cross-check the model
scorer (scoring.py). Plain Python, no I/O; it imports only instruments.py (the scale, ItemScore):

    from mvp.assessment import score_rules
    echo "几乎每天都睡不好" | python -m mvp.assessment score --instrument phq9 --item 3

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
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

from mvp.assessment.instruments import MAX_SCORE, MIN_SCORE, Instrument, Item, ItemScore  # noqa: F401

WINDOW_DAYS = 14
# Day-count boundaries of the standard PHQ/GAD scale: 1-6 days -> 1, 7-11 -> 2, 12-14 -> 3.
MORE_THAN_HALF_DAYS = 7
NEARLY_EVERY_DAY_DAYS = 12
FEW_DAYS = 3.0  # "几天": a few days
TEENS_DAYS = 12.0  # "十几天" in a 14-day window can only mean 11-14 days
DAYS_PER_WEEK = 7
DAYS_PER_MONTH = 30
MORE_FACTOR = 1.2  # "一周多": a bit more than a week

# Confidence of the rule layer (mvp.assessment.scoring.LOW_CONFIDENCE is the vague threshold).
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
NEGATION_LOOKBACK = 4
ADJACENT_GAP = 1


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
