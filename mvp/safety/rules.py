"""Loading and validation of the crisis rules file (config/safety_rules.yaml), and text normalisation.

What it is for: `read_rules(path)` reads a rules file written by clinicians, checks every key
(unknown keys, bad regular expressions, unknown macros or categories are a SafetyConfigError naming
the file and the key), expands <MACROS> and compiles the patterns that mvp.safety.RuleSet applies.
`normalise(text)` is the normalisation every message goes through before the rules see it (see
mvp.safety's docstring, step 1). Callers use mvp.safety, which re-exports the public names:

    from mvp.safety.detect import RuleSet
    rules = RuleSet.load("my_rules.yaml")
    python -m mvp.safety check --rules my_rules.yaml < messages.txt     # try a rules file
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

CATEGORIES: tuple[str, ...] = ("suicide", "self_harm", "harm_others", "abuse", "medical")
SCREEN_KINDS: tuple[str, ...] = ("method_details", "encouragement", "dismissive", "human_claim")

DEFAULT_NEGATION_WINDOW = 8
DEFAULT_POST_NEGATION_WINDOW = 12
MAX_WINDOW = 50                   # largest negation window a rules file may set


class SafetyError(Exception):
    """Base class for errors raised by mvp.safety and mvp.safety.rules."""


class SafetyConfigError(SafetyError, ValueError):
    """A rules or resources file is missing or malformed; the message names the file and the key."""


# --- normalisation ------------------------------------------------------------------------------

# Traditional -> simplified for characters that occur in crisis phrasing (pairs: trad, simp).
_T2S_PAIRS = (
    "殺杀 殘残 傷伤 樓楼 藥药 遺遗 書书 囑嘱 結结 東东 來来 時时 會会 說说 話话 這这 個个 們们 麼么 為为 無无 覺觉 "
    "幾几 見见 離离 別别 從从 裡里 裏里 邊边 點点 兒儿 經经 氣气 車车 錢钱 媽妈 當当 聽听 關关 兩两 條条 準准 備备 "
    "決决 嚴严 訴诉 誰谁 錯错 憂忧 鬱郁 緒绪 壓压 問问 題题 應应 該该 電电 報报 導导 聞闻 課课 學学 療疗 醫医 師师 "
    "診诊 斷断 燒烧 顆颗 農农 劑剂 劃划 槍枪 繩绳 橋桥 陽阳 臺台 層层 頂顶 軌轨 衝冲 強强 姦奸 褻亵 腦脑 暈晕 護护 "
    "絕绝 謝谢 辦办 處处 貓猫 託托 寫写 錄录 讓让 對对 給给 還还 過过 難难 頭头 開开 現现 後后 沒没 著着 於于 與与 "
    "並并 嗎吗 實实 進进 發发 帶带 壞坏 戀恋 態态 讀读 試试 夢梦 睏困 懶懒 醜丑 熱热 餓饿 凍冻 擠挤 窮穷 嚇吓 羨羡 "
    "尷尴 悶闷 噁恶 鬆松 緊紧 淚泪 煩烦 厭厌 樣样 種种 樂乐 劇剧 遊游 戲戏 機机 線线 黨党 臉脸 靜静 隨随 腳脚 輕轻 "
    "嘔呕 脫脱 擊击 鎖锁 綁绑 蹤踪 脅胁 騷骚 擾扰 盡尽 儘尽 飯饭 鍋锅 燙烫 煙烟 針针 續续 刪删 許许 誤误 嗚呜 "
    "鬧闹 罵骂 歲岁 級级 愛爱 懷怀 婦妇 爺爷 奶奶 陪陪 堅坚 撐撑 極极 彈弹 聯联 繫系 願愿 瘋疯 傻傻 蟲虫 魚鱼 雞鸡 "
    "驚惊 慘惨 隻只 雙双 萬万 億亿 這这 邊边 裝装 際际 趕赶 鋒锋 癒愈 痺痹 毀毁 滅灭 囚囚 顧顾 類类 縮缩 剛刚 纔才 "
    "歡欢 喚唤 魂魂 暫暂 鐵铁 軟软 麗丽 慮虑 歷历 憶忆 體体 內内 壓压 鬥斗 濟济 盤盘 瓶瓶 爛烂 齊齐 擔担 憑凭"
)
_T2S = {ord(pair[0]): pair[1] for pair in _T2S_PAIRS.split() if len(pair) == 2 and pair[0] != pair[1]}
_PUNCT = {",": "，", "!": "！", "?": "？", ";": "；", ":": "：", "\uff0e": "."}
_TABLE: dict[int, str] = {}
for _c in range(0xFF01, 0xFF5F):                      # full-width ASCII -> ASCII ...
    _TABLE[_c] = chr(_c - 0xFEE0).lower()
for _c in "，！？；：":                                   # ... except the Chinese punctuation itself
    _TABLE.pop(ord(_c), None)
_TABLE.update({ord(k): v for k, v in _PUNCT.items()})
_TABLE.update({c: chr(c).lower() for c in range(ord("A"), ord("Z") + 1)})
_TABLE[0x3000] = " "
_TABLE.update(_T2S)

_WHITESPACE = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]+")


def _is_cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef"


def normalise(text: str) -> tuple[str, list[int] | None]:
    """Return the normalised text and, when lengths differ, a map from its indices to the original's."""
    t = text.translate(_TABLE)
    if not _WHITESPACE.search(t):
        return t, None
    out: list[str] = []
    index: list[int] = []
    pos = 0
    for m in _WHITESPACE.finditer(t):
        start, end = m.span()
        out.append(t[pos:start])
        index.extend(range(pos, start))
        before = t[start - 1] if start else ""
        after = t[end] if end < len(t) else ""
        visible = m.group().strip("\u200b\u200c\u200d\u2060\ufeff")
        if visible and before and after and not (_is_cjk(before) or _is_cjk(after)):
            out.append(" ")
            index.append(start)
        pos = end
    out.append(t[pos:])
    index.extend(range(pos, len(t)))
    return "".join(out), index


