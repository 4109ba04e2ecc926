"""Small Qwen2-architecture language models built offline from local text.

Used by the built-in demo model (`train.demo.build`) and by the test fixtures: no hub download is
possible on our machines, so the tokenizer is trained here and the model is initialised from a config.

The tokenizer is trained with exactly Qwen2's pre-tokenization pipeline: for a `qwen2` model,
`AutoTokenizer` always returns `Qwen2Tokenizer`, which ignores the saved normalizer/pre-tokenizer and
rebuilds Qwen's own, so any other pipeline would silently tokenize differently after a reload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mvp.paths import DATA_DIR, REPO_ROOT  # noqa: F401 - REPO_ROOT kept for callers

BUNDLED_DIALOGUE_FILES = ("cpsycound_dev.jsonl", "mdd5k_dev.jsonl")

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen-style ChatML. The {% generation %} markers let TRL compute an assistant-only loss.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class ModelShape:
    """Size of a small Qwen2 model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 2048


# "test": built in about a second, for unit tests. "demo": what a 5-minute CPU build can train
# (STACK_NOTES: 1.3 M parameters reached the best held-out perplexity in that budget).
SHAPES = {
    "test": ModelShape(64, 128, 2, 4, 2, 1024),
    "demo": ModelShape(128, 384, 4, 4, 2, 2048),
}


def iter_dialogues(paths: Iterable[Path] | None = None) -> Iterator[dict]:
    """Yield the bundled dialogues ({"id", "messages", ...}) from the JSONL files in data/."""
    for path in paths or [DATA_DIR / name for name in BUNDLED_DIALOGUE_FILES]:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    yield json.loads(line)


def dialogue_texts(dialogues: Iterable[dict]) -> Iterator[str]:
    """The message contents of dialogues, one string each (tokenizer training text)."""
    for dialogue in dialogues:
        for message in dialogue["messages"]:
            yield message["content"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000):
    """Train a byte-level BPE tokenizer with Qwen2's pipeline and wrap it for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_config(tokenizer, shape: ModelShape):
    """A Qwen2Config of the given shape for this tokenizer (tied embeddings, ChatML end token)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )


def build_untrained(
    out_dir: str | Path,
    shape: str | ModelShape = "test",
    vocab_size: int = 2000,
    max_dialogues: int | None = 300,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on the bundled dialogues, initialise a model, save both to out_dir."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    shape = SHAPES[shape] if isinstance(shape, str) else shape
    dialogues = list(iter_dialogues())
    if max_dialogues is not None:
        dialogues = dialogues[:max_dialogues]
    tokenizer = train_tokenizer(dialogue_texts(dialogues), vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(tokenizer, shape))
    model.generation_config = GenerationConfig(
        eos_token_id=model.config.eos_token_id, pad_token_id=model.config.pad_token_id
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
