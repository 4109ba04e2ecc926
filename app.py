"""Start the clinician app.

    python app.py                                   # the built-in offline demo model, http://127.0.0.1:7860
    python app.py --model Qwen/Qwen2.5-7B-Instruct  # any Hugging Face causal LM; 4-bit on a CUDA GPU
    python app.py --model ./my-model --adapter runs/demo/dpo --quantization none
    python app.py --config app.yaml --port 8000     # settings from YAML, flags override
    python app.py --help

Loads the model once, registers it as a model version in feedback.db, and serves the Gradio app with
login required on every page and API endpoint. On a fresh database on this machine (loopback) it
creates a first admin account, writes its password to a file only the owner can read (0600, next to
the database) and prints the file's path, never the password; on any other host it refuses to start
until accounts exist (`python -m mvp.app.users add NAME --role admin`). A port that is already taken
is refused before anything is created or printed.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

# Offline by default: no telemetry, no version check, no library fetching files behind our back. The
# one exception is `--model HUB_ID` when it is not cached: mvp/model/hub.py downloads it, unless the
# user set HF_HUB_OFFLINE themselves (remembered here, before it is switched on).
from mvp.model import hub  # noqa: E402 - stdlib only at import; must run before HF_HUB_OFFLINE is set

hub.remember_user_choice()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUEUE_MAX_SIZE = 64
DEFAULT_CONCURRENCY = 8
FIRST_ADMIN = "admin"
PASSWORD_FILE_NAME = "admin-password.txt"
# Gradio keeps every call's inputs and outputs in the browser (listed at /gradio_api/runs) unless told
# not to: client messages and the admin's flag table must not stay on a shared clinic computer.
LAUNCH_OPTIONS = {"show_error": False, "footer_links": [], "quiet": True, "run_history": False}


def fail(message: str) -> int:
    print(f"错误：{message}", file=sys.stderr)
    return 2


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (checked before anything is created or printed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: only a listener blocks
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def write_password_file(db: str, password: str) -> Path:
    """The first admin password in a 0600 file beside the database (logs never see the password)."""
    path = Path(db).resolve().parent / PASSWORD_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"{FIRST_ADMIN}\n{password}\n")
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
    return path


def security_middleware(config, store):
    """Origin allow-list, SameSite=Lax cookies, no uploads, sessions that end (see mvp.app.web)."""
    from starlette.middleware import Middleware

    from mvp.app.web import SecurityMiddleware, SecurityPolicy

    policy = SecurityPolicy(allowed_origins=config.origins, idle_s=config.session_idle_minutes * 60.0,
                            max_age_s=config.session_max_hours * 3600.0, get_user=store.get_user)
    return Middleware(SecurityMiddleware, policy=policy)


def ensure_accounts(store, config) -> str | None:
    """Refuse a public host without accounts; on loopback create a first admin (password in a file)."""
    if store.count_users(enabled_only=True) > 0:
        return None
    if not config.is_loopback:
        raise SystemExit(fail(
            f"监听地址 {config.host} 不是本机地址，但数据库 {config.db} 里还没有账号。"
            f"请先创建管理员：python -m mvp.app.users --db {config.db} add admin --role admin"
        ))
    password = os.environ.get("MVP_ADMIN_PASSWORD") or secrets.token_urlsafe(9)
    store.add_user(FIRST_ADMIN, password, "admin")
    return password


def engine_settings(config):
    """The engine settings of this run: every engine the app builds (the primary and the arena's
    opponents) comes from these, so all of them share the prompt format and context budget."""
    from mvp.model.factory import EngineSettings

    return EngineSettings.from_config(config)


def build_engine(config):
    """The engine for the configured backend (in-process model or an OpenAI-compatible server)."""
    from mvp.model.factory import build_engine as build

    engine = build(engine_settings(config))
    if config.backend == "openai":
        from mvp.model.openai_backend import startup_warnings

        for line in startup_warnings(engine):
            print(line, flush=True)
    return engine


def model_check_engine(config, engine):
    """The engine that double-checks client messages for a crisis: ON whenever a real model serves
    (`--model-check auto`), off for the built-in demo model, whose answers mean nothing."""
    if config.model_check == "off" or (config.model_check == "auto" and engine.info.get("is_demo")):
        return None
    return engine


def version_loader(config):
    """Loads another registered model version (for the blind arena) the same way as the primary."""
    from mvp.model.factory import build_engine as build

    settings = engine_settings(config)
    return lambda version: build(settings.for_version(version))


def setup_logging() -> None:
    """One line per event on stderr: logins, refusals, real faults (with a traceback) from mvp.*."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mvp").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    from mvp.app.config import ConfigError, load_config
    from mvp.model.loader import ModelLoadError
    from mvp.counsel.stages import StageFileError, load_stages
    from mvp.store import Store, StoreError

    try:
        config = load_config(argv)
        if not port_is_free(config.host, config.port):
            return fail(f"端口 {config.port} 已被占用（{config.host}）：请先停止占用它的程序，或用 --port 换一个端口")
        stages = load_stages(config.stages)
        from mvp.safety.privacy import storage_scrubber

        # Demo accounts' chats are shown to outsiders: they are always scrubbed before storage.
        scrubber = storage_scrubber()
        store = Store(config.db, scrub=scrubber if config.scrub_at_storage else None, scrub_demo=scrubber)
        first_password = ensure_accounts(store, config)
        print(f"正在加载模型 {config.model} …", flush=True)
        engine = build_engine(config)
    except (ConfigError, StageFileError, StoreError, ModelLoadError) as exc:
        return fail(str(exc))

    from mvp.app.auth import LoginGuard
    from mvp.app.service import EnginePool, Service, ServiceError
    from mvp.app.ui import CSS, HEAD, build_ui

    info = engine.info
    version_id = store.register_model_version(
        base_model=info["base_model"], adapter=info["adapter"], quantization=info["quantization"],
        backend=info["backend"], served_name=info.get("served_name"), base_url=info.get("base_url"),
        label="demo" if info["is_demo"] else None,
    )
    try:
        service = Service(store, stages, EnginePool(version_id, engine, version_loader(config)),
                          model_check_engine=model_check_engine(config, engine),
                          model_check_timeout_s=config.model_check_timeout_s)
    except (ServiceError, StoreError) as exc:  # e.g. a malformed config/rating.yaml
        return fail(str(exc))
    service.summary_writer = config.summary_writer  # who writes the 会谈摘要 (mvp/app/service/memory.py)
    demo = build_ui(service, info)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    url = f"http://{config.host}:{config.port}"
    print(f"应用已启动：{url}（模型版本 {version_id}：{info['base_model']}）", flush=True)
    if first_password:
        path = write_password_file(config.db, first_password)
        print(
            f"首次运行：已创建管理员账号 {FIRST_ADMIN}，密码保存在 {path}（仅本账户可读；登录后请删除该文件）。\n"
            f"创建更多账号：python -m mvp.app.users --db {config.db} add 姓名 --role clinician|admin|demo",
            flush=True,
        )
    demo.launch(
        app_kwargs={"middleware": [security_middleware(config, store)]},
        server_name=config.host,
        server_port=config.port,
        auth=LoginGuard(store.authenticate, unlocked_since=store.unlocked_since).check,
        auth_message="心理咨询大模型 MVP（研究演示系统，不是医疗服务）· 请登录；账号由管理员用 python -m mvp.app.users 创建",
        share=config.share,
        root_path=config.root_path or None,
        css=CSS,
        head=HEAD,
        **LAUNCH_OPTIONS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
