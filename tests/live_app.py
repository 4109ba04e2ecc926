"""Start the real app (`python app.py ...`) as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-pass-123"
START_TIMEOUT_S = 120


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    """Rows of a query on the app's feedback.db, as dicts (a separate read connection)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveApp:
    def __init__(self, model_dir: Path, db: Path, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db
        self.log_path = log
        env = {**os.environ, "MVP_ADMIN_PASSWORD": ADMIN_PASSWORD, "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--model", str(model_dir), "--db", str(db),
             "--port", str(self.port), "--max-new-tokens", "48", *extra],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.output()}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"app did not start in {START_TIMEOUT_S} s:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log_path).read_text(encoding="utf-8", errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
