"""Admin-only parts of the service: the safety review queue, dashboard figures, model versions and
the training-data export. Plain rows and dicts: the UI formats them as tables.
"""

from __future__ import annotations

from pathlib import Path

from .base import ServiceBase, ServiceError


class AdminMixin(ServiceBase):
    # -- admin -----------------------------------------------------------------------------------
    def flags(self, name: str, include_reviewed: bool = False) -> list[dict]:
        self.require_admin(name)
        return self.store.list_flags(include_reviewed=include_reviewed)

    def review_flag(self, name: str, flag_id: int, note: str | None = None) -> None:
        self.require_admin(name)
        self.store.mark_flag_reviewed(flag_id, name, note=note)
        self.store.add_audit(name, "flag_reviewed", flag_id, {"note_chars": len(note or "")})

    def review_queue(self, name: str, include_reviewed: bool = False) -> list[dict]:
        """Admin: one row per flagged message (its flags merged), newest first, with the message text
        and the turn before it: ``flag_ids``, ``conversation_id``, ``message_id``, ``user_name``,
        ``categories``, ``sources``, ``message``, ``previous``, ``created_at``, ``reviewed``, ``notes``."""
        rows: dict[tuple, dict] = {}
        for f in self.flags(name, include_reviewed=include_reviewed):
            key = (f["conversation_id"], f["message_id"] or -f["id"])
            row = rows.setdefault(key, {
                "flag_ids": [], "conversation_id": f["conversation_id"], "message_id": f["message_id"],
                "user_name": f.get("user_name"), "categories": [], "sources": [], "evidence": [],
                "message": f.get("message_content") or "", "message_role": f.get("message_role"),
                "previous": "", "created_at": f["created_at"], "reviewed": True, "notes": [],
            })
            row["flag_ids"].append(f["id"])
            for c in f.get("categories") or [f["category"]]:
                if c not in row["categories"]:
                    row["categories"].append(c)
            if f["source"] not in row["sources"]:
                row["sources"].append(f["source"])
            row["evidence"] += [str(e) for e in (f.get("evidence") or []) if str(e) not in row["evidence"]]
            row["reviewed"] = row["reviewed"] and bool(f.get("reviewed_at"))
            if f.get("note"):
                row["notes"].append(f["note"])
        for row in rows.values():
            if row["message_id"]:
                parent = self.store.get_message(row["message_id"]).get("parent_id")
                row["previous"] = self.store.get_message(parent)["content"] if parent else ""
        return list(rows.values())

    def review_flags(self, name: str, flag_ids: list[int], note: str | None = None) -> int:
        """Admin: mark every still-open flag of one queue row reviewed; returns how many were marked."""
        open_ids = {f["id"] for f in self.flags(name)}
        marked = [int(i) for i in flag_ids if int(i) in open_ids]
        if not marked:
            raise ServiceError("这一行已经复核过了")
        for flag_id in marked:
            self.review_flag(name, flag_id, note)
        return len(marked)

    def dashboard(self, name: str) -> dict:
        """Figures for the admin dashboard as plain rows."""
        self.require_admin(name)
        store = self.store
        dims = [
            {"dimension": r["dimension_label"], "mean": r["mean"], "version": r["label"] or f"版本 {r['model_version_id']}"}
            for r in store.mean_scores_by_version()
        ]
        wins = [{"pair": r["pair"], "win_rate": r["win_rate_a"] or 0.0, "n": r["n"], "wins_a": r["wins_a"],
                 "wins_b": r["wins_b"], "ties": r["ties"] + r["both_bad"]} for r in store.win_rates()]
        return {
            "counts": store.summary_counts(),
            "per_day": store.ratings_per_day(),
            "tags": store.tag_frequencies(),
            "dims": dims,
            "wins": wins,
            "activity": store.clinician_activity(),
        }

    def version_ranking(self, name: str) -> dict:
        """Admin: Bradley–Terry strengths of the versions from the blind arena, with bootstrap
        intervals, counts and pairwise win rates (train.ranking)."""
        from train.ranking import from_store

        self.require_admin(name)
        return from_store(self.store)

    def versions(self, name: str) -> list[dict]:
        """Admin: registered model versions, newest first, each with ``serving`` (the primary one)."""
        self.require_admin(name)
        return [{**v, "serving": v["id"] == self.engines.primary_id}
                for v in reversed(self.store.list_model_versions())]

    def export_training_data(self, name: str, out_root: str | Path | None = None, include_demo: bool = False) -> dict:
        """Admin: export feedback.db as training data (train.export with its defaults; PII scrubbed)."""
        import time as _time

        from train.export import ExportError, ExportOptions, export, summary_table

        self.require_admin(name)
        out = Path(out_root or Path(self.store.path).parent / "exports") / _time.strftime("%Y%m%d-%H%M%S")
        try:
            manifest = export(self.store.path, out, ExportOptions(include_demo=bool(include_demo)))
        except ExportError as exc:
            raise ServiceError(str(exc)) from None
        self.store.add_audit(name, "export", out.name, {"include_demo": bool(include_demo),
                                                        "counts": manifest["counts"]})
        return {"path": str(out.resolve()), "summary": summary_table(manifest), "counts": manifest["counts"]}

    def audit(self, name: str, limit: int = 200) -> list[dict]:
        """Admin: the newest administrative acts (who, what, which record, when)."""
        self.require_admin(name)
        return self.store.list_audit(limit)

    def model_versions(self) -> list[dict]:
        return self.store.list_model_versions()
