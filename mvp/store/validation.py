"""Input limits and validators for the feedback store.

Pure functions, no database: each returns the cleaned value or raises ``ValidationError`` with a Chinese
message naming the field and the value received, so that nothing half-checked reaches a transaction.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from .errors import ValidationError

# Limits (characters unless stated).
MAX_MESSAGE_CHARS = 4000  # a client message or an expert rewrite typed by a person
MAX_REPLY_CHARS = 16000  # a model reply: longer than a person types, never silently cut
MAX_COMMENT_CHARS = 2000
MAX_TAG_CHARS = 32
MAX_TAGS = 20
MAX_USER_NAME_CHARS = 64
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256
MAX_LABEL_CHARS = 200  # stage ids, case ids, titles, model labels, categories, paths
MAX_JSON_CHARS = 100_000  # gen_params / metrics / safety / evidence / manifests, serialised
MIN_SCORE, MAX_SCORE = 1, 5
MIN_ITEM_SCORE, MAX_ITEM_SCORE = 0, 3  # PHQ-9 / GAD-7 item scale
MAX_ASSESSMENT_ITEMS = 50
MAX_LIST_LIMIT = 10_000

ROLES = ("clinician", "admin", "demo")
MESSAGE_ROLES = ("user", "assistant", "system-notice")
MESSAGE_STATUSES = ("complete", "interrupted", "blocked")
BACKENDS = ("inprocess", "openai")
RELEASE_STATUSES = ("candidate", "servable", "refused")  # model_versions.status (release gate)
CHOICES = ("a", "b", "tie", "both_bad")
THUMB_VALUES = (1, -1, 0)
FLAG_SOURCES = ("rules", "model", "output_screen", "assessment", "manual")
AUDIT_ACTIONS = ("flag_reviewed", "export", "conversation_deleted", "account_added", "account_disabled",
                 "account_enabled", "password_changed", "retention_purge", "account_unlocked", "rating_batch_created",
                 "version_promoted_anyway")
ASSESSMENT_STATUSES = ("in_progress", "finished", "abandoned")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Characters that change how text looks without being seen: bidi embeddings/overrides/isolates
# (U+202E makes "gpj.exe" read as "exe.jpg") are refused; zero-width characters are removed.
_BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _check_encodable(value: str, what: str) -> None:
    # A lone surrogate (possible in JSON sent to the API) cannot be stored as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what}包含无效的 Unicode 字符") from None


def show(value: Any, limit: int = 40) -> str:
    """A short, safe rendering of a received value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_ROW_ID = 2**63 - 1  # SQLite INTEGER range: a larger id could never exist (and overflows the driver)


def check_id(value: Any, what: str) -> int:
    """A positive integer row id (bools and numeric strings refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ROW_ID:
        raise ValidationError(f"{what}必须是正整数，收到 {show(value)}")
    return value


def check_optional_id(value: Any, what: str) -> int | None:
    return None if value is None else check_id(value, what)


def check_text(
    value: Any,
    what: str,
    max_chars: int,
    *,
    allow_empty: bool = False,
    single_line: bool = False,
) -> str:
    """A string within ``max_chars``; newlines and tabs allowed unless ``single_line``."""
    if not isinstance(value, str):
        raise ValidationError(f"{what}必须是文本，收到 {show(value)}")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{what}不能为空")
    if len(value) > max_chars:
        raise ValidationError(f"{what}过长：最多 {max_chars} 个字符，收到 {len(value)} 个")
    _check_encodable(value, what)
    pattern = _CONTROL if single_line else _CONTROL_EXCEPT_WHITESPACE
    bad = pattern.search(value)
    if bad:
        raise ValidationError(f"{what}包含不允许的控制字符 {show(bad.group())}")
    return value


def check_message(value: Any, what: str = "消息", max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """A message a person typed (a client message): THE validator, applied once where the text enters
    (the service, before anything is stored; the store re-applies it). Surrounding whitespace is
    trimmed and zero-width characters removed; empty text, text over ``max_chars``, control
    characters (C0 and C1) and bidirectional overrides are refused."""
    if not isinstance(value, str):
        raise ValidationError(f"{what}必须是文本，收到 {show(value)}")
    text = value.translate(_ZERO_WIDTH).strip()
    c1 = re.search(r"[\x80-\x9f]", text)
    if c1:
        raise ValidationError(f"{what}包含不允许的控制字符 {show(c1.group())}")
    bidi = _BIDI_CONTROLS.search(text)
    if bidi:
        raise ValidationError(f"{what}包含不允许的文字方向控制字符 {show(bidi.group())}，请删除后重新输入")
    if not text:
        raise ValidationError(f"{what}不能为空")
    return check_text(text, what, max_chars)


def check_optional_text(value: Any, what: str, max_chars: int) -> str | None:
    """None, or non-blank text; an empty or blank string (an untouched textbox) becomes None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_text(value, what, max_chars)


def check_label(value: Any, what: str, max_chars: int = MAX_LABEL_CHARS) -> str:
    """A one-line label (stage id, category, title...): trimmed, not empty."""
    text = check_text(value, what, max_chars, single_line=True).strip()
    return text


def check_optional_label(value: Any, what: str, max_chars: int = MAX_LABEL_CHARS) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_label(value, what, max_chars)


