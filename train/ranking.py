"""Bradley–Terry ranking of model versions from the blind arena, with bootstrap intervals and counts.

    python -m train.ranking --db feedback.db            # a table
    python -m train.ranking --db feedback.db --json
    python -m train.evaluate --ranking --db feedback.db # the same table

Input: the store's ``arena_outcomes()``, one row per comparison of replies from two different
versions. A decisive choice is a win for one version; a tie ("tie") is half a win for each side
(each decisive comparison enters the fit twice, a tie once in each direction); "both_bad" says
nothing about which is better and is left out of the fit (it is counted). Strengths are choix's
``ilsr_pairwise`` log-strengths with a small regularisation (``alpha``), centred at 0: version i
beats version j with probability 1 / (1 + exp(s_j - s_i)). Intervals: percentile bootstrap over
comparisons (resampled with replacement, fixed seed). A version with no decisive comparison has no
strength. Pairwise win rates carry a Wilson 95 % interval.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter

import numpy as np

ALPHA = 0.01
RESAMPLES = 500
SEED = 16
CONFIDENCE = 0.95


def _pairs(outcomes: list[dict], index: dict[int, int]) -> list[tuple[int, int]]:
    data = []
    for o in outcomes:
        a, b = index[o["version_a"]], index[o["version_b"]]
        if o["choice"] == "a":
            data += [(a, b), (a, b)]
        elif o["choice"] == "b":
            data += [(b, a), (b, a)]
        elif o["choice"] == "tie":
            data += [(a, b), (b, a)]
    return data


def _fit(n: int, data: list[tuple[int, int]], alpha: float) -> np.ndarray:
    import choix

    if not data:
        return np.zeros(n)
    try:
        params = choix.ilsr_pairwise(n, data, alpha=alpha)
    except RuntimeError:  # did not converge: the slower optimiser
        params = choix.opt_pairwise(n, data, alpha=alpha)
    return np.asarray(params) - np.mean(params)


def wilson(wins: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None when n = 0)."""
    if n <= 0:
        return None
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rank(outcomes: list[dict], versions: list[dict] | None = None, *, alpha: float = ALPHA,
         resamples: int = RESAMPLES, seed: int = SEED) -> list[dict]:
    """Versions ranked by Bradley–Terry strength (strongest first), each with its interval and counts."""
    labels = {v["id"]: v for v in versions or []}
    ids = sorted({o["version_a"] for o in outcomes} | {o["version_b"] for o in outcomes})
    index = {v: i for i, v in enumerate(ids)}
    counts = {v: Counter() for v in ids}
    for o in outcomes:
        a, b, choice = o["version_a"], o["version_b"], o["choice"]
        for me, other in ((a, b), (b, a)):
            counts[me]["comparisons"] += 1
            if choice in ("tie", "both_bad"):
                counts[me][choice] += 1
            else:
                counts[me]["wins" if (choice == "a") == (me == a) else "losses"] += 1
    decisive = {v for v in ids if counts[v]["wins"] + counts[v]["losses"] + counts[v]["tie"] > 0}
    strength = _fit(len(ids), _pairs(outcomes, index), alpha)
    rng = np.random.default_rng(seed)
    boots = np.empty((resamples, len(ids)))
    for r in range(resamples):
        sample = [outcomes[i] for i in rng.integers(0, len(outcomes), size=len(outcomes))]
        boots[r] = _fit(len(ids), _pairs(sample, index), alpha)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = (np.percentile(boots, [tail, 100 - tail], axis=0) if resamples else (strength, strength))
    rows = []
    for v in ids:
        i, c = index[v], counts[v]
        known = v in decisive
        rows.append({
            "version_id": v, "label": (labels.get(v) or {}).get("label") or f"版本 {v}",
            "status": (labels.get(v) or {}).get("status"),
            "strength": float(strength[i]) if known else None,
            "ci": [float(min(low[i], strength[i])), float(max(high[i], strength[i]))] if known else None,
            "comparisons": c["comparisons"], "wins": c["wins"], "losses": c["losses"],
            "ties": c["tie"], "both_bad": c["both_bad"],
        })
    rows.sort(key=lambda r: (r["strength"] is None, -(r["strength"] or 0.0), r["version_id"]))
    for n, row in enumerate(rows, 1):
        row["rank"] = n if row["strength"] is not None else None
    return rows


def pairwise(win_rates: list[dict]) -> list[dict]:
    """The store's ``win_rates()`` rows with a Wilson interval on the decisive win rate."""
    out = []
    for w in win_rates:
        decisive = w["wins_a"] + w["wins_b"]
        out.append({**w, "decisive": decisive, "win_rate_ci": list(wilson(w["wins_a"], decisive) or []) or None})
    return out


def from_store(store, include_demo: bool = False, **kwargs) -> dict:
    """{"ranking", "pairs", "comparisons"} for a Store (used by the dashboard and the CLIs)."""
    outcomes = store.arena_outcomes(include_demo=include_demo)
    return {"ranking": rank(outcomes, store.list_model_versions(), **kwargs),
            "pairs": pairwise(store.win_rates(include_demo=include_demo)), "comparisons": len(outcomes)}


def _ci(ci) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "—"


def table(result: dict) -> str:
    rows = result["ranking"]
    if not rows:
        return "还没有不同模型版本之间的盲评比较，无法排名（在应用“对话与评分”中选择“比较对象”）"
    lines = [f"Bradley–Terry 排名（{result['comparisons']} 次比较；强度为对数尺度，0 = 平均；95% 自助法区间）",
             f"{'名次':<5}{'版本':<28}{'强度':>8}  {'95% 区间':<18}{'比较':>5}{'胜':>5}{'负':>5}{'平':>5}{'都不好':>6}"]
    for r in rows:
        strength = f"{r['strength']:+.2f}" if r["strength"] is not None else "—"
        name = f"{r['version_id']} {r['label']}"[:26]
        lines.append(f"{r['rank'] or '—'!s:<5}{name:<28}{strength:>8}  {_ci(r['ci']):<18}{r['comparisons']:>5}"
                     f"{r['wins']:>5}{r['losses']:>5}{r['ties']:>5}{r['both_bad']:>6}")
    lines.append("区间重叠的版本之间没有可靠的差别；比较少于约 30 次时区间很宽，排名只是初步的")
    for p in result["pairs"]:
        ci = p["win_rate_ci"]
        rate = f"{p['win_rate_a']:.0%}（95% 区间 {ci[0]:.0%}–{ci[1]:.0%}）" if ci else "—"
        lines.append(f"  {p['pair']}：前者胜率 {rate}，{p['n']} 次比较（{p['wins_a']}:{p['wins_b']}，"
                     f"平 {p['ties']}，都不好 {p['both_bad']}）")
    return "\n".join(lines)


def main(argv=None) -> int:
    from pathlib import Path

    from mvp.store import Store, StoreError

    p = argparse.ArgumentParser(prog="python -m train.ranking", description="模型版本的 Bradley–Terry 排名（盲评比较）")
    p.add_argument("--db", default="feedback.db", help="应用的数据库 feedback.db")
    p.add_argument("--include-demo", action="store_true", help="也计入演示对话里的比较")
    p.add_argument("--json", action="store_true", help="以 JSON 输出")
    args = p.parse_args(argv)
    if not Path(args.db).is_file():
        print(f"错误：找不到数据库 {args.db}", file=sys.stderr)
        return 2
    try:
        result = from_store(Store(args.db), include_demo=args.include_demo)
    except StoreError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
