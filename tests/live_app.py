"""Start the real app (`python app.py ...`) as a subprocess on a free loopback port, for tests.

The process handling is `mvp.app.process.AppProcess` (shared with bench/); this adds the test
defaults (admin password, short replies) and `db_rows`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mvp.app.process import AppProcess, free_port  # noqa: F401  (free_port: re-exported for tests)
from mvp.store import load_rating_config

REPO = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-pass-123"
START_TIMEOUT_S = 120


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    """Rows of a query on the app's feedback.db, as dicts (a separate read connection). A ratings
    row's JSON ``scores`` is expanded to one key per dimension, as the store's own API returns it."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return expand_scores([dict(r) for r in conn.execute(sql, params)])
    finally:
        conn.close()


def expand_scores(rows: list[dict]) -> list[dict]:
    """Ratings rows with their JSON ``scores`` as one key per dimension (the store API's shape)."""
    if rows and isinstance(rows[0].get("scores"), str):
        dimensions = load_rating_config().dimension_ids
        for row in rows:
            scores = json.loads(row.pop("scores"))
            row.update({d: scores.pop(d, None) for d in dimensions}, **scores)
    return rows


class LiveApp(AppProcess):
    def __init__(self, model_dir: Path, db: Path, log: Path, *extra: str):
        self.db = db
        super().__init__(["--model", str(model_dir), "--db", str(db), "--max-new-tokens", "48", *extra],
                         log_path=log, env={"MVP_ADMIN_PASSWORD": ADMIN_PASSWORD}, timeout_s=START_TIMEOUT_S)

