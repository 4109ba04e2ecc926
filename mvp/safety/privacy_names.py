"""Person and organisation names for the PII scrubber (used by mvp/safety/privacy.py).

People write names in many ways; each rule below yields `(kind, start, end)` spans with kind "name" or
"org":
  - a relation or role word before a name (我老婆（陈美玲）, 我们主管钱磊, 班长Kevin, 我妹妹欣欣);
  - an introducing word (我叫…, 她叫董雪, 有个叫魏子轩的男生, 叫我小敏, 我是李想);
  - a surname before a title (王老师, 李医生, 徐总) and 老张 / 小林 / 阿杰 forms;
  - bare names found by jieba's part-of-speech tagger (刘海涛昨天又冲我发火了), kept only when they
    start with a surname, are not a common word (`NOT_NAMES`) and sit on word boundaries: jieba tags
    老公, 谢谢 or 单休 as names too;
  - nicknames (芳芳, 小雨) after a relation or a verb, and common English given names;
  - organisations: a name before a suffix (南京外国语学校, 中建三局, 上海市精神卫生中心; the part before
    the suffix must say which one: 我们学校 and 新学校 are kept) and well-known employers (字节跳动).
`variants(name)` gives the partial forms (陈美玲 -> 美玲, 玲玲) replaced later in the same conversation.
jieba loads its dictionary on first use (about 2 s, once per process).
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

from mvp.safety import privacy_lexicon as lex

Span = tuple[str, int, int]
Token = tuple[str, str, int, int]          # word, part-of-speech flag, start, end

_SURNAME = "(?:" + "|".join(lex.SURNAMES_2) + "|[" + lex.SURNAMES_1 + "])"
_NOT_GIVEN = ("脾性话的了是在和与跟也都就还又很太把被给让叫说去来到过着么吗呢吧啊呀哦嘛我你他她它们这那个有没不人今昨"
              "年岁月日号点时候里上下前后中总老每口嘴打骂对会要想最才再已正真特非竟居突经直却和并从当以被等得死着完掉")
_GIVEN = rf"(?:[\u4e00-\u9fa5](?<![{_NOT_GIVEN}]))"
_CN_NAME = rf"{_SURNAME}{_GIVEN}{{1,2}}"
_EN_NAME = r"(?<![A-Za-z])[A-Z][a-z]{1,11}(?![A-Za-z])"
_NICK = rf"(?:(?P<r>[\u4e00-\u9fa5])(?P=r)|小{_GIVEN}|阿(?:{_GIVEN}|[A-Z][a-z]{{1,10}}))"


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


_RELATION = rf"(?:{_alternation(lex.RELATIONS)})"
_LINK = r"(?:叫做|名叫|叫|是|，|,|（|\(|：|:|\s)*"
_AFTER_RELATION = re.compile(rf"{_RELATION}{_LINK}(?:({_CN_NAME})|({_EN_NAME})|({_NICK}))")
_AFTER_INTRO = re.compile(rf"(?:{_alternation(lex.INTRODUCERS + ('叫我', '管我叫'))})\s*[:：]?\s*"
                          rf"(?:({_CN_NAME})|({_EN_NAME})|({_NICK}))")
_INTRO_SHORT = re.compile(rf"(?:我叫|我是|名叫|全名是|我的名字是)\s*({_SURNAME}[\u4e00-\u9fa5]{{1,2}})(?=[，,。.！!？?\s]|$)")
_SURNAME_ONLY = re.compile(rf"(?<![贵同])姓({_SURNAME})(?![\u4e00-\u9fa5]?(?:名|氏|别))")
_TITLED = re.compile(rf"({_SURNAME})(?:{_alternation(lex.TITLES)})")
_OLD_YOUNG = re.compile(rf"[老小]{_SURNAME}")
_NOT_OLD_YOUNG = frozenset("老师 老板 老公 老婆 老家 老人 老实 老乡 老年 老天 老大 老二 老总 老成 老于 老宋 老汤 老黄历 老白干 "
                           "小时 小米 小学 小心 小区 小孩 小伙 小组 小说 小事 小姐 小王子 小三 小气 小白 小于".split())
_NICK_CUE = re.compile(rf"(?:^|[，,。！？!?；;\s]|和|跟|与|给|让|把|对|被|找|陪|同|等|的)({_NICK})")
_SINGLE_CHAR_TITLES = frozenset("总哥姐叔姨")
_EMPLOYERS = re.compile(rf"(?:{_alternation(lex.EMPLOYERS)})(?:[\u4e00-\u9fa5]{{1,6}}?(?:店|园区|基地|总部|分公司))?"
                        rf"(?:{_alternation(lex.EMPLOYER_TAILS)})?(?![粥饭])")
_ORG_SUFFIX = re.compile(rf"(?:{_alternation(lex.ORG_SUFFIXES)})")
_NUMBERED_SCHOOL = re.compile(r"[一二三四五六七八九十]{1,3}中(?![文国午间心途期旬等])")
_MAX_ORG_PREFIX = 20


@lru_cache(maxsize=1)
def _jieba():
    import jieba
    import jieba.posseg as pseg
    jieba.setLogLevel(logging.WARNING)
    jieba.dt.initialize()
    return jieba.dt, pseg.dt.word_tag_tab


_CJK_WORD = re.compile(r"[\u4e00-\u9fa5]{2,3}")


def tokens(text: str) -> list[Token]:
    """jieba tokens with offsets and part-of-speech flags.

    Flags come from jieba's dictionary (the table jieba.posseg uses); a word jieba's HMM found that is
    not in the dictionary (刘海涛, 林一航) gets "nr" when it has 2-3 Chinese characters, as posseg's own
    tagger mostly does for such words. posseg's per-character tagger is about 5x slower and gave the
    same names on our data.
    """
    tokenizer, tags = _jieba()
    out, pos = [], 0
    for word in tokenizer.cut(text, HMM=True):
        flag = tags.get(word)
        if flag is None:
            flag = "nr" if _CJK_WORD.fullmatch(word) else ("eng" if word.isascii() and word.isalnum() else "x")
        out.append((word, flag, pos, pos + len(word)))
        pos += len(word)
    return out


_MEDICATIONS = frozenset(lex.MEDICATIONS)
_ROLE_WORDS = frozenset(lex.RELATIONS) | frozenset(lex.TITLES)
# Common words that a surname + given-name match can swallow (刘一直在: 一直 is not a given name).
_NOT_GIVEN_WORDS = frozenset("一直 一定 一起 一样 一般 一点 一下 一些 一切 一次 一个 一天 一年 一边 一向 一旦 一共 一再 "
                             "一家 一句 一口 一声 一眼 一顿 一脸".split())


def _is_name(candidate: str, named: bool = False) -> bool:
    """Could `candidate` be a name? `named`: right after 叫 / 名叫 / a bracket, where 林子豪 is a name
    even though 林子 is a word."""
    if len(candidate) < 2 or candidate in lex.NOT_NAMES or candidate in _ROLE_WORDS:
        return False
    if not named and len(candidate) >= 3 and candidate[:2] in lex.NOT_NAMES and candidate[:2] not in lex.SURNAMES_2:
        return False
    if len(candidate) == 3 and candidate[1:] in _NOT_GIVEN_WORDS:
        return False
    return True


_GIVEN_VERBS = frozenset("飞成明立强建兴")
# One-character verbs that jieba's HMM glues to a name before them (杨帆发了).
_VERB_CHARS = frozenset("发问找拿看带送回推拉写买卖吃喝哭笑走跑骗偷抢逼管催劝陪帮借还欠删拉踢")


def _cn_name_end(text: str, start: int, end: int, bounds: set[int], tags: dict | None = None) -> int:
    """A surname+given match may run one character too far (许诺最近): end it on a word boundary."""
    if end - start == 3 and text[start:start + 2] not in lex.SURNAMES_2:
        if end not in bounds and (start + 2) in bounds:
            return start + 2
        if (start + 2) in bounds and tags is not None and tags.get(text[start + 2:end]) == "v" \
                and text[start + 2:end] not in _GIVEN_VERBS:                      # 杨帆发了: 发 is the verb
            return start + 2
        if end < len(text) and text[end] == text[end - 1]:      # 王芳天天: 天天 is a word
            return start + 2
    return end


def _person_spans(text: str, toks: list[Token], bounds: set[int]) -> list[Span]:
    spans: list[Span] = []

    def add_match(m: re.Match) -> None:
        for g in (1, 2, 3):
            if m.group(g) is None:
                continue
            s, e = m.start(g), m.end(g)
            if g == 1:
                e = _cn_name_end(text, s, e, bounds, _jieba()[1])
                if not _is_name(text[s:e], named=text[max(0, s - 1):s] in ("叫", "（", "(", "做")):
                    return
            elif g == 2 and text[s:e] in lex.NOT_ENGLISH_NAMES:
                return
            elif g == 3 and not _nickname_ok(text[s:e]):
                return
            spans.append(("name", s, e))
            return

    for m in _AFTER_RELATION.finditer(text):
        add_match(m)
    for m in _AFTER_INTRO.finditer(text):
        add_match(m)
    for m in _INTRO_SHORT.finditer(text):
        if _is_name(m.group(1)):
            spans.append(("name", m.start(1), m.end(1)))
    for m in _SURNAME_ONLY.finditer(text):                      # 老师姓白, 我师父姓程
        spans.append(("name", m.start(1), m.end(1)))
    for m in _TITLED.finditer(text):
        title_char = text[m.end() - 1]
        if m.end() - m.start() - len(m.group(1)) == 1 and title_char in _SINGLE_CHAR_TITLES:
            if m.start() not in bounds:                        # 对方总是: 方 is inside a word
                continue
        if m.start() > 0 and m.start() not in bounds and text[m.start() - 1] not in "的是找跟和给让叫位个":
            continue
        spans.append(("name", m.start(), m.end()))
    for m in _OLD_YOUNG.finditer(text):
        if m.start() in bounds and m.end() in bounds and m.group(0) not in _NOT_OLD_YOUNG:
            spans.append(("name", m.start(), m.end()))
    for m in _NICK_CUE.finditer(text):
        if _nickname_ok(m.group(1)) and m.end(1) in bounds:
            spans.append(("name", m.start(1), m.end(1)))
    for m in re.finditer(_EN_NAME, text):
        if m.group(0) in lex.ENGLISH_NAMES:
            spans.append(("name", m.start(), m.end()))
    spans.extend(_tagged_names(text, toks))
    return spans


def _nickname_ok(nick: str) -> bool:
    if nick in lex.NOT_NICKNAMES or nick in lex.NOT_NAMES:
        return False
    if nick[0] == "小" and len(nick) == 2:
        return nick[1] not in lex.NOT_NICK_AFTER_XIAO
    if nick[0] == "阿" and len(nick) >= 2:
        return nick[1] not in lex.NOT_NICK_AFTER_A
    return True


_NAME_FLAGS = frozenset(("nr", "nrfg", "nrt"))
_GIVEN_FLAGS = frozenset(("nr", "nrfg", "nrt", "nz", "ns"))


def _tagged_names(text: str, toks: list[Token]) -> list[Span]:
    """Bare names from jieba's tags, filtered: a surname first, not a common word."""
    spans = []
    for i, (word, flag, s, e) in enumerate(toks):
        if i > 0 and (toks[i - 1][0] in lex.NOT_BEFORE_BARE_NAME or toks[i - 1][1] in ("d", "ad", "zg")):
            continue
        if flag in _NAME_FLAGS and len(word) == 2 and word[0] in "阿小" and _nickname_ok(word):
            spans.append(("name", s, e))
        elif flag in _NAME_FLAGS and 2 <= len(word) <= 3 and re.fullmatch(_CN_NAME, word) and _is_name(word):
            tags = _jieba()[1]
            if len(word) == 3 and word[2] in _VERB_CHARS and tags.get(word[:2]) in (None, *_NAME_FLAGS):
                e = s + 2                                        # 杨帆发了: jieba joined the verb
            if not (len(word) == 2 and word[1] == word[0]):
                spans.append(("name", s, e))
        elif len(word) == 1 and re.fullmatch(f"[{lex.SURNAMES_1}]", word) and i + 1 < len(toks):
            nxt = toks[i + 1]
            if nxt[1] in _GIVEN_FLAGS and len(nxt[0]) == 2 and re.fullmatch(f"{_GIVEN}{{2}}", nxt[0]):
                if _is_name(word + nxt[0]) and nxt[0] not in lex.NOT_NAMES:
                    spans.append(("name", s, nxt[3]))
    return spans


