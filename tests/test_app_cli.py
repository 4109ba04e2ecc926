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


def test_busy_port_is_refused_before_anything_is_created(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_app("--db", str(tmp_path / "f.db"), "--port", str(port))
    assert result.returncode == 2
    assert f"端口 {port} 已被占用" in result.stderr and "Traceback" not in result.stderr
    assert "应用已启动" not in result.stdout and "密码" not in result.stdout
    assert not (tmp_path / "f.db").exists()


def test_first_admin_password_goes_to_a_private_file_not_stdout(tmp_path):
    import importlib.util
    import stat

    spec = importlib.util.spec_from_file_location("app_entry", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    path = app.write_password_file(str(tmp_path / "feedback.db"), "s3cret-pass")
    assert path == tmp_path / app.PASSWORD_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8").splitlines() == ["admin", "s3cret-pass"]
    source = (REPO / "app.py").read_text(encoding="utf-8")
    assert "{first_password}" not in source  # the password itself is never formatted into output
    # Gradio's run history keeps every call's inputs and outputs in the browser: off.
    assert app.LAUNCH_OPTIONS["run_history"] is False
