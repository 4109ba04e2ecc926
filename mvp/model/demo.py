"""The built-in demo model as the runtime sees it: where it lives and whether it is completely built.

The build itself is training code (`python -m train.demo`, in train/demo/); the runtime only needs
to know the folder and to refuse a half-written one.
"""
from __future__ import annotations

import json
from pathlib import Path

from mvp.paths import DEMO_MODEL_DIR

DEMO_MODEL_NAME = "demo"
BUILD_FORMAT = 1
# Files a complete build has; build_info.json is written last, inside the temporary folder.
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "MODEL_CARD.md",
    "build_info.json",
)


def is_built(path: str | Path = DEMO_MODEL_DIR) -> bool:
    """True when path holds a complete demo build (every file, and a build_info.json that says so)."""
    path = Path(path)
    if not all((path / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        info = json.loads((path / "build_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == BUILD_FORMAT and info.get("complete") is True
