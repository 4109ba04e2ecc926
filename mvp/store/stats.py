"""Dashboard figures as plain lists of dicts (ready for gr.BarPlot / gr.LinePlot via a DataFrame).

All figures use the rating that counts (the latest revision per reply and rater) except
``ratings_per_day``, which counts every submission. Demo conversations are left out unless asked.
"""

from __future__ import annotations

import json
from typing import Any

from .base import StoreBase
from .errors import ValidationError
from .validation import show

DEFAULT_UTC_OFFSET_HOURS = 8  # clinicians work in China time: a "day" is a Beijing day
_DEMO = "(? OR c.is_demo = 0)"


class StatsMixin(StoreBase):
    def ratings_per_day(
        self, utc_offset_hours: float = DEFAULT_UTC_OFFSET_HOURS, include_demo: bool = False
    ) -> list[dict[str, Any]]:
        """``[{"day": "2026-11-27", "ratings": n}]``: rating submissions (revisions included) per
        local day."""
        if isinstance(utc_offset_hours, bool) or not isinstance(utc_offset_hours, (int, float)) \
                or not -14 <= utc_offset_hours <= 14:
            raise ValidationError(f"时区偏移必须是 -14 到 14 之间的小时数，收到 {show(utc_offset_hours)}")
        modifier = f"{int(round(utc_offset_hours * 60)):+d} minutes"
        with self._read() as conn:
            return self._rows(
                conn,
                "SELECT date(r.created_at, ?) AS day, COUNT(*) AS ratings"
                " FROM ratings r JOIN messages m ON m.id = r.message_id"
                f" JOIN conversations c ON c.id = m.conversation_id WHERE {_DEMO}"
                " GROUP BY day ORDER BY day",
                (modifier, include_demo),
            )

    def mean_scores_by_version(self, include_demo: bool = False) -> list[dict[str, Any]]:
        """Long format: ``[{"model_version_id", "label", "dimension", "dimension_label", "mean", "n"}]``
        (dimensions with no scores are left out)."""
        with self._read() as conn:
            rows = self._rows(
                conn,
                "SELECT m.model_version_id, COALESCE(v.label, '未登记') AS label, j.key AS dimension,"
                " AVG(j.value) AS mean, COUNT(*) AS n"
                " FROM ratings r JOIN json_each(r.scores) j JOIN messages m ON m.id = r.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                " LEFT JOIN model_versions v ON v.id = m.model_version_id"
                f" WHERE r.is_latest = 1 AND {_DEMO} GROUP BY m.model_version_id, j.key",
                (include_demo,),
            )
        rating = self.rating  # type: ignore[attr-defined]  (FeedbackMixin)
        order = {d: i for i, d in enumerate(rating.dimension_ids)}
        rows.sort(key=lambda r: (r["model_version_id"] is not None, r["model_version_id"] or 0,
                                 order.get(r["dimension"], len(order)), r["dimension"]))
        result = [{"model_version_id": r["model_version_id"], "label": r["label"], "dimension": r["dimension"],
                   "dimension_label": rating.label_of(r["dimension"]), "mean": round(r["mean"], 3), "n": r["n"]}
                  for r in rows]
        return result

    def win_rates(self, include_demo: bool = False) -> list[dict[str, Any]]:
        """Blind-arena results between model versions, one row per pair (lower id first):
        ``wins_a``/``wins_b`` for versions ``version_a``/``version_b``, ``ties``, ``both_bad``, ``n``
        and ``win_rate_a`` = wins_a / (wins_a + wins_b) (None when no decisive comparison).
        Comparisons of two replies from the same version are left out."""
        with self._read() as conn:
            rows = self._rows(
                conn,
                "SELECT a.model_version_id AS va, b.model_version_id AS vb, k.choice, COUNT(*) AS n"
                " FROM comparisons k JOIN messages a ON a.id = k.message_a"
                " JOIN messages b ON b.id = k.message_b JOIN conversations c ON c.id = a.conversation_id"
                f" WHERE a.model_version_id IS NOT NULL AND b.model_version_id IS NOT NULL"
                f" AND a.model_version_id != b.model_version_id AND {_DEMO}"
                " GROUP BY va, vb, k.choice",
                (include_demo,),
            )
            labels = dict(conn.execute("SELECT id, label FROM model_versions").fetchall())
        pairs: dict[tuple[int, int], dict[str, Any]] = {}
        for row in rows:
            low, high = sorted((row["va"], row["vb"]))
            entry = pairs.setdefault((low, high), {
                "version_a": low, "label_a": labels.get(low), "version_b": high,
                "label_b": labels.get(high), "pair": f"{labels.get(low)} vs {labels.get(high)}",
                "wins_a": 0, "wins_b": 0, "ties": 0, "both_bad": 0, "n": 0,
            })
            choice, n = row["choice"], row["n"]
            entry["n"] += n
            if choice in ("tie", "both_bad"):
                entry["ties" if choice == "tie" else "both_bad"] += n
            else:
                winner = row["va"] if choice == "a" else row["vb"]
                entry["wins_a" if winner == low else "wins_b"] += n
        result = []
        for entry in sorted(pairs.values(), key=lambda e: (e["version_a"], e["version_b"])):
            decisive = entry["wins_a"] + entry["wins_b"]
            entry["win_rate_a"] = round(entry["wins_a"] / decisive, 4) if decisive else None
            result.append(entry)
        return result

    def tag_frequencies(self, include_demo: bool = False) -> list[dict[str, Any]]:
        """``[{"tag", "count"}]`` over current ratings, most frequent first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT r.tags FROM ratings r JOIN messages m ON m.id = r.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                f" WHERE r.is_latest = 1 AND r.tags != '[]' AND {_DEMO}",
                (include_demo,),
            ).fetchall()
        counts: dict[str, int] = {}
        for (tags,) in rows:
            for tag in json.loads(tags):
                counts[tag] = counts.get(tag, 0) + 1
        return [{"tag": t, "count": n} for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def clinician_activity(self) -> list[dict[str, Any]]:
        """Per account: ``conversations`` owned, ``rated_messages`` (replies it rated),
        ``thumbs`` given, and ``unrated_replies`` (replies in its own conversations it has not rated)."""
        with self._read() as conn:
            # One grouped pass per table (no per-user subqueries): stays fast at 200k ratings.
            rows = self._rows(
                conn,
                "SELECT u.name AS user, u.role, u.disabled, COALESCE(cv.n, 0) AS conversations,"
                " COALESCE(rt.n, 0) AS rated_messages, COALESCE(th.n, 0) AS thumbs,"
                " COALESCE(ur.n, 0) AS unrated_replies FROM users u"
                " LEFT JOIN (SELECT user_name, COUNT(*) AS n FROM conversations GROUP BY user_name) cv"
                "   ON cv.user_name = u.name"
                " LEFT JOIN (SELECT rater, COUNT(*) AS n FROM ratings WHERE is_latest = 1"
                "   GROUP BY rater) rt ON rt.rater = u.name"
                " LEFT JOIN (SELECT rater, COUNT(*) AS n FROM thumbs WHERE value != 0"
                "   GROUP BY rater) th ON th.rater = u.name"
                " LEFT JOIN (SELECT c.user_name, COUNT(*) AS n FROM messages m"
                "   JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'assistant'"
                "   AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.message_id = m.id"
                "   AND r.rater = c.user_name) GROUP BY c.user_name) ur ON ur.user_name = u.name"
                " ORDER BY u.name",
            )
        for row in rows:
            row["disabled"] = bool(row["disabled"])
        return rows

    def summary_counts(self) -> dict[str, int]:
        """Headline numbers for the dashboard."""
        queries = {
            "users": "SELECT COUNT(*) FROM users",
            "conversations": "SELECT COUNT(*) FROM conversations",
            "user_messages": "SELECT COUNT(*) FROM messages WHERE role = 'user'",
            "replies": "SELECT COUNT(*) FROM messages WHERE role = 'assistant'",
            "ratings": "SELECT COUNT(*) FROM ratings WHERE is_latest = 1",
            "rated_replies": "SELECT COUNT(DISTINCT message_id) FROM ratings",
            "comparisons": "SELECT COUNT(*) FROM comparisons",
            "open_flags": "SELECT COUNT(*) FROM flags WHERE reviewed_at IS NULL",
        }
        with self._read(snapshot=True) as conn:
            return {key: int(conn.execute(sql).fetchone()[0]) for key, sql in queries.items()}

    def arena_outcomes(self, include_demo: bool = False) -> list[dict[str, Any]]:
        """One row per blind comparison between two different model versions, oldest first:
        ``version_a``/``version_b`` (the versions of message_a/message_b) and ``choice``
        ('a', 'b', 'tie', 'both_bad'); the input of the Bradley-Terry ranking (train/ranking.py)."""
        with self._read() as conn:
            return self._rows(
                conn,
                "SELECT a.model_version_id AS version_a, b.model_version_id AS version_b, k.choice"
                " FROM comparisons k JOIN messages a ON a.id = k.message_a"
                " JOIN messages b ON b.id = k.message_b JOIN conversations c ON c.id = a.conversation_id"
                " WHERE a.model_version_id IS NOT NULL AND b.model_version_id IS NOT NULL"
                f" AND a.model_version_id != b.model_version_id AND {_DEMO} ORDER BY k.id",
                (include_demo,),
            )
