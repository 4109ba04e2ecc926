"""ONE place that turns settings into an engine: in-process (transformers) or served (OpenAI API).

Used by the app (primary model and the blind arena's opponents), train/ (pipeline and evaluation),
and the assessment and safety model checks, so that the prompt format, the context budget and the
generation defaults are set up once and every engine of a run gets the same ones.

    settings = EngineSettings(model="demo", prompt_format="plain", user_label="来访者")
    engine = build_engine(settings)                           # the primary
    opponent = build_engine(settings.for_version(version))    # a registered version, same format

`EngineSettings.from_config(obj)` reads the fields it knows from any settings object (the app's
AppConfig, a training config); the model/ wing itself knows nothing of the app or train/.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from mvp.model.demo import DEMO_MODEL_NAME
from mvp.model.dialogue import DEFAULT_ASSISTANT_LABEL, DEFAULT_USER_LABEL, PROMPT_FORMATS, PlainFormat
from mvp.model.engine import MAX_NEW_TOKENS_LIMIT
from mvp.model.loader import ModelLoadError, check_choice

BACKENDS = ("inprocess", "openai")
MAX_THREADS = 256
MAX_CONTEXT_TOKENS = 10**7  # the loader treats a larger model_max_length as "unset"


def _check_count(name: str, value, limit: int) -> None:
    """None (use the default) or an integer 1..limit."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ModelLoadError(f"{name}: {value!r} 无效，应为 1 到 {limit} 之间的整数")


@dataclass(frozen=True)
class EngineSettings:
    """Everything needed to build an engine; validated once, here."""

    model: str = "demo"
    adapter: str | None = None
    quantization: str = "auto"
    device: str = "auto"
    backend: str = "inprocess"
    prompt_format: str = "chat"
    user_label: str = DEFAULT_USER_LABEL
    assistant_label: str = DEFAULT_ASSISTANT_LABEL
    max_context_tokens: int | None = None
    max_new_tokens: int | None = None
    threads: int | None = None
    base_url: str | None = None
    tokenizer: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    served_name: str | None = None

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, BACKENDS, ModelLoadError)
        check_choice("prompt_format", self.prompt_format, PROMPT_FORMATS, ModelLoadError)
        # Out-of-range numbers were silently replaced by defaults further down (default_params
        # falls back on a bad max_new_tokens; a negative context made every message "too long").
        _check_count("max_new_tokens", self.max_new_tokens, MAX_NEW_TOKENS_LIMIT)
        _check_count("max_context_tokens", self.max_context_tokens, MAX_CONTEXT_TOKENS)
        _check_count("threads", self.threads, MAX_THREADS)

    @classmethod
    def from_config(cls, config, **overrides) -> "EngineSettings":
        """The fields of `config` (any object with attributes) that an engine needs."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if hasattr(config, f.name)}
        values = {k: v for k, v in values.items() if v is not None or k in ("adapter",)}
        values.update(overrides)
        return cls(**values)

    def for_version(self, version: dict) -> "EngineSettings":
        """Settings for a registered model version (a store row): its model, adapter, quantization and
        server, with THIS run's prompt format, labels, context budget and generation defaults."""
        backend = version.get("backend") or "inprocess"
        base_url = version.get("base_url") or self.base_url
        served = version.get("served_name") or version["base_model"]
        # This run's --tokenizer belongs to this run's served model: an opponent served under the
        # same name by the same server counts tokens with it; any other finds its own (or estimates).
        same_served = (backend == self.backend == "openai" and base_url == self.base_url
                       and served == (self.served_name or self.model))
        return dataclasses.replace(
            self,
            model=version["base_model"],
            adapter=version.get("adapter"),
            quantization=version.get("quantization") or "auto",
            backend=backend,
            base_url=base_url,
            served_name=version.get("served_name"),
            tokenizer=self.tokenizer if same_served else None,
        )

    @property
    def generation_defaults(self) -> dict:
        """Settings that override the model's generation_config."""
        return {"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else {}


def make_prompt_format(settings: EngineSettings):
    """"chat" (the tokenizer's chat template) or a PlainFormat with the configured labels."""
    if settings.prompt_format == "plain":
        return PlainFormat(user_label=settings.user_label, assistant_label=settings.assistant_label)
    return "chat"


def set_threads(settings: EngineSettings) -> None:
    """CPU threads for generation: the tiny demo model decodes fastest on one thread (its matmuls are
    too small to split, and a second thread fights other processes on a small machine)."""
    threads = settings.threads or (1 if settings.model == DEMO_MODEL_NAME else None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def build_engine(settings: EngineSettings, loaded=None):
    """An engine for `settings`. `loaded` (a LoadedModel) reuses a model already in memory."""
    fmt = make_prompt_format(settings)
    if settings.backend == "openai":
        from mvp.model.openai_backend import OpenAIEngine

        return OpenAIEngine(
            settings.base_url,
            settings.served_name or settings.model,
            api_key=os.environ.get(settings.api_key_env) or None,
            tokenizer=settings.tokenizer,
            prompt_format=fmt,
            max_context_tokens=settings.max_context_tokens,
            adapter=settings.adapter,
            quantization=None if settings.quantization == "auto" else settings.quantization,
            generation_defaults=settings.generation_defaults,
        )
    from mvp.model.engine import Engine

    if loaded is None:
        from mvp.model.loader import ModelSpec, load_model

        set_threads(settings)
        loaded = load_model(ModelSpec(model=settings.model, adapter=settings.adapter,
                                      quantization=settings.quantization, device=settings.device))
    return Engine(loaded, prompt_format=fmt, max_context_tokens=settings.max_context_tokens,
                  generation_defaults=settings.generation_defaults)
