"""A training round's lineage: which registered version it builds on (the parent), and where its
final adapter is published (RUN_DIR/versions/HASH), so the app can serve it and the next round find it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mvp.model.loader import canonical_ref
from train import outputs
from train.config import ConfigError


def find_parent(store, cfg) -> dict | None:
    """The parent model version: given by id, none, or (auto) the version being served: the one of the
    same base that produced the newest reply, so round 2 trains on from what clinicians rated in round 1,
    in the same run_dir or another. Before anything has replied: the newest in-process version of the
    same base that this run_dir did not itself publish."""
    if cfg.parent == "none":
        return None
    if cfg.parent != "auto":
        from mvp.store import NotFoundError

        try:
            return store.get_model_version(int(cfg.parent))
        except NotFoundError as exc:
            raise ConfigError(f"parent: {exc}") from exc
    base = canonical_ref(cfg.base_model)
    served = store.last_served_version(base)
    if served is not None:
        return served
    # Versions this run_dir published are not candidates here: rerunning an iteration must not stack
    # on its own unserved output.
    own = str((Path(cfg.run_dir) / "versions").resolve()) + "/"
    same_base = [v for v in store.list_model_versions()
                 if v["base_model"] == base and v["backend"] == "inprocess"
                 and not (v.get("adapter") or "").startswith(own)]
    return same_base[-1] if same_base else None


def publish(adapter_dir: Path, run_dir: Path) -> Path:
    """Copy the final adapter to run_dir/versions/HASH (HASH of its inputs, so the same run = same folder)."""
    digest = json.loads((adapter_dir / outputs.DONE_FILE).read_text(encoding="utf-8"))["inputs_hash"]
    target = (run_dir / "versions" / digest[:16]).resolve()
    if not (target / outputs.DONE_FILE).is_file():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(adapter_dir, tmp, ignore=shutil.ignore_patterns(outputs.TRAINER_WORK_SUBDIR))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target
