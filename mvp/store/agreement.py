"""Agreement between raters (Krippendorff's alpha), computed from rows the store reads. No SQL here.

Pure functions over plain dicts, so that the dashboard (mvp/app), ``python -m train.agreement`` and the
export's rater weighting (train/) use one computation. The formula is the ``krippendorff`` package's
(``krippendorff.alpha(reliability_data=raters x units, level_of_measurement=...)``), not ours:

- each rating dimension of config/rating.yaml: interval alpha over the latest score per (reply, rater);
- thumbs (up / down): nominal alpha per reply;
- pairwise choices: nominal alpha per unordered pair of replies compared by several raters (the value
  is which of the two won, a tie, or "both bad"; each rater's latest choice counts);
- per rater, "this rater against the others": alpha of a two-row matrix, the rater's values and the
  consensus of the OTHER raters on the same units (their median for interval data, their majority for
  nominal data; no majority: the unit is left out). It answers "does this rater agree with the rest",
  and is what the export compares with ``--min-rater-alpha``. With only two others the median is
  their mean, so one outlier among three raters also lowers the other two: use k >= 4 for that.

An alpha needs at least ``MIN_UNITS`` units with two or more values each and more than one distinct
value; otherwise ``alpha`` is None and ``note`` says why (never NaN). Read alpha as Krippendorff
advises: >= 0.8 reliable, 0.667-0.8 tentative, below that do not rely on the data; and look at
``n_items``: an alpha over five replies says little.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

MIN_UNITS = 2
RELIABLE, TENTATIVE = 0.8, 0.667
LEVELS = ("interval", "nominal")
THUMBS, COMPARISONS = "thumbs", "comparisons"
CHOICE_CODES = {"first": 0, "second": 1, "tie": 2, "both_bad": 3}  # pair (lower id, higher id)

Table = dict[str, dict[Any, float]]  # rater -> unit -> value


def verdict(alpha: float | None) -> str:
    """How to read an alpha, in the clinicians' words."""
    if alpha is None:
        return "无法计算"
    if alpha >= RELIABLE:
        return "可信"
    if alpha >= TENTATIVE:
        return "初步可信"
    return "不可信"


def _matrix(table: Table) -> tuple[list[str], list[Any], list[list[float]]]:
    raters = sorted(table)
    units = sorted({u for values in table.values() for u in values}, key=lambda u: (str(type(u)), u))
    rows = [[float(table[r].get(u, math.nan)) for u in units] for r in raters]
    return raters, units, rows