# --- configuration ------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafetyConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SafetyConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SafetyConfigError(f"{path}: the top level must be a mapping of keys")
    return data


class _Checker:
    """Small helper that turns malformed values into SafetyConfigError naming the file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> SafetyConfigError:
        return SafetyConfigError(f"{self.path}: key '{key}': {problem}")

    def keys(self, value: Any, key: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping")
        allowed = set(allowed)
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if k not in value:
                raise self.fail(f"{key}.{k}" if key else k, "is required")
        return value

    def strings(self, value: Any, key: str, allow_empty: bool = False) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        if not value and not allow_empty:
            raise self.fail(key, "must not be empty")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value).strip() == "":
            raise self.fail(key, "must be a non-empty string")
        return str(value)

    def expand(self, pattern: str, key: str, macros: Mapping[str, str]) -> str:
        """Replace <NAME> by the macro's text."""
        def one(m: re.Match) -> str:
            if m.group(1) not in macros:
                raise self.fail(key, f"unknown macro <{m.group(1)}> (defined: {', '.join(macros) or 'none'})")
            return macros[m.group(1)]
        return re.sub(r"<([A-Z][A-Z0-9_]*)>", one, pattern)

    def regex(self, pattern: str, key: str, macros: Mapping[str, str] | None = None) -> re.Pattern:
        if macros is not None:
            pattern = self.expand(pattern, key, macros)
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise self.fail(key, f"invalid regular expression: {exc}") from None

    def alternation(self, items: list[str], key: str, macros: Mapping[str, str] | None = None) -> re.Pattern:
        for i, item in enumerate(items):
            self.regex(item, f"{key}[{i}]", macros)
        return self.regex("|".join(f"(?:{p})" for p in items), key, macros)


_COMMON_CHARS = frozenset("我的了是不一在有人这他她你个们就也都很想要会说好到得着过没么自己时候")
_COMMON_CHAR_COST = 20


def required_chars(regex: re.Pattern) -> frozenset[str] | None:
    """Characters of which every match of `regex` contains at least one; None when there is no such set.

    Used as a prefilter: a rule whose set shares nothing with the message cannot match, so it is
    skipped. Derived from the parsed pattern, so it stays correct whatever clinicians write.
    """
    try:
        from re import _constants as c, _parser as parser  # Python 3.11+
    except ImportError:  # pragma: no cover - older Pythons
        return None
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}

    def cost(chars: frozenset[str]) -> int:     # prefer sets of rare characters
        return sum(_COMMON_CHAR_COST if ch in _COMMON_CHARS else 1 for ch in chars)

    def seq(items: Any) -> frozenset[str] | None:
        best = None
        for op, av in items:
            found = item(op, av)
            if found is not None and (best is None or cost(found) < cost(best)):
                best = found
        return best

    def item(op: Any, av: Any) -> frozenset[str] | None:
        if op is c.LITERAL:
            return frozenset(chr(av))
        if op is c.IN:
            chars: set[str] = set()
            for o, a in av:
                if o is c.LITERAL:
                    chars.add(chr(a))
                elif o is c.RANGE and a[1] - a[0] < 64:
                    chars.update(chr(x) for x in range(a[0], a[1] + 1))
                else:
                    return None
            return frozenset(chars)
        if op is c.SUBPATTERN:
            return seq(av[-1])
        if op is c.BRANCH:
            union: set[str] = set()
            for branch in av[1]:
                found = seq(branch)
                if found is None:
                    return None
                union |= found
            return frozenset(union)
        if op in repeats:
            return seq(av[2]) if av[0] >= 1 else None
        return None

    if regex.flags & re.IGNORECASE:
        return None
    try:
        return seq(parser.parse(regex.pattern, regex.flags & ~re.UNICODE))
    except Exception:  # pragma: no cover - never let an optimisation break detection
        return None


