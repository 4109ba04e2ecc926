"""The app as a child process: ``python app.py ...`` on a free loopback port, ready when it answers.

Used by the tests that drive the real app (tests/live_app.py) and by the benchmarks (bench/); it
lives beside the app it starts so that both import one copy. No gradio import here.

    app = AppProcess(["--model", "models/demo", "--db", "x.db"], log_path=Path("app.log"))
    ...  # app.url, app.port
    app.stop()
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mvp.model.openai_backend import free_port  # the one free-port helper
from mvp.paths import REPO_ROOT

START_TIMEOUT_S = 120
POLL_INTERVAL_S = 0.5
STOP_TIMEOUT_S = 20


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float, output=lambda: "") -> None:
    """Poll ``url`` until it answers; a RuntimeError (with the log) if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{output()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"app did not start in {timeout_s} s:\n{output()}")


class AppProcess:
    """``python app.py <args> --port <free port>`` with its output in ``log_path``."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 timeout_s: float = START_TIMEOUT_S, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "w")
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "app.py"), *args, "--port", str(self.port)],
            cwd=REPO_ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(self.url + "/", self.proc, timeout_s, self.output)
        except RuntimeError:
            self.stop(kill=True)
            raise

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
