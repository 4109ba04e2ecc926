"""Token counts for a model served elsewhere: its tokenizer when it is on this machine, else an estimate.

The context budget needs token counts before a request is sent. `OpenAIEngine` loads the served
model's tokenizer from a local folder or the local hub cache (`load_local_tokenizer`, never the
network); without one it counts with `estimate_tokens` (deliberately high) and measures prompt
overhead on `EstimatedChatFormat` (ChatML-shaped text, never sent: the server renders the real prompt).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from mvp.model.loader import ModelLoadError

ESTIMATE_MARGIN = 1.15
_ESTIMATE_PIECES = re.compile(r"[A-Za-z]+|\s+|[\x00-\x7f]|[^\x00-\x7f]")


class OpenAIBackendError(ModelLoadError):
    """The backend cannot be set up (bad URL, missing tokenizer folder); app.py shows it and exits."""


def estimate_tokens(text: str) -> int:
    """A high estimate of the token count, for budgeting when the tokenizer is not available here.

    Each non-ASCII character (Chinese) counts 1 token, each ASCII digit or punctuation 1, a run of
    whitespace 1, a run of Latin letters 1 per 3 letters; plus 15 %. Large-vocabulary tokenizers
    (Qwen2.5, Llama 3, GLM) use about 0.6-0.8 tokens per common Chinese character, so this
    overestimates and the budget drops old turns a little early rather than overflowing the context.
    Rare characters can cost 2-3 byte tokens each; the server still refuses an over-long prompt,
    and that refusal becomes a clear error.
    """
    n = 0
    for piece in _ESTIMATE_PIECES.findall(text):
        if piece[0].isascii() and piece[0].isalpha():
            n += math.ceil(len(piece) / 3)
        else:
            n += 1
    return math.ceil(n * ESTIMATE_MARGIN)


class EstimatedChatFormat:
    """Stands in for the server's chat template when it is not available locally: ChatML-shaped
    text, only ever used to count tokens (the server renders the real prompt)."""

    name = "chat"
    stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[dict]) -> str:
        parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        return "".join(parts) + "<|im_start|>assistant\n"


def local_folder(name: str | None) -> Path | None:
    """`name` as a folder on this machine, or None."""
    if not name:
        return None
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def load_local_tokenizer(name: str | None, required: bool = False):
    """A tokenizer from a local folder or the local hub cache (never the network), or None."""
    if not name:
        return None
    folder = local_folder(name)
    if required and folder is None:
        raise OpenAIBackendError(f"找不到分词器文件夹 {name}：请给出包含 tokenizer.json 的模型文件夹")
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder or name), local_files_only=True)
    except Exception as exc:  # no tokenizer there: fall back to the estimate
        if required:
            raise OpenAIBackendError(f"无法从 {name} 加载分词器：{exc}") from None
        return None