def _resolve_macros(ck: _Checker, raw: dict) -> dict[str, str]:
    """Expand macros that use other macros (in any order); a cycle is an error."""
    texts: dict[str, str] = {}
    for name, value in raw.items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(name)):
            raise ck.fail(f"macros.{name}", "macro names are upper case letters, digits and _ (e.g. PERSON)")
        texts[str(name)] = ck.text(value, f"macros.{name}")
    done: dict[str, str] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> str:
        if name not in done:
            key = f"macros.{name}"
            if name in chain:
                raise ck.fail(key, f"macros refer to each other in a circle: {' -> '.join(chain + (name,))}")
            for used in re.findall(r"<([A-Z][A-Z0-9_]*)>", texts[name]):
                if used not in texts:
                    raise ck.fail(key, f"unknown macro <{used}> (defined: {', '.join(texts)})")
                resolve(used, chain + (name,))
            done[name] = ck.expand(texts[name], key, done)
            ck.regex(done[name], key)
        return done[name]

    for name in texts:
        resolve(name, ())
    return done


@dataclass(frozen=True)
class _Rule:
    category: str
    id: str
    parts: tuple[tuple[re.Pattern, frozenset[str] | None], ...]   # (pattern, required_chars)
    also: tuple[str, ...]
    negatable: bool


@dataclass(frozen=True)
class _Suppression:
    """Everything that can drop a match: negation, context and past-resolved cues."""

    before: re.Pattern
    immediate: frozenset[str]
    after: re.Pattern
    correction: re.Pattern
    window: int
    post_window: int
    context: re.Pattern
    override: re.Pattern | None
    past: re.Pattern
    resolved: re.Pattern


_RULE_KEYS = ("id", "note", "patterns", "also", "negation")
_TOP_KEYS = ("version", "settings", "macros", "categories", "idioms", "negation", "context",
             "resolution", "reply_screening", "replacements")
_REQUIRED_TOP_KEYS = ("categories", "idioms", "negation", "context", "resolution", "reply_screening", "replacements")
_REPLACEMENT_FIELDS = ("emergency_medical", "emergency_police", "hotlines")
_NEVER = "(?!x)x"     # a pattern that matches nothing, for optional lists left out


def _parse_rules(ck: _Checker, data: Any, macros: Mapping[str, str]) -> list[_Rule]:
    categories = ck.keys(data, "categories", CATEGORIES, required=CATEGORIES)
    rules: list[_Rule] = []
    for cat in CATEGORIES:
        entries = categories[cat]
        if not isinstance(entries, list) or not entries:
            raise ck.fail(f"categories.{cat}", "must be a non-empty list of rules")
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            key = f"categories.{cat}[{i}]"
            ck.keys(entry, key, _RULE_KEYS, required=("id", "patterns"))
            rule_id = ck.text(entry["id"], f"{key}.id")
            if rule_id in seen:
                raise ck.fail(f"{key}.id", f"duplicate rule id '{rule_id}' in {cat}")
            seen.add(rule_id)
            also = ck.strings(entry.get("also", []), f"{key}.also", allow_empty=True)
            for other in also:
                if other not in CATEGORIES:
                    raise ck.fail(f"{key}.also", f"unknown category '{other}' (use one of {', '.join(CATEGORIES)})")
            negatable = entry.get("negation", True)
            if not isinstance(negatable, bool):
                raise ck.fail(f"{key}.negation", "must be true or false")
            patterns = ck.strings(entry["patterns"], f"{key}.patterns")
            parts = [ck.regex(p, f"{key}.patterns[{j}]", macros) for j, p in enumerate(patterns)]
            rules.append(_Rule(cat, rule_id, tuple((rx, required_chars(rx)) for rx in parts), tuple(also), negatable))
    return rules


