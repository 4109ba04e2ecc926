"""Training data: where a stage's files are, reading and checking TRL-format JSONL rows, and digests.

Used by the stages through `train.registry.run_stage` and by the evaluation and the pipeline:

    files = resolve_data("exports/NAME", None, "sft")     # trl/sft_train.jsonl + the eval split + manifest
    rows, report = load_rows(files.train, "sft", bad_rows="refuse")
    digest = inputs_hash(cfg, [files.train, files.eval])  # what the pipeline compares to skip a stage

Bad rows are refused with their line numbers (DataError) or skipped and counted (`bad_rows: skip`);
an empty file is a DataError. `file_sha256` is the one file hash of train/ (export manifests too).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvp.model.loader import ModelLoadError
from train.config import ConfigError, DataError, config_to_dict

SHOWN_BAD_ROWS = 5  # how many bad rows an error message lists
HASH_CHUNK = 1 << 20
ROLES = ("system", "user", "assistant")


@dataclass
class DataFiles:
    """Where a stage's data comes from: train file, optional eval file, optional export manifest."""

    train: Path
    eval: Path | None
    manifest: Path | None


def resolve_data(data: str, eval_data: str | None, kind: str) -> DataFiles:
    """An export folder (exports/NAME with trl/KIND_{train,eval}.jsonl) or a JSONL file."""
    if not data:
        raise ConfigError("data: 必须给出数据：导出文件夹（exports/NAME）或 JSONL 文件")
    path = Path(data)
    if path.is_dir():
        train = path / "trl" / f"{kind}_train.jsonl"
        if not train.is_file():
            if (path / "manifest.json").is_file():  # train.export writes no file for a kind without rows
                raise DataError(f"data: 导出 {data} 里没有 {kind} 训练数据（trl/{kind}_train.jsonl 不存在，"
                                f"即 0 行；各类数量和丢弃原因见 manifest.json）")
            raise DataError(f"data: {data} 里没有 trl/{kind}_train.jsonl；请先用 `python -m train.export` 导出")
        ev = Path(eval_data) if eval_data else path / "trl" / f"{kind}_eval.jsonl"
        manifest = path / "manifest.json"
        return DataFiles(train, ev if ev.is_file() else None, manifest if manifest.is_file() else None)
    if not path.is_file():
        raise DataError(f"data: 找不到文件或文件夹 {data}")
    manifest = next((p / "manifest.json" for p in (path.parent, path.parent.parent)
                     if (p / "manifest.json").is_file()), None)
    ev = Path(eval_data) if eval_data else None
    if ev is not None and not ev.is_file():
        raise DataError(f"eval_data: 找不到文件 {eval_data}")
    return DataFiles(path, ev, manifest)


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line; a line that is not JSON is a DataError."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} 第 {number} 行不是有效的 JSON：{exc.msg}") from exc
    return rows


def check_messages(messages: Any, *, ends_with: str) -> str | None:
    """None if `messages` is [system?] user, assistant, user, ... ending with `ends_with`; else why not.

    TRL 1.16 trains on prompts whose roles do not alternate without any warning, so we check here.
    """
    if not isinstance(messages, list) or not messages:
        return "消息列表为空或不是列表"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"第 {i + 1} 条消息的 role 无效：{(m.get('role') if isinstance(m, dict) else m)!r}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"第 {i + 1} 条消息（{m['role']}）内容为空"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns:
        return "只有 system 消息，没有对话"
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            return f"角色顺序错误：第 {i + 1} 轮应为 {expected}，实为 {m['role']}（system 只能在最前面）"
    if turns[-1]["role"] != ends_with:
        return f"最后一条消息应为 {ends_with}，实为 {turns[-1]['role']}"
    return None


def _one_assistant(value: Any, name: str) -> str | None:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        return f"{name} 应为恰好一条 assistant 消息的列表"
    m = value[0]
    if m.get("role") != "assistant":
        return f"{name} 的角色应为 assistant，实为 {m.get('role')!r}"
    if not isinstance(m.get("content"), str) or not m["content"].strip():
        return f"{name} 内容为空"
    return None


def check_row(row: Any, kind: str) -> str | None:
    """Why a row of a TRL-format file is unusable for `kind` (sft|dpo|kto|prompt|text), or None."""
    if not isinstance(row, dict):
        return "不是 JSON 对象"
    if kind == "sft":
        return check_messages(row.get("messages"), ends_with="assistant")
    if kind == "text":
        return None if isinstance(row.get("text"), str) and row["text"].strip() else "text 为空"
    why = check_messages(row.get("prompt"), ends_with="user")
    if why:
        return f"prompt: {why}"
    if kind == "dpo":
        return _one_assistant(row.get("chosen"), "chosen") or _one_assistant(row.get("rejected"), "rejected")
    if kind == "kto":
        if not isinstance(row.get("label"), bool):
            return f"label 必须是 JSON 布尔值 true/false，收到 {row.get('label')!r}"
        return _one_assistant(row.get("completion"), "completion")
    if kind == "prompt":
        return None
    raise ValueError(f"unknown row kind {kind!r}")


