"""The one model loader: base model + optional LoRA adapter + quantization -> LoadedModel.

The app, the training stages and the evaluation all load models through `load_model`, so that a model
trained by `train/` is served exactly as it was trained.

    from mvp.model.loader import ModelSpec, load_model
    loaded = load_model(ModelSpec(model="demo"))                     # the built-in offline model
    loaded = load_model(ModelSpec(model="Qwen/Qwen2.5-7B-Instruct"))  # 4-bit NF4 on a CUDA GPU

`model` is "demo", a local folder, or a Hugging Face hub id. `quantization` is "auto" (4-bit NF4 with
bf16 compute and double quantization on a CUDA GPU, none on the CPU), "4bit", "8bit" or "none".
bitsandbytes 0.50 also runs 4-bit and 8-bit on the CPU, so those paths are tested without a GPU.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mvp.model import hub
from mvp.model.demo import DEMO_MODEL_NAME, is_built
from mvp.paths import DEMO_MODEL_DIR

QUANTIZATIONS = ("auto", "4bit", "8bit", "none")
DEVICES = ("auto", "cpu", "cuda")
MODEL_CLASSES = ("causal_lm", "seq_cls")


def check_choice(name: str, value, choices: tuple, error: type[Exception] = ValueError) -> None:
    """The one check for a setting that must be one of `choices` (quantization, device, backend ...):
    every settings class calls it, so the rule and the message are the same everywhere."""
    if value not in choices:
        raise error(f"{name}: {value!r} 无效，可选 {', '.join(choices)}")

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model, adapter or quantization could not be loaded; the message says how to fix it."""


@dataclass
class ModelSpec:
    """What to load. The same spec is recorded with every reply and every trained adapter."""

    model: str = field(default=DEMO_MODEL_NAME, metadata={"help": "demo, a local folder or a hub id"})
    adapter: str | None = field(default=None, metadata={"help": "a LoRA adapter folder (peft)"})
    quantization: str = field(default="auto", metadata={"help": "auto|4bit|8bit|none"})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda"})

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ModelLoadError("模型不能为空：请给出 --model demo、本地文件夹或 Hugging Face 模型 id")
        if self.quantization not in QUANTIZATIONS:
            raise ModelLoadError(
                f"未知的量化方式 {self.quantization!r}：可选 {', '.join(QUANTIZATIONS)}"
            )
        if self.device not in DEVICES:
            raise ModelLoadError(f"未知的设备 {self.device!r}：可选 {', '.join(DEVICES)}")
        if self.adapter is not None and not str(self.adapter).strip():
            self.adapter = None


