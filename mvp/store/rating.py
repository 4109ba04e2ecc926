"""The rating settings, declared once: dimensions (id, name, hint) and tags from config/rating.yaml.

Everything that knows about rating dimensions reads them from here: the store (score validation,
the JSON ``scores`` column expanded to one key per dimension, dashboard labels), the service, the
UI's sliders and the ``/rate`` API's arguments. Adding a dimension is an edit of the YAML file and
nothing else; a dimension removed from the file keeps its stored scores (they are still exported).

    from mvp.store.rating import load_rating_config
    config = load_rating_config("config/rating.yaml")
    config.dimensions["empathy"].name     # "共情"
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mvp.paths import CONFIG_DIR

from .errors import StoreError

RATING_FILE = CONFIG_DIR / "rating.yaml"
# A dimension id becomes a JSON key, an API argument and an element id: keep it a plain identifier,
# and never one of the other arguments of a rating.
_DIMENSION_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_NAMES = ("message_id", "rater", "tags", "comment", "rewrite", "scores", "allowed_tags", "request")
MAX_DIMENSIONS = 20


class RatingConfigError(StoreError):
    """config/rating.yaml is missing or malformed: the message names the file and the key."""


@dataclass(frozen=True)
class Dimension:
    id: str
    name: str
    hint: str = ""

    @property
    def label(self) -> str:
        """How an error message names the score (e.g. 总体评分)."""
        return f"{self.name}评分"


@dataclass(frozen=True)
class RatingConfig:
    dimensions: dict[str, Dimension]
    tags: tuple[str, ...]

    @property
    def dimension_ids(self) -> tuple[str, ...]:
        return tuple(self.dimensions)

    def label_of(self, dimension_id: str) -> str:
        """The clinicians' name of a dimension (the id itself for one no longer in the file)."""
        dim = self.dimensions.get(dimension_id)
        return dim.name if dim else dimension_id


def _dimension(path: Path, key: Any, value: Any) -> Dimension:
    if not isinstance(key, str) or not _DIMENSION_ID.match(key) or key in RESERVED_NAMES:
        raise RatingConfigError(
            f"{path}: 评分维度 {key!r} 的 id 必须是小写字母开头的 a-z、0-9、_（最多 32 个字符），且不能是 "
            f"{'、'.join(RESERVED_NAMES)}")
    if not isinstance(value, dict) or set(value) - {"name", "hint"}:
        raise RatingConfigError(f"{path}: dimensions.{key} 必须是 {{name: ..., hint: ...}}")
    name, hint = value.get("name"), value.get("hint") or ""
    if not isinstance(name, str) or not name.strip() or not isinstance(hint, str):
        raise RatingConfigError(f"{path}: dimensions.{key}.name 必须是非空文本")
    return Dimension(key, name.strip(), hint.strip())


def load_rating_config(path: str | Path = RATING_FILE) -> RatingConfig:
    """Read and check the rating settings; every problem is a RatingConfigError naming the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RatingConfigError(f"{path}: 无法读取评分设置：{exc}") from None
    if not isinstance(data, dict) or set(data) - {"dimensions", "tags"}:
        raise RatingConfigError(f"{path}: 只允许 dimensions 和 tags 两个键")
    dims = data.get("dimensions") or {}
    if not isinstance(dims, dict) or not 1 <= len(dims) <= MAX_DIMENSIONS:
        raise RatingConfigError(f"{path}: dimensions 必须是 1 到 {MAX_DIMENSIONS} 个评分维度的映射")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags) \
            or len(set(tags)) != len(tags):
        raise RatingConfigError(f"{path}: tags 必须是不重复的非空字符串列表")
    return RatingConfig({k: _dimension(path, k, v) for k, v in dims.items()}, tuple(tags))


@functools.lru_cache(maxsize=1)
def default_rating_config() -> RatingConfig:
    """config/rating.yaml, read once per process."""
    return load_rating_config(RATING_FILE)
