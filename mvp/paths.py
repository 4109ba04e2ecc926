"""Where the repository's own files live: config/, data/, models/.

Declared once so that no module computes paths from its own place in the tree (moving a module must
not move the config folder it reads).
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
DATA_DIR = REPO_ROOT / "data"
MODELS_DIR = REPO_ROOT / "models"
DEMO_MODEL_DIR = MODELS_DIR / "demo"