def check_choice(value: Any, what: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(f"{what}必须是 {'、'.join(allowed)} 之一，收到 {show(value)}")
    return value


def check_identifier(value: Any, what: str) -> str:
    """A short ASCII identifier such as an instrument name (phq9) or a scoring method (rules)."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ValidationError(f"{what}必须是 1-64 个字母、数字或 _.:- 组成的标识，收到 {show(value)}")
    return value


def check_user_name(value: Any) -> str:
    """An account name: 1-64 characters, no control characters, no surrounding spaces."""
    if not isinstance(value, str):
        raise ValidationError(f"用户名必须是文本，收到 {show(value)}")
    name = unicodedata.normalize("NFC", value)
    if not name:
        raise ValidationError("用户名不能为空")
    if len(name) > MAX_USER_NAME_CHARS:
        raise ValidationError(f"用户名过长：最多 {MAX_USER_NAME_CHARS} 个字符，收到 {len(name)} 个")
    if _CONTROL.search(name):
        raise ValidationError("用户名不能包含控制字符")
    if name != name.strip():
        raise ValidationError(f"用户名首尾不能有空格：{show(name)}")
    _check_encodable(name, "用户名")
    return name


def check_password(value: Any) -> str:
    """A password: 8-256 characters, no control characters."""
    if not isinstance(value, str):
        raise ValidationError("密码必须是文本")
    if len(value) < MIN_PASSWORD_CHARS:
        raise ValidationError(f"密码太短：至少 {MIN_PASSWORD_CHARS} 个字符，收到 {len(value)} 个")
    if len(value) > MAX_PASSWORD_CHARS:
        raise ValidationError(f"密码过长：最多 {MAX_PASSWORD_CHARS} 个字符")
    if _CONTROL.search(value):
        raise ValidationError("密码不能包含控制字符")
    _check_encodable(value, "密码")
    return value


def _check_int_in(value: Any, what: str, low: int, high: int) -> int:
    # bool is an int subclass and float 3.0 "looks" valid: both are refused, as are NaN and strings.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{what}必须是 {low}-{high} 的整数，收到 {show(value)}")
    return value


def check_score(value: Any, what: str) -> int | None:
    """A rating score: None (not given) or an int 1-5."""
    return None if value is None else _check_int_in(value, what, MIN_SCORE, MAX_SCORE)


def check_scores(scores: Any, labels: dict[str, str]) -> dict[str, int]:
    """Rating scores ``{dimension id: 1-5 or None}`` -> the given ones; ``labels`` maps each known
    dimension id to the name used in messages (e.g. 总体评分). An unknown dimension is refused."""
    if scores is None:
        return {}
    if not isinstance(scores, dict):
        raise ValidationError(f"评分必须是 {{维度: 分数}} 的映射，收到 {show(scores)}")
    unknown = [k for k in scores if k not in labels]
    if unknown:
        raise ValidationError(f"未知的评分维度：{'、'.join(map(str, unknown))}（可选：{'、'.join(labels)}）")
    checked = {d: check_score(scores.get(d), label) for d, label in labels.items()}
    return {d: v for d, v in checked.items() if v is not None}


def check_item_score(value: Any, what: str, *, optional: bool = True) -> int | None:
    """An assessment item score: an int 0-3 (None = the scorer could not tell)."""
    if value is None and optional:
        return None
    return _check_int_in(value, what, MIN_ITEM_SCORE, MAX_ITEM_SCORE)


def check_non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what}必须是非负整数，收到 {show(value)}")
    return value


def check_limit(value: Any) -> int:
    return _check_int_in(value, "数量上限", 1, MAX_LIST_LIMIT)


def check_tags(tags: Any, allowed_tags: Iterable[str] | None) -> list[str]:
    """A list of tag strings: trimmed, de-duplicated in order, each from ``allowed_tags`` when given."""
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)):
        raise ValidationError(f"标签必须是文本列表，收到 {show(tags)}")
    allowed = None if allowed_tags is None else list(allowed_tags)
    cleaned: list[str] = []
    for tag in tags:
        text = check_label(tag, "标签", MAX_TAG_CHARS)
        if allowed is not None and text not in allowed:
            raise ValidationError(f"未知标签：{text}（可选：{'、'.join(allowed)}）")
        if text not in cleaned:
            cleaned.append(text)
    if len(cleaned) > MAX_TAGS:
        raise ValidationError(f"标签过多：最多 {MAX_TAGS} 个，收到 {len(cleaned)} 个")
    return cleaned


def to_json(value: Any, what: str, *, expect: type | tuple[type, ...] = dict) -> str | None:
    """Serialise a JSON field (None stays NULL); NaN/Infinity and non-JSON values are refused."""
    if value is None:
        return None
    if not isinstance(value, expect):
        raise ValidationError(f"{what}必须是 JSON 对象（dict/list），收到 {show(value)}")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what}不能保存为 JSON（不允许 NaN、无穷大或非 JSON 类型）：{exc}") from None
    if len(text) > MAX_JSON_CHARS:
        raise ValidationError(f"{what}过大：JSON 最多 {MAX_JSON_CHARS} 个字符，收到 {len(text)} 个")
    return text


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