def _org_prefix_start(text: str, suffix_start: int) -> int | None:
    """Where the name before an organisation suffix begins, or None if there is no real name."""
    i = suffix_start
    while i > 0 and suffix_start - i < _MAX_ORG_PREFIX and text[i - 1] not in lex.ORG_STOP_CHARS:
        i -= 1
    prefix = text[i:suffix_start]
    if not prefix:
        return None
    offset = 0
    toks = tokens(prefix)
    if len(toks) == 1 and len(prefix) >= 2 and prefix not in lex.GENERIC_ORG_PREFIXES \
            and prefix not in _ROLE_WORDS and toks[0][1] in ("vn", "nz", "n", "nr", "ns", "nt"):
        return i                                                # 育才学校: one word is the whole name
    for word, flag, s, e in toks:                               # drop leading verbs and generic words
        if word in lex.GENERIC_ORG_PREFIXES or flag in ("v", "vd", "p", "r", "d", "c", "u", "a", "ad", "q", "f", "m") \
                and not re.search(r"[第一二三四五六七八九十]", word):
            offset = e
            continue
        break
    rest = prefix[offset:]
    if len(rest) < 2 or rest in lex.GENERIC_ORG_PREFIXES or rest in _ROLE_WORDS or _ORG_SUFFIX.fullmatch(rest):
        return None
    return i + offset


