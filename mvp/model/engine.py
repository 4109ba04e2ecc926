"""The in-process generation engine: messages in, a stream of reply text out, with metadata.

    engine = Engine(load_model(ModelSpec("demo")))
    gen = engine.start(messages, GenerationParams(max_new_tokens=128, seed=1))
    for delta in gen:          # text as it is generated
        print(delta, end="")
    gen.result                 # ReplyResult: text, finish_reason, tokens, timings, model metadata
    gen.cancel()               # from another thread: stops at the next token

The engine fits the conversation into the model's context (`mvp.model.dialogue.ContextBudget`), renders it
with the prompt format, and runs `model.generate` in a worker thread. Only one generation runs on the
model at a time (a lock), so concurrent clinicians queue instead of sharing a GPU by accident.
It knows nothing about stages, the UI or the database.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from mvp.model.dialogue import ContextBudget, make_format
from mvp.model.loader import LoadedModel

MAX_NEW_TOKENS_LIMIT = 4096
STREAM_TIMEOUT_S = 600.0


class GenerationError(RuntimeError):
    """Generation failed inside the model; the message is safe to show to a clinician."""


@dataclass
class GenerationParams:
    """Sampling settings. temperature 0 means greedy decoding."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.1
    seed: int | None = None

    def __post_init__(self) -> None:
        def number(name, lo, hi, integer=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} 必须是数字，收到 {value!r}")
            if integer and int(value) != value:
                raise ValueError(f"{name} 必须是整数，收到 {value!r}")
            if math.isnan(value) or not lo <= value <= hi:
                raise ValueError(f"{name} 必须在 {lo} 到 {hi} 之间，收到 {value!r}")

        number("temperature", 0.0, 2.0)
        number("top_p", 0.01, 1.0)
        number("max_new_tokens", 1, MAX_NEW_TOKENS_LIMIT, integer=True)
        number("repetition_penalty", 1.0, 2.0)
        self.max_new_tokens = int(self.max_new_tokens)
        if self.seed is not None:
            number("seed", 0, 2**32 - 1, integer=True)
            self.seed = int(self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=None)
        return kwargs


@dataclass
class ReplyResult:
    """A finished (or cancelled) reply and everything the store records about it."""

    text: str
    finish_reason: str  # "stop" (end of turn), "length" (max_new_tokens) or "cancelled"
    prompt_tokens: int
    new_tokens: int
    ttft_s: float | None
    total_s: float
    dropped_turns: int
    params: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    first_visible: int = 0  # index in the chat history of the oldest message the model saw (FitResult)
    summary_used: bool = False  # the session summary stood in for dropped turns

    def metrics(self) -> dict:
        """Timing and token figures (without the text, params and model info)."""
        return {
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
            "dropped_turns": self.dropped_turns,
            "first_visible": self.first_visible,
            "summary_used": self.summary_used,
        }


class _Streamer:
    """Receives token ids from `generate` (prompt first) and queues decoded text deltas."""

    def __init__(self, tokenizer, out: queue.Queue):
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        # Incremental detokenisation over a short window (constant cost per token): text of
        # ids[prefix:read] was already sent; decode ids[prefix:] and send what it adds.
        self.prefix = 0
        self.read = 0
        self.prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids.extend(value.reshape(-1).tolist())
        decode = self.tokenizer.decode
        sent = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        text = decode(self.ids[self.prefix :], skip_special_tokens=True)
        # Hold back an incomplete multi-byte character (decoded as U+FFFD) until it completes.
        if len(text) > len(sent) and not text.endswith("\ufffd"):
            self.out.put(text[len(sent) :])
            self.prefix, self.read = self.read, len(self.ids)

    def end(self) -> None:
        pass


