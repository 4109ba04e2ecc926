"""Model versions: what answered (base model, adapter, quantization, backend) (table ``model_versions``)."""

from __future__ import annotations

import os
from typing import Any

from .base import StoreBase
from .errors import NotFoundError
from .schema import utc_now
from .validation import (
    BACKENDS,
    RELEASE_STATUSES,
    check_choice,
    check_id,
    check_label,
    check_optional_id,
    check_optional_label,
    from_json,
    to_json,
)

_JSON_FIELDS = ("data_manifest", "metrics", "release")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for field in _JSON_FIELDS:
        row[field] = from_json(row[field])
    return row


class ModelsMixin(StoreBase):
    def register_model_version(
        self,
        base_model: str,
        adapter: str | None = None,
        quantization: str = "none",
        backend: str = "inprocess",
        served_name: str | None = None,
        base_url: str | None = None,
        *,
        label: str | None = None,
        parent_id: int | None = None,
        data_manifest: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        status: str = "servable",
    ) -> int:
        """Register a model version and return its id.

        Idempotent: the same (base_model, adapter, quantization, backend, served_name, base_url)
        returns the existing id unchanged (use ``set_model_version_metrics`` to add metrics later, and
        ``set_release_status`` to change its status). ``status``: "servable" (the default: what the
        app starts with), or "candidate" for a trained version that the release gate has to pass.
        Pass paths in one canonical form (e.g. absolute): the store compares them as text.
        """
        base_model = check_label(base_model, "基础模型")
        adapter = check_optional_label(adapter, "适配器路径")
        quantization = check_label(quantization, "量化方式", 32)
        backend = check_choice(backend, "推理后端", BACKENDS)
        served_name = check_optional_label(served_name, "服务模型名")
        base_url = check_optional_label(base_url, "服务地址")
        parent_id = check_optional_id(parent_id, "父版本 ID")
        manifest_json = to_json(data_manifest, "数据清单")
        metrics_json = to_json(metrics, "评估指标")
        status = check_choice(status, "发布状态", RELEASE_STATUSES)
        if label is None:
            label = base_model + (f"+{os.path.basename(adapter.rstrip('/'))}" if adapter else "")
            label += f" ({quantization})"
        label = check_label(label, "版本名称")
        identity = (base_model, adapter or "", quantization, backend, served_name or "", base_url or "")
        with self._write() as conn:
            existing = conn.execute(
                "SELECT id FROM model_versions WHERE base_model = ? AND COALESCE(adapter, '') = ?"
                " AND quantization = ? AND backend = ? AND COALESCE(served_name, '') = ?"
                " AND COALESCE(base_url, '') = ?",
                identity,
            ).fetchone()
            if existing:
                return int(existing[0])
            if parent_id is not None and not conn.execute(
                "SELECT 1 FROM model_versions WHERE id = ?", (parent_id,)
            ).fetchone():
                raise NotFoundError(f"父模型版本不存在：{parent_id}")
            cursor = conn.execute(
                "INSERT INTO model_versions (label, base_model, adapter, quantization, backend,"
                " served_name, base_url, parent_id, data_manifest, metrics, created_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (label, base_model, adapter, quantization, backend, served_name, base_url,
                 parent_id, manifest_json, metrics_json, utc_now(), status),
            )
            return int(cursor.lastrowid)

    def get_model_version(self, model_version_id: int) -> dict[str, Any]:
        model_version_id = check_id(model_version_id, "模型版本 ID")
        with self._read() as conn:
            row = self._row(conn, "SELECT * FROM model_versions WHERE id = ?", (model_version_id,))
        if row is None:
            raise NotFoundError(f"模型版本不存在：{model_version_id}")
        return _decode(row)

    def list_model_versions(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [_decode(r) for r in self._rows(conn, "SELECT * FROM model_versions ORDER BY id")]

    def last_served_version(self, base_model: str, backend: str = "inprocess") -> dict[str, Any] | None:
        """The version of ``base_model`` that produced the newest reply (what clinicians rated last),
        or None when no version of it has replied yet: the natural parent of the next training round."""
        with self._read() as conn:
            row = self._row(
                conn,
                "SELECT v.* FROM messages m JOIN model_versions v ON v.id = m.model_version_id"
                " WHERE m.role = 'assistant' AND v.base_model = ? AND v.backend = ?"
                " ORDER BY m.id DESC LIMIT 1",
                (base_model, backend),
            )
        return _decode(row) if row else None

    def set_model_version_metrics(self, model_version_id: int, metrics: dict[str, Any]) -> None:
        """Replace a version's metrics (evaluation runs after registration)."""
        model_version_id = check_id(model_version_id, "模型版本 ID")
        metrics_json = to_json(metrics, "评估指标")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE model_versions SET metrics = ? WHERE id = ?", (metrics_json, model_version_id)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"模型版本不存在：{model_version_id}")

    def set_release_status(self, model_version_id: int, status: str, release: dict[str, Any] | None = None) -> None:
        """Set a version's release status ("candidate", "servable", "refused") and the gate's record
        (a JSON object: decision, reasons, figures, an override's reason, who and when)."""
        model_version_id = check_id(model_version_id, "模型版本 ID")
        status = check_choice(status, "发布状态", RELEASE_STATUSES)
        release_json = to_json(release, "发布记录")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE model_versions SET status = ?, release = ? WHERE id = ?",
                (status, release_json, model_version_id),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"模型版本不存在：{model_version_id}")
