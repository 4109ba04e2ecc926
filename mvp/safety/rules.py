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

from mvp.paths import CONFIG_DIR
from mvp.safety.normalise import normalise  # noqa: F401 - re-exported for older callers

DEFAULT_RULES_PATH = CONFIG_DIR / "safety_rules.yaml"

SCREEN_KINDS: tuple[str, ...] = ("method_details", "encouragement", "dismissive", "human_claim")

DEFAULT_NEGATION_WINDOW = 8
DEFAULT_POST_NEGATION_WINDOW = 12
MAX_WINDOW = 50                   # largest negation window a rules file may set


class SafetyError(Exception):
    """Base class for errors raised by mvp.safety and mvp.safety.rules."""


class SafetyConfigError(SafetyError, ValueError):
    """A rules or resources file is missing or malformed; the message names the file and the key."""


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


# The 100 and the next 300 most frequent characters of client turns (bundled dialogues): a prefilter
# prefers rare trigger characters (fewer windows to scan); any choice gives the same matches.
_COMMON_CHARS = frozenset("她你们候个这么着"
                          "我的有不时是一候会这觉在情感得很到力些自过让但没好来也心能种和了己别常想特事或那总就试上绪去还对压现者为大要人更么况难下作他都实以因比个经多其生们意如然最工点法可像道确做知前太里望近中理出直无方着问关")
_FREQUENT_CHARS = frozenset("题状间样变虑起注睡子明尤发家活动解什焦加谢学面后影吃担头希紧说重通记努落次低响真之困该虽听持天开需放容效应显张态果脑地尝每精松被找易挺神怎小安助而至入受尽习看晚较反所处从体食住系量快整定失西平师东即怕口历分提任帮你才只您于突走当成越醒跟害始她集思完改慢再段甚内缓音息几身少回续吸够深控痛务白复制偶友话"
                            "考眠烦算尔询咨呼使婚跳兴期办何正决单同嗯胸忘似性交扰波朋呢并主疲忆微调高向信用目静休善错合孩转日胃老亲流气惫专长全手行化强稍新适服乐轻躁父遇吧舒独愿外妈已年晕声表欢抑度喜议相夜又暴闷孤业却稳母绝格公症支节本趣简庭聊爱累忙久早境进倒建夫饭伴半乎儿打停念沟严结清未丈刚非便求认奋课给观物把丧环接周沮繁导管") - _COMMON_CHARS
_COMMON_CHAR_COST, _FREQUENT_CHAR_COST = 50, 8


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
        return sum(_COMMON_CHAR_COST if ch in _COMMON_CHARS else _FREQUENT_CHAR_COST if ch in _FREQUENT_CHARS else 1
                   for ch in chars)

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
    scope: re.Pattern           # what may stand between a negation cue and the phrase it negates
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
_TOP_KEYS = ("version", "settings", "macros", "category_info", "categories", "idioms", "negation", "context",
             "resolution", "reply_screening", "replacements")
_REQUIRED_TOP_KEYS = ("category_info", "categories", "idioms", "negation", "context", "resolution", "reply_screening", "replacements")
_REPLACEMENT_FIELDS = ("emergency_medical", "emergency_police", "hotlines")
_NEVER = "(?!x)x"     # a pattern that matches nothing, for optional lists left out


@dataclass(frozen=True)
class CategoryInfo:
    """One crisis category as declared in the rules file's `category_info` (the only list of them)."""

    id: str
    name: str
    description: str
    advice: str
    aliases: tuple[str, ...]


_INFO_KEYS = ("name", "description", "advice", "aliases")
_ADVICE_FIELDS = ("medical", "police")


def _parse_category_info(ck: _Checker, data: Any) -> dict[str, CategoryInfo]:
    if not isinstance(data, dict) or not data:
        raise ck.fail("category_info", "must be a non-empty mapping of category id -> {name, description, advice, aliases}")
    infos: dict[str, CategoryInfo] = {}
    for cat, entry in data.items():
        key = f"category_info.{cat}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(cat)):
            raise ck.fail(key, "category ids are lower case letters, digits and _ (e.g. self_harm)")
        ck.keys(entry, key, _INFO_KEYS, required=_INFO_KEYS)
        advice = ck.text(entry["advice"], f"{key}.advice")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(advice) if f is not None}
        except ValueError as exc:
            raise ck.fail(f"{key}.advice", f"bad {{placeholder}}: {exc}") from None
        if fields - set(_ADVICE_FIELDS):
            raise ck.fail(f"{key}.advice", f"unknown placeholder {{{sorted(fields - set(_ADVICE_FIELDS))[0]}}} "
                                           f"(allowed: {', '.join(_ADVICE_FIELDS)})")
        aliases = tuple(a.lower() for a in ck.strings(entry["aliases"], f"{key}.aliases"))
        name = ck.text(entry["name"], f"{key}.name")
        infos[str(cat)] = CategoryInfo(str(cat), name, ck.text(entry["description"], f"{key}.description"),
                                       advice, tuple(dict.fromkeys((str(cat), name.lower(), *aliases))))
    return infos


def read_category_info(path: Path = DEFAULT_RULES_PATH) -> dict[str, CategoryInfo]:
    """Only the `category_info` section of a rules file (cheap: no patterns are compiled)."""
    data = _read_yaml(path)
    return _parse_category_info(_Checker(path), data.get("category_info"))


def _parse_rules(ck: _Checker, data: Any, macros: Mapping[str, str], known: tuple[str, ...]) -> list[_Rule]:
    categories = ck.keys(data, "categories", known, required=known)
    rules: list[_Rule] = []
    for cat in known:
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
                if other not in known:
                    raise ck.fail(f"{key}.also", f"unknown category '{other}' (use one of {', '.join(known)})")
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
    neg = ck.keys(data["negation"], "negation", ("before", "scope", "immediate", "after", "correction"),
                  required=("before",))
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
        scope=ck.regex(f"(?:{ck.text(neg.get('scope', ''), 'negation.scope')})*" if neg.get("scope") else "",
                       "negation.scope"),
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


def read_rules(path: Path) -> tuple[dict[str, CategoryInfo], list[_Rule], re.Pattern | None, _Suppression,
                                    dict[str, tuple[re.Pattern, re.Pattern | None]], dict[str, str]]:
    """Read and validate a rules file: the arguments of RuleSet after its path."""
    data = _read_yaml(path)
    ck = _Checker(path)
    ck.keys(data, "", _TOP_KEYS, required=_REQUIRED_TOP_KEYS)
    macros = data.get("macros") or {}
    ck.keys(macros, "macros", macros.keys() if isinstance(macros, dict) else ())
    macros = _resolve_macros(ck, macros)
    info = _parse_category_info(ck, data["category_info"])
    return (info, _parse_rules(ck, data["categories"], macros, tuple(info)), _parse_idioms(ck, data["idioms"], macros),
            _parse_suppression(ck, data), _parse_screening(ck, data["reply_screening"], macros),
            _parse_replacements(ck, data["replacements"]))


CATEGORIES: tuple[str, ...] = tuple(read_category_info())     # the default file's categories, in order