@dataclass
class RowReport:
    """Rows read, used and refused for one file (recorded in train_config.json)."""

    file: str
    rows_in: int = 0
    rows_used: int = 0
    bad_rows: list[dict] = field(default_factory=list)  # {"line": n, "why": ...}
    truncated_to: int | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "rows_in": self.rows_in, "rows_used": self.rows_used,
                "rows_skipped": len(self.bad_rows), "bad_rows": self.bad_rows[:50],
                "truncated_to": self.truncated_to}


def load_rows(path: Path, kind: str, *, bad_rows: str = "refuse", max_samples: int | None = None,
              keep: Sequence[str] | None = None) -> tuple[list[dict], RowReport]:
    """Read and check a TRL JSONL file. Bad rows are refused (DataError listing them) or skipped and counted.

    An empty file, or one without a single usable row, is a DataError. `keep` limits the columns.
    """
    report = RowReport(str(path))
    rows = []
    for number, row in read_jsonl(path):
        report.rows_in += 1
        why = check_row(row, kind)
        if why:
            report.bad_rows.append({"line": number, "why": why})
            continue
        rows.append({k: row[k] for k in keep} if keep else row)
    if report.bad_rows and bad_rows == "refuse":
        shown = "；".join(f"第 {b['line']} 行：{b['why']}" for b in report.bad_rows[:SHOWN_BAD_ROWS])
        raise DataError(
            f"{path}: {len(report.bad_rows)}/{report.rows_in} 行格式错误（{shown}）。"
            "修正数据，或用 --bad-rows skip 跳过这些行（跳过的行数会记录在 train_config.json）"
        )
    if report.rows_in == 0:
        raise DataError(f"{path}: 数据集为空（没有任何行）；请检查导出是否有评分数据")
    if not rows:
        raise DataError(f"{path}: {report.rows_in} 行全部格式错误，没有可训练的样本")
    if max_samples is not None and len(rows) > max_samples:
        rows = rows[:max_samples]
        report.truncated_to = max_samples
    report.rows_used = len(rows)
    return rows, report


def load_eval_rows(path: Path | None, kind: str, *, bad_rows: str = "refuse",
                   keep: Sequence[str] | None = None) -> tuple[list[dict], RowReport | None]:
    """Like load_rows for an optional eval file: a missing or empty file gives no rows (not an error)."""
    if path is None:
        return [], None
    if not any(line.strip() for line in open(path, encoding="utf-8")):
        return [], RowReport(str(path))
    return load_rows(path, kind, bad_rows=bad_rows, keep=keep)


def to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# Digests: what a stage's output was made from


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(model: str) -> dict[str, Any]:
    """What identifies a base model for the skip hash: a folder's config and weight files, or the hub id."""
    from mvp.model.loader import resolve_model_path

    try:
        path, _ = resolve_model_path(model)
    except ModelLoadError:
        return {"model": model}
    folder = Path(path)
    if not folder.is_dir():
        return {"model": model}
    files = {}
    for p in sorted(folder.iterdir()):
        if p.suffix in (".json", ".safetensors", ".bin", ".model", ".txt") and p.is_file():
            # Hashing multi-GB weights on every run is slow: name + size + mtime identify a build.
            st = p.stat()
            files[p.name] = [st.st_size, int(st.st_mtime)] if st.st_size > 64 * HASH_CHUNK else file_sha256(p)
    return {"model": model, "files": files}


def adapter_identity(adapter: str | None) -> str | None:
    if not adapter:
        return None
    weights = Path(adapter) / "adapter_model.safetensors"
    return file_sha256(weights) if weights.is_file() else str(Path(adapter).resolve())


def inputs_hash(cfg, data_files: Iterable[str | os.PathLike | None], extra: dict | None = None) -> str:
    """sha256 over the config, the data files' contents, the base model and the adapter.

    Paths are hashed by what they contain (data files, adapter weights), not by name; output_dir and
    time_budget_s are not inputs.
    """
    by_content = ("output_dir", "data", "eval_data", "adapter", "reward_model")
    # time_budget_s is an operational guard (the pipeline shares its deadline out), not an input:
    # a stage the clock stopped early still counts as done for the same data and settings.
    config = {k: v for k, v in config_to_dict(cfg).items() if k not in by_content + ("time_budget_s",)}
    payload = {
        "config": config,
        "data": {str(Path(p).name): file_sha256(p) for p in data_files if p},
        "model": model_identity(cfg.model),
        "adapter": adapter_identity(getattr(cfg, "adapter", None)),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
