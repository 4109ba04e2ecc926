"""Generation through an OpenAI-compatible server (vLLM, `transformers serve`) behind the Engine interface.

    python app.py --backend openai --base-url http://HOST:8000/v1 --model counsel-v2

    engine = OpenAIEngine("http://127.0.0.1:8000/v1", "counsel-v2", tokenizer="models/demo")
    gen = engine.start(messages, GenerationParams(max_new_tokens=128))
    for delta in gen: ...        # streamed through the `openai` client library
    gen.result                   # ReplyResult, the same metadata as the in-process Engine

The server does the batching (continuous batching in vLLM and `transformers serve
--continuous-batching`); the app keeps doing everything above the model: the stage system prompt
travels as the system message, the context budget drops old whole turns before a request is sent,
and the BianQue plain format goes to the completions endpoint with its speaker labels as stop strings.

Token counts for the budget come from the model's tokenizer when it is available locally (`tokenizer=`;
else the model name when that is a local folder or a cached hub id; else what vLLM's /models says the
name is: a LoRA's `parent` base model or its `root`); otherwise `estimate_tokens`, a deliberately high
count (see there). Reply token counts come from the server's `usage` when it sends
one, else from the same counter.

Generation parameters go to the server the way it understands them (`dialect`): vLLM takes
`repetition_penalty` as an extra body field; `transformers serve` rejects unknown fields and only
samples when told `do_sample`, so it gets a `generation_config` JSON; a strict OpenAI server gets the
standard fields only. With dialect "auto" the first request tries vLLM's form and switches on the
server's refusal.

Every failure (server down, wrong model name, timeout, a stream cut in the middle) becomes a
`GenerationError` with a Chinese message for the clinician; a reply that did not finish has no
`result`, so the service never stores it as complete. Each request opens its own stream, so the engine
works again as soon as the server is back.

Beside it: `served_tokens` (token counts without the server), `openai_errors` (the messages),
`remote_generation` (cancel wakes the reader), `local_server` (`LocalServer`, `free_port`); the names
callers used before the split are re-exported here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

from mvp.model.dialogue import ContextBudget, PlainFormat, make_format
from mvp.model.engine import (
    _DONE,
    EngineBase,
    end_of_turn_ids,
    GenerationError,
    GenerationParams,
    ReplyResult,
    cut_at_stop,
)
from mvp.model.local_server import SERVER_START_TIMEOUT_S, LocalServer, free_port  # noqa: F401 - re-exported
from mvp.model.openai_errors import StreamCut, explain, server_detail
from mvp.model.remote_generation import RemoteGeneration
from mvp.model.served_tokens import (  # noqa: F401 - re-exported: callers import them from here
    ESTIMATE_MARGIN,
    EstimatedChatFormat,
    OpenAIBackendError,
    estimate_tokens,
    load_local_tokenizer,
    local_folder,
)

DEFAULT_TIMEOUT_S = 120.0  # longest wait for the next streamed bytes (first token included)
CONNECT_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 3.0  # GET /models at start-up and when explaining an error
DEFAULT_CONTEXT_TOKENS = 4096  # when neither the flag, a local config.json nor the server says
NO_API_KEY = "EMPTY"  # vLLM and transformers serve accept any key unless started with one
DIALECTS = ("auto", "vllm", "transformers", "openai")


class OpenAIEngine(EngineBase):
    """Replies from a model served behind an OpenAI-compatible API; the same interface as `Engine`."""

    backend = "openai"
    generation_class = RemoteGeneration

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        tokenizer=None,
        prompt_format="chat",
        max_context_tokens: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        adapter: str | None = None,
        quantization: str | None = None,
        dialect: str = "auto",
        probe: bool = True,
        generation_defaults: dict | None = None,
    ):
        import openai

        if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
            raise OpenAIBackendError(f"--base-url {base_url!r} 无效，应为 http://HOST:PORT/v1 这样的地址")
        if not model:
            raise OpenAIBackendError("openai 后端需要 --model：服务端的模型名（vLLM 的 --served-model-name 或 LoRA 名）")
        if dialect not in DIALECTS:
            raise OpenAIBackendError(f"dialect {dialect!r} 无效，可选 {', '.join(DIALECTS)}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.adapter = adapter
        self.generation_defaults = dict(generation_defaults or {})
        self.quantization = quantization or "server"
        self.timeout_s = float(timeout_s)
        self.dialect = dialect
        self._auto = dialect == "auto"
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or NO_API_KEY,
            max_retries=0,  # a clinician waits: fail fast with a clear message, the next reply retries
            timeout=openai.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s)),
        )

        self.server_models: list[dict] | None = self.list_models() if probe else None

        # Tokenizer: an explicit one (object or path) must load; otherwise try the model name, then
        # what vLLM reports for it (a LoRA's base model `parent`, or the served folder `root`).
        self.tokenizer = None
        self.tokenizer_source = None
        if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
            self.tokenizer = tokenizer
            self.tokenizer_source = getattr(tokenizer, "name_or_path", "object")
        elif tokenizer is not None:
            self.tokenizer = load_local_tokenizer(str(tokenizer), required=True)
            self.tokenizer_source = str(tokenizer)
        else:
            entry = self._served_entry() or {}
            for name in dict.fromkeys([model, entry.get("parent"), entry.get("root")]):
                if isinstance(name, str) and name:
                    self.tokenizer = load_local_tokenizer(name)
                    if self.tokenizer is not None:
                        self.tokenizer_source = name
                        break

        # Without the served model's chat template here, a ChatML stand-in only counts tokens.
        has_template = self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None)
        self.format = make_format(prompt_format, self.tokenizer if has_template else None,
                                  fallback=EstimatedChatFormat)

        self.end_of_turn = self._end_of_turn()
        context = self._context_tokens()
        if max_context_tokens:
            context = min(context, int(max_context_tokens)) if self._context_known else int(max_context_tokens)
        self.budget = ContextBudget(self.format, self.count_tokens, context)

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def info(self) -> dict:
        """What answers: the served model and where; the same keys as Engine.info plus served_name,
        base_url and how tokens are counted."""
        return {
            "base_model": self.model,
            "adapter": self.adapter,
            "quantization": self.quantization,
            "device": f"远程服务 {self.base_url}",
            "is_demo": False,
            "backend": self.backend,
            "prompt_format": self.format.name,
            "served_name": self.model,
            "base_url": self.base_url,
            "token_counter": "tokenizer" if self.tokenizer is not None else "estimate",
        }

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return estimate_tokens(text)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def list_models(self) -> list[dict] | None:
        """The server's /models list (id, and for vLLM root/parent/max_model_len), None if unreachable."""
        try:
            page = self.client.models.list(timeout=PROBE_TIMEOUT_S)
            return [m.model_dump() for m in page.data]
        except Exception:
            return None

    def _served_entry(self) -> dict | None:
        for entry in self.server_models or []:
            if entry.get("id") == self.model:
                return entry
        return None

    def _local_json(self, filename: str) -> dict:
        """A JSON file (config.json, generation_config.json) of the model folder when it is local."""
        for name in (self.tokenizer_source, self.model):
            folder = local_folder(name) if isinstance(name, str) else None
            if folder and (folder / filename).exists():
                try:
                    data = json.loads((folder / filename).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    return {}
                return data if isinstance(data, dict) else {}
        return {}

    def _context_tokens(self) -> int:
        """The model's context: vLLM's max_model_len, else the local config.json, else the default."""
        self._context_known = True
        entry = self._served_entry() or {}
        n = entry.get("max_model_len") or self._local_json("config.json").get("max_position_embeddings")
        if isinstance(n, int) and 0 < n < 10**7:
            return n
        self._context_known = False
        return DEFAULT_CONTEXT_TOKENS

    def _end_of_turn(self) -> dict:
        """eos/pad token ids as the in-process Engine uses them (the model's eos, the tokenizer's eos and
        <|im_end|>), from the local model folder and tokenizer; {} when neither is here."""
        config = self._local_json("generation_config.json")
        tok = self.tokenizer
        ids = end_of_turn_ids(config, tok)
        pad = config.get("pad_token_id")
        if pad is None and tok is not None:
            pad = tok.pad_token_id
        out = {"eos_token_id": ids} if ids else {}
        if isinstance(pad, int):
            out["pad_token_id"] = pad
        return out

    def generation_config(self) -> dict:
        """generation_config.json of the model folder when it is on this machine, else {}."""
        return self._local_json("generation_config.json")

    # -- generation -------------------------------------------------------------------------------
    def request_kwargs(self, params: GenerationParams, dialect: str) -> dict:
        """The create() arguments for these parameters, in the form this server understands."""
        kwargs: dict = {"model": self.model, "max_tokens": params.max_new_tokens, "stream": True}
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if dialect == "transformers":
            # transformers serve keeps the model's do_sample unless told, and refuses unknown fields.
            # With --continuous-batching it takes this config as the whole config (the model's eos
            # is not merged in: replies ran past the end of turn), so the end-of-turn ids go with it.
            config = {"do_sample": params.temperature > 0, "max_new_tokens": params.max_new_tokens,
                      "repetition_penalty": params.repetition_penalty, **self.end_of_turn}
            if params.temperature > 0:  # top_k 0: no top-k cut, as the in-process engine
                config.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            kwargs["extra_body"] = {"generation_config": json.dumps(config)}
            return kwargs  # it always sends usage with the last chunk
        kwargs.update(temperature=params.temperature, top_p=params.top_p,
                      stream_options={"include_usage": True})
        if dialect != "openai":
            kwargs["extra_body"] = {"repetition_penalty": params.repetition_penalty}
        return kwargs

    def _create(self, fit, params: GenerationParams):
        while True:
            dialect = "vllm" if self.dialect == "auto" else self.dialect
            kwargs = self.request_kwargs(params, dialect)
            try:
                if isinstance(self.format, PlainFormat):
                    stream = self.client.completions.create(prompt=fit.prompt, stop=list(self.format.stop_strings), **kwargs)
                else:
                    stream = self.client.chat.completions.create(messages=fit.messages, **kwargs)
            except Exception as exc:
                fallback = self._fallback_dialect(dialect, exc)
                if fallback is None:
                    raise
                self.dialect = fallback
                continue
            if self.dialect == "auto":
                self.dialect = dialect
            return stream

    def _fallback_dialect(self, dialect: str, exc) -> str | None:
        """On 'auto', a server's refusal of vLLM's extra field tells which server it is."""
        import openai

        if not self._auto or dialect != "vllm" or not isinstance(exc, openai.APIStatusError):
            return None
        detail = server_detail(exc)
        if exc.status_code == 422 and "Unexpected fields" in detail:
            return "transformers"
        if exc.status_code in (400, 422) and "repetition_penalty" in detail:
            return "openai"
        return None

    def _run(self, gen: RemoteGeneration, fit, params: GenerationParams) -> None:
        import openai

        started = time.perf_counter()
        first_token_at = None
        received: list[str] = []
        finish = None
        usage = None
        stream = None
        try:
            stream = self._create(fit, params)
            gen.attach(stream)
            try:
                for chunk in stream:
                    if gen.cancel_event.is_set():
                        break
                    if getattr(chunk, "usage", None):
                        usage = chunk.usage
                    for choice in chunk.choices or []:
                        delta = getattr(choice, "delta", None)
                        text = delta.content if delta is not None else getattr(choice, "text", None)
                        if text:
                            if first_token_at is None:
                                first_token_at = time.perf_counter()
                            received.append(text)
                            gen.deltas.put(text)
                        if choice.finish_reason:
                            finish = choice.finish_reason
            except Exception as exc:
                if not gen.cancel_event.is_set():
                    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
                        raise StreamCut() from exc  # the server or the network went away mid-reply
                    raise
                # cancel() shut the socket under the reader: a cancelled reply, not a failure.
            cancelled = gen.cancel_event.is_set()
            if finish is None and not cancelled:
                raise StreamCut()
            raw = "".join(received)
            text, stopped = cut_at_stop(raw, self.format.stop_strings)
            if stopped or (finish == "stop" and not cancelled):
                reason = "stop"
            elif cancelled:
                reason = "cancelled"
            else:
                reason = "length" if finish == "length" else "stop"
            # usage counts what the server generated; after a cancel it never arrives: count here.
            new_tokens = usage.completion_tokens if usage and not cancelled else self.count_tokens(raw)
            gen.result = ReplyResult(
                text=text,
                finish_reason=reason,
                prompt_tokens=usage.prompt_tokens if usage else fit.prompt_tokens,
                new_tokens=int(new_tokens),
                ttft_s=(first_token_at - started) if first_token_at else None,
                total_s=time.perf_counter() - started,
                dropped_turns=fit.dropped_turns,
                first_visible=fit.first_visible,
                summary_used=fit.summary_used,
                params=params.to_dict(),
                model=self.info,
            )
        except Exception as exc:  # no result: the service shows the message and stores no reply
            gen.error = GenerationError(self.explain(exc, partial="".join(received)))
        finally:
            gen.detach()
            if stream is not None:
                try:
                    stream.close()
                except Exception:
                    pass
            gen.deltas.put(_DONE)

    # -- error messages ---------------------------------------------------------------------------
    def explain(self, exc: BaseException, partial: str = "") -> str:
        """A message for the clinician saying what went wrong with the model server and what to do."""
        return explain(exc, base_url=self.base_url, model=self.model, timeout_s=self.timeout_s,
                       list_models=self.list_models, partial=partial)




def startup_warnings(engine: OpenAIEngine) -> list[str]:
    """What the app tells the operator at start-up about a served model (server down, name not listed,
    no local tokenizer); the app starts anyway, so a server that comes back later just works."""
    warnings = []
    if engine.server_models is None:
        warnings.append(f"警告：暂时无法连接 {engine.base_url}；应用照常启动，服务恢复后即可生成回复")
    elif engine._served_entry() is None:
        names = ", ".join(str(m.get("id")) for m in engine.server_models)
        warnings.append(f"警告：{engine.base_url} 没有列出模型 {engine.model!r}（列出的：{names}）")
    if engine.tokenizer is None:
        warnings.append("提示：本机没有这个模型的分词器，上下文预算按保守估计计算（每个汉字 1 个 token 以上）")
    return warnings


_RemoteGeneration = RemoteGeneration  # the name before the split
