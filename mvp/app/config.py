"""Application settings: one dataclass, loadable from a YAML file, overridden by command-line flags.

    python app.py --model demo --port 7860
    python app.py --config configs/clinic.yaml --port 8000     # YAML gives values, flags override

Every field carries its help text; an unknown key in the YAML file is an error that names it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mvp.model.loader import DEVICES, QUANTIZATIONS, check_choice

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MODEL_CHECK_MODES = ("auto", "on", "off")


class ConfigError(ValueError):
    """A bad setting: the message names the file or flag and the key."""


@dataclass
class AppConfig:
    model: str = field(default="demo", metadata={"help": "demo（内置离线演示模型）、本地模型文件夹或 Hugging Face 模型 id"})
    adapter: str | None = field(default=None, metadata={"help": "LoRA 适配器文件夹（peft），可选"})
    quantization: str = field(default="auto", metadata={"help": "auto（GPU 上 4-bit，CPU 上不量化）|4bit|8bit|none", "choices": QUANTIZATIONS})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda", "choices": DEVICES})
    prompt_format: str = field(default="chat", metadata={"help": "chat（分词器的 chat template）或 plain（BianQue/SoulChat 的 病人：/医生： 纯文本格式）", "choices": ("chat", "plain")})
    user_label: str = field(default="病人", metadata={"help": "plain 格式中来访者的标签，例如 来访者"})
    assistant_label: str = field(default="医生", metadata={"help": "plain 格式中咨询师的标签，例如 咨询师"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "每条回复最多生成的 token 数，默认取模型的 generation_config（否则 256）"})
    threads: int | None = field(default=None, metadata={"help": "CPU 推理线程数；默认：演示模型 1（小矩阵多线程反而更慢），其他模型由 torch 决定"})
    max_context_tokens: int | None = field(default=None, metadata={"help": "上下文预算（token），默认为模型的最大上下文"})
    host: str = field(default="127.0.0.1", metadata={"help": "监听地址；非本机地址时必须先创建账号"})
    port: int = field(default=7860, metadata={"help": "端口"})
    db: str = field(default="feedback.db", metadata={"help": "SQLite 数据库文件（账号、对话、评分）"})
    stages: str | None = field(default=None, metadata={"help": "治疗阶段 YAML 文件，默认 config/stages.yaml"})
    share: bool = field(default=False, metadata={"help": "创建 Gradio 公网分享链接（默认关闭，仅在明确需要时使用）"})
    backend: str = field(default="inprocess", metadata={"help": "inprocess（本进程内加载模型）或 openai（OpenAI 兼容服务，如 vLLM）", "choices": ("inprocess", "openai")})
    base_url: str | None = field(default=None, metadata={"help": "openai 后端的地址，例如 http://127.0.0.1:8000/v1"})
    tokenizer: str | None = field(default=None, metadata={"help": "openai 后端：本地分词器文件夹，用于准确计算上下文 token（默认尝试 --model）"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "openai 后端的 API key 所在的环境变量名"})
    root_path: str = field(default="", metadata={"help": "反向代理下的路径前缀，例如 /counsel（Caddy/nginx 把 https://clinic.example.org/counsel 转发到本应用时）"})
    allowed_origins: str = field(default="", metadata={"help": "除本应用自身地址外，允许携带登录凭据调用的来源（逗号分隔，例如 https://clinic.example.org）；默认只允许本应用自身"})
    session_idle_minutes: int = field(default=480, metadata={"help": "登录会话空闲多少分钟后失效"})
    session_max_hours: int = field(default=24, metadata={"help": "登录会话最长有效小时数（之后需重新登录）"})
    scrub_at_storage: bool = field(default=False, metadata={"help": "所有对话存入数据库前即去除个人信息（演示账号的对话总是如此）"})
    model_check: str = field(default="auto", metadata={"help": "危机检测的模型复核：auto（真实模型时开启，内置演示模型时关闭）|on|off", "choices": MODEL_CHECK_MODES})
    model_check_timeout_s: float = field(default=8.0, metadata={"help": "模型复核的超时（秒）；超时不会阻挡消息，规则与分类器的结果照常生效"})
    summary_writer: str = field(default="auto", metadata={"help": "会谈摘要由谁写：auto（真实模型时由模型撰写，内置演示模型时自动摘录）|model|extractive", "choices": ("auto", "model", "extractive")})

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization: {self.quantization!r} 无效，可选 {', '.join(QUANTIZATIONS)}")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"port: {self.port!r} 不是有效端口")
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError(f"max_new_tokens: {self.max_new_tokens!r} 应在 1 到 4096 之间")
        if self.threads is not None and not 1 <= self.threads <= 256:
            raise ConfigError(f"threads: {self.threads!r} 应在 1 到 256 之间")
        for origin in self.origins:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ConfigError(f"allowed_origins: {origin!r} 不是来源地址，应形如 https://clinic.example.org")
        if not 1 <= self.session_idle_minutes <= 7 * 24 * 60 or not 1 <= self.session_max_hours <= 24 * 30:
            raise ConfigError("session_idle_minutes / session_max_hours 超出范围（1 分钟到 7 天 / 1 小时到 30 天）")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(f"root_path: {self.root_path!r} 应形如 /counsel（以 / 开头，不以 / 结尾）")
        if isinstance(self.model_check, bool):  # YAML 1.1 reads a bare on/off as a boolean
            self.model_check = "on" if self.model_check else "off"
        check_choice("model_check", self.model_check, MODEL_CHECK_MODES, ConfigError)
        timeout = self.model_check_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.5 <= timeout <= 120:
            raise ConfigError(f"model_check_timeout_s: {timeout!r} 应在 0.5 到 120 秒之间")
        check_choice("summary_writer", self.summary_writer, ("auto", "model", "extractive"), ConfigError)
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("backend openai 需要 --base-url，例如 http://127.0.0.1:8000/v1")

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


def _add_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(AppConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind = int if "int" in str(f.type) else float if "float" in str(f.type) else str
        parser.add_argument(flag, dest=f.name, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="心理咨询大模型 MVP：临床评测应用（默认使用内置离线演示模型）",
    )
    parser.add_argument("--config", help="YAML 配置文件；命令行参数会覆盖其中的值")
    _add_flags(parser)
    return parser


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping of AppConfig keys; unknown keys are an error naming them."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: 找不到配置文件") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML 格式错误：{exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: 顶层必须是键值映射")
    known = {f.name for f in dataclasses.fields(AppConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: 未知的配置项 {unknown}（可用：{', '.join(sorted(known))}）")
    return data


def load_config(argv: list[str] | None = None) -> AppConfig:
    """Defaults < YAML file (--config) < command-line flags."""
    args = make_parser().parse_args(argv)
    values = read_yaml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    try:
        return AppConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