def _org_spans(text: str) -> list[Span]:
    spans = [("org", m.start(), m.end()) for m in _EMPLOYERS.finditer(text)]
    for regex in (_ORG_SUFFIX, _NUMBERED_SCHOOL):
        for m in regex.finditer(text):
            start = _org_prefix_start(text, m.start())
            if start is not None:
                spans.append(("org", start, m.end()))
    return spans


def name_spans(text: str, keep_terms: frozenset[str] = frozenset()) -> list[Span]:
    """Person and organisation spans in `text` (may overlap; the caller resolves overlaps)."""
    if not re.search(r"[\u4e00-\u9fa5A-Z]", text):
        return []
    toks = tokens(text)
    bounds = {t[2] for t in toks} | {len(text)}
    spans = _person_spans(text, toks, bounds) + _org_spans(text)
    keep_terms = frozenset(keep_terms) | _MEDICATIONS
    if keep_terms:
        kept = [(m.start(), m.end()) for term in keep_terms for m in re.finditer(re.escape(term), text)]
        spans = [sp for sp in spans if not any(ks <= sp[1] and sp[2] <= ke for ks, ke in kept)]
    return spans


def variants(name: str) -> set[str]:
    """Forms of a found name that identify the same person later in a conversation."""
    out = {name}
    if re.fullmatch(r"[A-Za-z]+", name) or len(name) < 2 or any(name.endswith(t) for t in lex.TITLES):
        return out
    if name[:2] in lex.SURNAMES_2 and len(name) >= 4:
        given = name[2:]
    elif len(name) == 3 and name[0] in lex.SURNAMES_1:
        given = name[1:]
    elif len(name) == 2 and name[0] in lex.SURNAMES_1 and name[1] != name[0] and name[1] not in "总哥姐叔姨":
        given = name[1:]
    else:
        return out
    if len(given) == 2 and given not in lex.NOT_NAMES and given not in lex.NOT_NICKNAMES:
        out.add(given)
    last = given[-1]
    for nick in (last + last, "小" + last, "阿" + last):
        if nick not in lex.NOT_NICKNAMES and nick not in lex.NOT_NAMES and _nickname_ok(nick):
            out.add(nick)
    return out