def _parse_idioms(ck: _Checker, data: Any, macros: Mapping[str, str]) -> re.Pattern | None:
    if not isinstance(data, list):
        raise ck.fail("idioms", "must be a list of rules")
    patterns: list[str] = []
    for i, entry in enumerate(data):
        ck.keys(entry, f"idioms[{i}]", ("id", "note", "patterns"), required=("id", "patterns"))
        patterns += ck.strings(entry["patterns"], f"idioms[{i}].patterns")
    return ck.alternation(patterns, "idioms", macros) if patterns else None


def _parse_suppression(ck: _Checker, data: dict) -> _Suppression:
    settings = ck.keys(data.get("settings") or {}, "settings", ("negation_window", "post_negation_window"))
    windows = {}
    for key, default in (("negation_window", DEFAULT_NEGATION_WINDOW),
                         ("post_negation_window", DEFAULT_POST_NEGATION_WINDOW)):
        value = settings.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WINDOW:
            raise ck.fail(f"settings.{key}", f"must be a whole number from 0 to {MAX_WINDOW}")
        windows[key] = value
    neg = ck.keys(data["negation"], "negation", ("before", "immediate", "after", "correction"), required=("before",))
    immediate = ck.strings(neg.get("immediate", []), "negation.immediate", allow_empty=True)
    if any(len(c) != 1 for c in immediate):
        raise ck.fail("negation.immediate", "every entry must be a single character")
    ctx = ck.keys(data["context"], "context", ("cues", "override"), required=("cues",))
    override = ck.strings(ctx.get("override", []), "context.override", allow_empty=True)
    res = ck.keys(data["resolution"], "resolution", ("past", "resolved"), required=("past", "resolved"))

    def listed(section: dict, name: str, key: str, optional: bool = False) -> re.Pattern:
        items = section.get(name, [_NEVER]) if optional else section[name]
        return ck.alternation(ck.strings(items, key), key)

    return _Suppression(
        before=listed(neg, "before", "negation.before"), immediate=frozenset(immediate),
        after=listed(neg, "after", "negation.after", True),
        correction=listed(neg, "correction", "negation.correction", True),
        window=windows["negation_window"], post_window=windows["post_negation_window"],
        context=listed(ctx, "cues", "context.cues"),
        override=ck.alternation(override, "context.override") if override else None,
        past=listed(res, "past", "resolution.past"), resolved=listed(res, "resolved", "resolution.resolved"))


def _parse_screening(ck: _Checker, data: Any, macros: Mapping[str, str]) -> dict[str, tuple[re.Pattern, re.Pattern | None]]:
    scr = ck.keys(data, "reply_screening", SCREEN_KINDS, required=SCREEN_KINDS)
    screening = {}
    for kind in SCREEN_KINDS:
        key = f"reply_screening.{kind}"
        entry = ck.keys(scr[kind], key, ("patterns", "crisis_patterns"), required=("patterns",))
        always = ck.alternation(ck.strings(entry["patterns"], f"{key}.patterns"), f"{key}.patterns", macros)
        crisis = ck.strings(entry.get("crisis_patterns", []), f"{key}.crisis_patterns", allow_empty=True)
        screening[kind] = (always, ck.alternation(crisis, f"{key}.crisis_patterns", macros) if crisis else None)
    return screening


def _parse_replacements(ck: _Checker, data: Any) -> dict[str, str]:
    repl = ck.keys(data, "replacements", ("default", "crisis", "human_claim"),
                   required=("default", "crisis", "human_claim"))
    replacements = {}
    for name, value in repl.items():
        value = ck.text(value, f"replacements.{name}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ck.fail(f"replacements.{name}", f"bad {{placeholder}}: {exc}") from None
        unknown = fields - set(_REPLACEMENT_FIELDS)
        if unknown:
            raise ck.fail(f"replacements.{name}", f"unknown placeholder {{{sorted(unknown)[0]}}} "
                                                  f"(allowed: {', '.join(_REPLACEMENT_FIELDS)})")
        replacements[name] = value
    return replacements


def read_rules(path: Path) -> tuple[list[_Rule], re.Pattern | None, _Suppression,
                                    dict[str, tuple[re.Pattern, re.Pattern | None]], dict[str, str]]:
    """Read and validate a rules file: the arguments of RuleSet after its path."""
    data = _read_yaml(path)
    ck = _Checker(path)
    ck.keys(data, "", _TOP_KEYS, required=_REQUIRED_TOP_KEYS)
    macros = data.get("macros") or {}
    ck.keys(macros, "macros", macros.keys() if isinstance(macros, dict) else ())
    macros = _resolve_macros(ck, macros)
    return (_parse_rules(ck, data["categories"], macros), _parse_idioms(ck, data["idioms"], macros),
            _parse_suppression(ck, data), _parse_screening(ck, data["reply_screening"], macros),
            _parse_replacements(ck, data["replacements"]))