class _CancelCriteria:
    """A StoppingCriteria that stops generation when the cancel event is set."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool)


_DONE = object()


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """Text up to the first stop string, and whether one was found."""
    positions = [text.find(s) for s in stop_strings if s in text]
    if positions:
        return text[: min(positions)], True
    return text, False


class Generation:
    """One reply being generated. Iterate for text deltas; `.result` is set when iteration ends."""

    def __init__(self, stop_strings: Sequence[str] = ()):
        self.cancel_event = threading.Event()
        self.stop_strings = tuple(stop_strings)
        self.result: ReplyResult | None = None
        self.error: BaseException | None = None
        self.deltas: queue.Queue = queue.Queue()
        self.text = ""  # what has been yielded so far

    def cancel(self) -> None:
        """Stop at the next token; the reply so far is kept with finish_reason 'cancelled'."""
        self.cancel_event.set()

    def __iter__(self) -> Iterator[str]:
        # A stop string may arrive split over deltas: hold back that many characters.
        hold = max((len(s) for s in self.stop_strings), default=1) - 1
        pending = ""
        while True:
            try:
                item = self.deltas.get(timeout=STREAM_TIMEOUT_S)
            except queue.Empty:
                self.cancel()
                raise GenerationError("模型长时间没有输出，已停止生成") from None
            if item is _DONE:
                break
            pending += item
            if self.stop_strings:
                pending, stopped = cut_at_stop(self.text + pending, self.stop_strings)
                pending = pending[len(self.text) :]
                if stopped:
                    self.cancel_event.set()
                    continue
                ready = pending[: max(0, len(pending) - hold)]
            else:
                ready = pending
            if ready:
                self.text += ready
                pending = pending[len(ready) :]
                yield ready
        if self.error is not None:
            raise self.error
        final = self.result.text if self.result is not None else self.text + pending
        if final.startswith(self.text) and len(final) > len(self.text):
            rest = final[len(self.text) :]
            self.text = final
            yield rest


def end_of_turn_ids(generation_config: dict, tokenizer) -> list[int]:
    """Token ids that end a reply: the model's eos ids, the tokenizer's eos and <|im_end|>."""
    ids = set()
    eos = generation_config.get("eos_token_id")
    for value in eos if isinstance(eos, (list, tuple)) else [eos]:
        if isinstance(value, int) and not isinstance(value, bool):
            ids.add(value)
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            ids.add(im_end)
    return sorted(ids)


class EngineBase:
    """What every backend shares: default parameters, and start/generate over a Generation that a
    worker thread (`_run(gen, fit, params)`) fills. Subclasses set format, budget, generation_defaults."""

    generation_class = Generation

    def generation_config(self) -> dict:
        """The model's own generation settings (generation_config.json), {} when unknown."""
        return {}

    def default_params(self) -> GenerationParams:
        """Defaults from the model's generation_config where it sets them, then the app's overrides."""
        config = self.generation_config()
        values = {}
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = config.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name] = float(value)
        value = config.get("max_new_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_NEW_TOKENS_LIMIT:
            values["max_new_tokens"] = value
        values.update(self.generation_defaults)
        try:
            return GenerationParams(**values)
        except ValueError:
            return GenerationParams()

    def start(self, messages: Sequence[dict], params: GenerationParams | None = None, *,
              pinned: Sequence[str] = (), summary: str | None = None, covered: int = 0,
              keep_summary: bool = False) -> Generation:
        """Fit, render and start generating; raises DialogueError/ContextTooLongError up front.

        `pinned` notes ride with the system prompt and are never dropped (a risk note); `summary`
        stands in for the turns the budget drops (see ContextBudget.fit). The result reports
        dropped_turns, first_visible and summary_used. `covered` and `keep_summary`: see ContextBudget.fit.
        """
        params = params or self.default_params()
        fit = self.budget.fit(messages, params.max_new_tokens, pinned=pinned, summary=summary, covered=covered,
                              keep_summary=keep_summary)
        gen = self.generation_class(self.format.stop_strings)
        threading.Thread(target=self._run, args=(gen, fit, params), daemon=True).start()
        return gen

    def generate(self, messages: Sequence[dict], params: GenerationParams | None = None, *,
                 pinned: Sequence[str] = (), summary: str | None = None, covered: int = 0,
                 keep_summary: bool = False) -> ReplyResult:
        """Generate a whole reply (not streamed)."""
        gen = self.start(messages, params, pinned=pinned, summary=summary, covered=covered,
                         keep_summary=keep_summary)
        for _ in gen:
            pass
        return gen.result

    def _run(self, gen: Generation, fit, params: GenerationParams) -> None:  # pragma: no cover
        raise NotImplementedError


class Engine(EngineBase):
    """Generates replies from a LoadedModel. Thread-safe: one generation at a time on the model."""

    backend = "inprocess"

    def __init__(
        self,
        loaded: LoadedModel,
        prompt_format=None,
        max_context_tokens: int | None = None,
        generation_defaults: dict | None = None,
    ):
        self.loaded = loaded
        self.generation_defaults = dict(generation_defaults or {})
        self.tokenizer = loaded.tokenizer
        self.format = make_format(prompt_format, self.tokenizer)
        context = loaded.max_context
        if max_context_tokens:
            context = min(context, int(max_context_tokens))
        self.budget = ContextBudget(self.format, self.count_tokens, context)
        self._lock = threading.Lock()
        self.eos_ids = end_of_turn_ids(self.generation_config(), self.tokenizer)

    @property
    def info(self) -> dict:
        """What answers: base model, adapter, quantization, device, demo flag, backend, format."""
        return {**self.loaded.describe(), "backend": self.backend, "prompt_format": self.format.name}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generation_config(self) -> dict:
        config = getattr(self.loaded.model, "generation_config", None)
        return config.to_dict() if config is not None else {}

    def _run(self, gen: Generation, fit, params: GenerationParams) -> None:
        import torch
        from transformers import StoppingCriteriaList

        streamer = _Streamer(self.tokenizer, gen.deltas)
        try:
            with self._lock:
                started = time.perf_counter()
                encoded = self.tokenizer(fit.prompt, return_tensors="pt", add_special_tokens=False)
                encoded = {k: v.to(self.loaded.model.device) for k, v in encoded.items()}
                prompt_tokens = int(encoded["input_ids"].shape[1])
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    out = self.loaded.model.generate(
                        **encoded,
                        **params.generate_kwargs(),
                        eos_token_id=self.eos_ids,
                        pad_token_id=self.tokenizer.pad_token_id,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_CancelCriteria(gen.cancel_event)]),
                    )
                total = time.perf_counter() - started
            ids = out[0, prompt_tokens:].tolist()
            text, stopped = cut_at_stop(
                self.tokenizer.decode(ids, skip_special_tokens=True), self.format.stop_strings
            )
            if stopped or (ids and ids[-1] in self.eos_ids):
                reason = "stop"
            elif gen.cancel_event.is_set():
                reason = "cancelled"
            else:
                reason = "length"
            gen.result = ReplyResult(
                text=text,
                finish_reason=reason,
                prompt_tokens=prompt_tokens,
                new_tokens=len(ids),
                ttft_s=(streamer.first_token_at - started) if streamer.first_token_at else None,
                total_s=total,
                dropped_turns=fit.dropped_turns,
                first_visible=fit.first_visible,
                summary_used=fit.summary_used,
                params=params.to_dict(),
                model=self.info,
            )
        except Exception as exc:  # surfaced to whoever iterates the generation
            gen.error = GenerationError(f"生成失败：{type(exc).__name__}: {exc}")
        finally:
            gen.deltas.put(_DONE)
