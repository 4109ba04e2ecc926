"""app.py start-up: settings from flags and YAML, and the refusals that protect a deployment."""

import subprocess
import sys
from pathlib import Path

import pytest

from mvp.app.config import AppConfig, ConfigError, load_config
from mvp.store import Store

REPO = Path(__file__).resolve().parent.parent


def run_app(*args, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "app.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_flags_override_yaml(tmp_path):
    cfg = tmp_path / "app.yaml"
    cfg.write_text("model: some/model\nport: 8001\nquantization: 4bit\n", encoding="utf-8")
    config = load_config(["--config", str(cfg), "--port", "9000"])
    assert (config.model, config.port, config.quantization) == ("some/model", 9000, "4bit")
    assert load_config([]).model == "demo"


def test_unknown_yaml_key_is_named(tmp_path):
    cfg = tmp_path / "app.yaml"
    cfg.write_text("modle: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="modle"):
        load_config(["--config", str(cfg)])


def test_openai_backend_needs_a_base_url():
    with pytest.raises(ConfigError, match="base-url"):
        AppConfig(backend="openai")


def test_public_host_without_accounts_refuses_to_start(tmp_path):
    result = run_app("--host", "0.0.0.0", "--db", str(tmp_path / "f.db"), "--model", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "mvp.app.users" in result.stderr and "admin" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_is_a_clear_error(tmp_path):
    Store(tmp_path / "f.db").add_user("boss", "long-enough-pw", "admin")
    result = run_app("--db", str(tmp_path / "f.db"), "--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert "--model demo" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_file_is_a_clear_error(tmp_path):
    cfg = tmp_path / "app.yaml"
    cfg.write_text("port: [1\n", encoding="utf-8")
    result = run_app("--config", str(cfg), "--db", str(tmp_path / "f.db"))
    assert result.returncode == 2 and "YAML" in result.stderr and "Traceback" not in result.stderr
