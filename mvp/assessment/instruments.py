"""Screening instruments (PHQ-9, GAD-7): the 0-3 answer scale, the items, and the file they come from.

`load_instruments()` reads and validates `config/instruments.yaml` -> {id: Instrument}; a malformed
file fails with an `InstrumentError` that names the file and the key. `ItemScore` is what every
answer scorer returns (rules.py, scoring.py). Plain Python, no model, no server:

    from mvp.assessment import load_instruments
    phq9 = load_instruments()["phq9"]
    phq9.item(9).question, phq9.band(12)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mvp.paths import CONFIG_DIR

DEFAULT_INSTRUMENTS_PATH = CONFIG_DIR / "instruments.yaml"
MIN_SCORE = 0
MAX_SCORE = 3

INSTRUMENT_KEYS = {"name", "timeframe", "intro", "closing", "options", "bands", "items"}
ITEM_KEYS = {"number", "text", "question", "follow_up"}
ITEM_OPTIONAL_KEYS = {"risk_item"}
BAND_KEYS = {"min", "max", "name"}
OPTION_KEYS = {"score", "label"}


class AssessmentError(ValueError):
    """A user or caller error: bad item number, bad score, malformed saved state."""


class InstrumentError(AssessmentError):
    """A malformed instruments file; the message names the file and the key."""


@dataclass(frozen=True)
class ItemScore:
    """A score 0-3 or None, how it was obtained, how sure, and a short Chinese explanation."""

    score: int | None
    method: str
    confidence: float
    evidence: str
    needs_review: bool = False


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