def alpha(table: Table, level: str) -> dict[str, Any]:
    """``{"alpha", "n_items", "n_values", "n_raters", "verdict", "note"}`` for rater -> unit -> value."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    per_unit: dict[Any, list[float]] = {}
    for values in table.values():
        for unit, value in values.items():
            per_unit.setdefault(unit, []).append(float(value))
    pairable = {u: v for u, v in per_unit.items() if len(v) >= 2}
    raters = {r for r, values in table.items() if any(u in pairable for u in values)}
    result: dict[str, Any] = {"alpha": None, "n_items": len(pairable),
                              "n_values": sum(len(v) for v in pairable.values()), "n_raters": len(raters),
                              "note": None}
    if len(pairable) < MIN_UNITS:
        result["note"] = (f"重叠不足：只有 {len(pairable)} 项被至少两位评分者评过（至少需要 {MIN_UNITS} 项）"
                          " / not enough overlap")
    elif len({x for v in pairable.values() for x in v}) < 2:
        result["note"] = "所有评分都相同，一致性无定义 / every value is the same, alpha is undefined"
    else:
        import krippendorff  # numpy-heavy: imported when first needed

        _, _, rows = _matrix({r: {u: x for u, x in values.items() if u in pairable} for r, values in table.items()})
        result["alpha"] = round(float(krippendorff.alpha(reliability_data=rows, level_of_measurement=level)), 4)
    result["verdict"] = verdict(result["alpha"])
    return result


def consensus(values: list[float], level: str) -> float | None:
    """The other raters' value of a unit: median (interval: one outlying rater among three or more
    others does not move it) or majority (nominal; None on a tie)."""
    if not values:
        return None
    if level == "interval":
        return float(statistics.median(values))
    ranked = Counter(values).most_common()
    return None if len(ranked) > 1 and ranked[0][1] == ranked[1][1] else ranked[0][0]


def rater_alpha(table: Table, rater: str, level: str) -> dict[str, Any]:
    """This rater against the consensus of the others (see the module docstring)."""
    others: dict[Any, float] = {}
    for unit in table.get(rater, {}):
        value = consensus([v[unit] for r, v in table.items() if r != rater and unit in v], level)
        if value is not None:
            others[unit] = value
    own = {u: x for u, x in table.get(rater, {}).items() if u in others}
    return alpha({rater: own, "(others)": others}, level)


# -- tables from the store's rows ---------------------------------------------------------------
def score_tables(ratings: Iterable[dict], dimensions: Iterable[str]) -> dict[str, Table]:
    """dimension -> rater -> message id -> score, from latest-rating rows with one key per dimension."""
    tables: dict[str, Table] = {d: {} for d in dimensions}
    for row in ratings:
        for dim, table in tables.items():
            if row.get(dim) is not None:
                table.setdefault(row["rater"], {})[row["message_id"]] = float(row[dim])
    return tables


def thumb_table(thumbs: Iterable[dict]) -> Table:
    table: Table = {}
    for row in thumbs:
        if row["value"]:
            table.setdefault(row["rater"], {})[row["message_id"]] = float(row["value"])
    return table


def comparison_table(comparisons: Iterable[dict]) -> Table:
    """rater -> (lower id, higher id) -> choice code; a rater's later choice on a pair replaces the earlier."""
    table: Table = {}
    for row in sorted(comparisons, key=lambda r: r["id"]):
        low, high = sorted((row["message_a"], row["message_b"]))
        choice = row["choice"]
        if choice in ("a", "b"):
            winner = row["message_a"] if choice == "a" else row["message_b"]
            choice = "first" if winner == low else "second"
        table.setdefault(row["rater"], {})[(low, high)] = float(CHOICE_CODES[choice])
    return table


def gold_agreement(rows: Iterable[dict]) -> list[dict[str, Any]]:
    """Per rater: how many gold checks (expected thumb, minimum or maximum overall score) their
    judgements met. Rows: ``assignee``, ``gold`` (dict), ``thumb`` (0 = none), ``overall``."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        gold, entry = row["gold"] or {}, counts.setdefault(row["assignee"], [0, 0])
        checks = []
        if "thumb" in gold and row.get("thumb"):
            checks.append(row["thumb"] == gold["thumb"])
        if "min_overall" in gold and row.get("overall") is not None:
            checks.append(row["overall"] >= gold["min_overall"])
        if "max_overall" in gold and row.get("overall") is not None:
            checks.append(row["overall"] <= gold["max_overall"])
        entry[0] += len(checks)
        entry[1] += sum(checks)
    return [{"rater": r, "checks": n, "agree": k, "rate": round(k / n, 4) if n else None}
            for r, (n, k) in sorted(counts.items())]


def report(rows: dict[str, list[dict]], dimensions: dict[str, str]) -> dict[str, Any]:
    """Everything the dashboard and the CLI show. ``rows``: ``ratings``, ``thumbs``, ``comparisons``,
    ``gold`` (as ``Store.agreement_rows`` returns them); ``dimensions``: id -> clinicians' name."""
    scores = score_tables(rows.get("ratings", []), dimensions)
    tables = {**{d: (t, "interval") for d, t in scores.items()},
              THUMBS: (thumb_table(rows.get("thumbs", [])), "nominal"),
              COMPARISONS: (comparison_table(rows.get("comparisons", [])), "nominal")}
    names = {**dimensions, THUMBS: "点赞/点踩", COMPARISONS: "两两比较"}
    measures = [{"id": key, "name": names[key], "level": level, **alpha(table, level)}
                for key, (table, level) in tables.items()]
    raters = sorted({r for table, _ in tables.values() for r in table})
    per_rater = []
    for rater in raters:
        entry = {"rater": rater, "measures": {}}
        for key, (table, level) in tables.items():
            if rater in table:
                entry["measures"][key] = rater_alpha(table, rater, level)
        per_rater.append(entry)
    return {"measures": measures, "raters": per_rater, "gold": gold_agreement(rows.get("gold", [])),
            "min_units": MIN_UNITS, "thresholds": {"reliable": RELIABLE, "tentative": TENTATIVE}}
