"""`transformers serve MODEL` on loopback, for tests, benchmarks and an offline try-out.

    from mvp.model.local_server import LocalServer
    with LocalServer("models/demo", continuous_batching=True) as server:
        engine = OpenAIEngine(server.base_url, server.model)

Starts the server as a child process (offline: HF_HUB_OFFLINE=1), waits for GET /health, and stops it
on exit. `free_port()` picks a free loopback port. `mvp.model.openai_backend` re-exports both.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

SERVER_START_TIMEOUT_S = 120.0  # `transformers serve` is healthy in about 20 s on 2 cores


class LocalServer:
    """One `transformers serve` child process; the model folder is pinned, so its path is the served
    model name."""

    def __init__(self, model: str | Path, port: int | None = None, *, continuous_batching: bool = False,
                 log: str | Path | None = None, extra_args: Sequence[str] = (), threads: int | None = None):
        self.model = str(model)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.continuous_batching = continuous_batching
        self.log_path = Path(log) if log else None
        self.extra_args = list(extra_args)
        self.threads = threads
        self.proc = None

    def command(self) -> list[str]:
        import sys

        cli = Path(sys.executable).with_name("transformers")
        head = [str(cli)] if cli.exists() else [sys.executable, "-c", "from transformers.cli.transformers import main; main()"]
        cb = "--continuous-batching" if self.continuous_batching else "--no-continuous-batching"
        return [*head, "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
                cb, "--log-level", "warning", *self.extra_args]

    def start(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> "LocalServer":
        import subprocess

        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        out = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT)
        if self.log_path:
            out.close()
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"transformers serve did not become healthy in {timeout_s:g} s: {self.output()[-2000:]}")

    def output(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    def stop(self, kill: bool = False) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LocalServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
