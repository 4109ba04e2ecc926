"""What a training stage leaves behind: the adapter, tokenizer, train_config.json, the data manifest,
metrics and the "done" marker; helpers for the output folder under `accelerate launch`.

Used by `train.registry.run_stage` after every stage and by the pipeline (DONE_FILE, TRAINER_WORK_SUBDIR
when it publishes a version). A folder with DONE_FILE whose inputs_hash matches is complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from train.config import ConfigError, config_to_dict

TRAIN_CONFIG_FILE = "train_config.json"
DATA_MANIFEST_FILE = "data_manifest.json"
DONE_FILE = "stage_done.json"  # written last: its presence and hash mean "this output is complete"
TRAINER_WORK_SUBDIR = "_trainer"  # TRL's scratch output_dir (checkpoints if asked), inside output_dir


def is_done(output_dir: str | os.PathLike, digest: str) -> bool:
    marker = Path(output_dir) / DONE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("inputs_hash") == digest
    except (OSError, json.JSONDecodeError):
        return False


def mark_done(output_dir: str | os.PathLike, digest: str) -> None:
    marker = Path(output_dir) / DONE_FILE
    marker.write_text(json.dumps({"inputs_hash": digest, "finished_at": utc_now()}), encoding="utf-8")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    return out


def is_main_process() -> bool:
    """True in a single process, and in process 0 under `accelerate launch` / torchrun (RANK is set)."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


def prepare_output_dir(output_dir: str | os.PathLike) -> Path:
    """Empty output_dir of a previous (possibly interrupted) run's files; create it (main process only)."""
    out = Path(output_dir)
    if not is_main_process():
        return out
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"output_dir: {out} 已存在且不是文件夹")
        marker_known = (out / DONE_FILE).exists() or (out / TRAIN_CONFIG_FILE).exists() or \
            (out / "adapter_config.json").exists() or (out / TRAINER_WORK_SUBDIR).exists()
        if any(out.iterdir()) and not marker_known:
            raise ConfigError(f"output_dir: {out} 不是空文件夹，也不是之前的训练输出；请换一个文件夹")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def save_stage_output(model, tokenizer, cfg, *, stage: str, loaded, data: dict, metrics: dict,
                      manifest: Path | None, started: float, digest: str, extra: dict | None = None) -> Path:
    """Save the "default" adapter (not TRL's frozen "ref" copy) and tokenizer, train_config.json, manifest."""
    out = Path(cfg.output_dir)
    if not is_main_process():  # under accelerate launch: process 0 writes everything
        return out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), selected_adapters=["default"])
    tokenizer.save_pretrained(str(out))
    if manifest is not None:
        shutil.copyfile(manifest, out / DATA_MANIFEST_FILE)
    info = {
        "stage": stage,
        "config": config_to_dict(cfg),
        "resolved": {"model_path": loaded.model_path, "device": loaded.device,
                     "quantization": loaded.quantization, "continued_adapter": cfg.adapter},
        "data": data,
        "data_manifest": DATA_MANIFEST_FILE if manifest is not None else None,
        "metrics": metrics,
        "elapsed_s": round(time.monotonic() - started, 2),
        "created_at": utc_now(),
        "inputs_hash": digest,
        "versions": versions(),
        **(extra or {}),
    }
    (out / TRAIN_CONFIG_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2, default=str),
                                        encoding="utf-8")
    work = out / TRAINER_WORK_SUBDIR
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    mark_done(out, digest)
    return out


def train_metrics(train_output, trainer, eval_rows: int, eval_at_end: bool) -> dict[str, Any]:
    """Loss and speed from the trainer, plus an eval loss when an eval set was given."""
    metrics = {k: v for k, v in (train_output.metrics or {}).items() if isinstance(v, (int, float))}
    metrics["global_step"] = trainer.state.global_step
    history = [h for h in trainer.state.log_history if "loss" in h]
    if history:
        metrics["first_loss"] = history[0]["loss"]
        metrics["last_loss"] = history[-1]["loss"]
    if eval_rows and eval_at_end:
        ev = trainer.evaluate()
        metrics.update({k: v for k, v in ev.items() if isinstance(v, (int, float))})
    return metrics


def free_memory(*objects) -> None:
    """Drop references and return accelerator memory between stages run in one process."""
    import gc

    del objects
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