@dataclass
class LoadedModel:
    """A loaded model and tokenizer with the facts the store records about them."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    model_path: str  # resolved folder or hub id
    device: str  # "cpu" or "cuda"
    quantization: str  # resolved: "4bit", "8bit" or "none"
    is_demo: bool

    def describe(self) -> dict:
        """Model version metadata: base model, adapter, quantization, device (paths in canonical form)."""
        return {
            "base_model": canonical_ref(self.spec.model),
            "adapter": canonical_ref(self.spec.adapter) if self.spec.adapter else None,
            "quantization": self.quantization,
            "device": self.device,
            "is_demo": self.is_demo,
        }

    @property
    def max_context(self) -> int:
        """The model's context length in tokens (max_position_embeddings or the tokenizer's limit)."""
        config = getattr(self.model, "config", None)
        n = getattr(config, "max_position_embeddings", None)
        if not n:
            n = getattr(self.tokenizer, "model_max_length", None)
        return int(n) if n and n < 10**7 else 2048


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA GPU is visible, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("这台机器没有可用的 CUDA GPU：请用 --device cpu 或 --device auto")
    return device


def resolve_quantization(quantization: str, device: str) -> str:
    """'auto' -> '4bit' on CUDA, 'none' on the CPU."""
    if quantization == "auto":
        return "4bit" if device == "cuda" else "none"
    return quantization


def quantization_config(quantization: str, device: str):
    """The BitsAndBytesConfig for a resolved quantization, or None. Pure: testable without a GPU."""
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as exc:  # pragma: no cover - bitsandbytes is pinned in requirements
        raise ModelLoadError(
            f"量化 {quantization} 需要 bitsandbytes，但无法导入（{exc}）：请用 --quantization none"
        ) from exc
    if quantization == "4bit":
        compute = torch.bfloat16 if device == "cuda" else torch.float32
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=device == "cuda",
            bnb_4bit_compute_dtype=compute,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelLoadError(f"未知的量化方式 {quantization!r}")


def canonical_ref(ref: str) -> str:
    """How a model or adapter is recorded: ``demo`` and hub ids as given, a local folder as its absolute
    path, so ``runs/x/versions/abc`` and ``/srv/app/runs/x/versions/abc`` are the same registered version."""
    path = Path(ref).expanduser()
    if ref != DEMO_MODEL_NAME and path.is_dir():
        return str(path.resolve())
    return ref


def resolve_model_path(model: str) -> tuple[str, bool]:
    """Return (folder or hub id, is_demo). Raises ModelLoadError for a missing local folder."""
    if model == DEMO_MODEL_NAME:
        if not is_built(DEMO_MODEL_DIR):
            raise ModelLoadError(
                f"内置演示模型尚未构建（{DEMO_MODEL_DIR}）：请先运行 `python -m train.demo`"
                "（`make run` 会自动构建，约 5 分钟）"
            )
        return str(DEMO_MODEL_DIR), True
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"文件夹 {model} 里没有 config.json，不是 Hugging Face 模型文件夹")
        return str(path), path.resolve() == DEMO_MODEL_DIR.resolve()
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep in model.replace("/", "")
    if looks_like_path:
        raise ModelLoadError(f"找不到模型文件夹 {model}；离线时可用 `--model demo`")
    try:  # a hub id: the local cache first, a download when allowed (mvp/model/hub.py)
        return hub.local_snapshot(model), False
    except hub.HubUnavailable as exc:
        raise ModelLoadError(str(exc)) from exc


def _dtype_for(device: str):
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(model_path: str, padding_side: str = "left"):
    """Load a tokenizer; padding_side is not saved with tokenizers, so it is set here."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: ModelSpec,
    *,
    model_class: str = "causal_lm",
    for_training: bool = False,
    num_labels: int = 1,
) -> LoadedModel:
    """Load base model, tokenizer, optional adapter, with the spec's quantization.

    for_training=True keeps an adapter trainable (to continue training it) instead of read-only.
    model_class="seq_cls" loads a sequence classifier (the reward model) with num_labels outputs.
    """
    if model_class not in MODEL_CLASSES:
        raise ModelLoadError(f"未知的模型类型 {model_class!r}")
    device = resolve_device(spec.device)
    quantization = resolve_quantization(spec.quantization, device)
    model_path, is_demo = resolve_model_path(spec.model)
    qconfig = quantization_config(quantization, device)

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if model_class == "causal_lm" else AutoModelForSequenceClassification
    kwargs: dict[str, Any] = {"dtype": _dtype_for(device)}
    if model_class == "seq_cls":
        kwargs["num_labels"] = num_labels
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        # Under `accelerate launch` each process owns the GPU of its LOCAL_RANK (QLoRA on several GPUs).
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))} if device == "cuda" else "cpu"
    try:
        tokenizer = load_tokenizer(model_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(model_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"无法加载模型 {spec.model!r}：{_first_line(exc)}。"
            "请检查模型文件夹是否完整（config.json、权重和分词器文件）；没有可用模型时可用 `--model demo`"
        ) from exc
    if qconfig is None:
        model.to(device)
    if model_class == "seq_cls" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if spec.adapter:
        model = _attach_adapter(model, spec, for_training)
    if not for_training:
        model.eval()
    if quantization != "none" and device == "cpu":
        # bitsandbytes logs once that an optional CPU kernel package is missing; it works without it.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if quantization == "8bit":
        # bitsandbytes logs a cast warning on every 8-bit matmul; it is expected and harmless here.
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return LoadedModel(model, tokenizer, spec, model_path, device, quantization, is_demo)


def _attach_adapter(model, spec: ModelSpec, trainable: bool):
    adapter = Path(spec.adapter).expanduser()
    config_file = adapter / "adapter_config.json"
    if not config_file.exists():
        raise ModelLoadError(f"适配器文件夹 {spec.adapter} 不存在或没有 adapter_config.json")
    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        raise ModelLoadError(
            f"适配器 {spec.adapter} 与基座模型 {spec.model} 不匹配（适配器训练于 {base}）：{_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def spec_dict(spec: ModelSpec) -> dict:
    """The spec as a plain dict (for manifests and metadata)."""
    return asdict(spec)
