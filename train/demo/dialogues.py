"""The demo build's data: the held-out split of the bundled dialogues, the system prompts, windows of
whole turns (token ids + assistant mask) and the held-out perplexity of the counsellor's tokens.

Used by `train.demo.build` (`python -m train.demo`) and its tests; reads data/ through `tiny_lm`.
"""

from __future__ import annotations

import hashlib
import math

from train.demo import tiny_lm

EVAL_THREADS = 1
HELDOUT_PER_MILLE = 50  # ~5% of dialogues, chosen by a hash of their id, are never trained on
DEFAULT_MAX_LENGTH = 256  # tokens per window (BuildSettings.max_length of the full build)

GENERIC_SYSTEM_PROMPT = "你是一名温和、专业的心理咨询师，请耐心倾听来访者，用共情的语气回应。"
# Rotated over training windows so that the stage instructions the app sends look familiar.
STAGE_SYSTEM_PROMPTS = (
    GENERIC_SYSTEM_PROMPT,
    GENERIC_SYSTEM_PROMPT + "当前阶段：建立关系与初始访谈，了解来访原因，建立信任。",
    GENERIC_SYSTEM_PROMPT + "当前阶段：评估与问题澄清，询问困扰的表现、持续时间和影响。",
    GENERIC_SYSTEM_PROMPT + "当前阶段：干预，用认知行为疗法帮助来访者调整想法、练习应对方法。",
    GENERIC_SYSTEM_PROMPT + "当前阶段：巩固与结束，回顾收获，讨论今后的应对，温和地结束咨询。",
)


class DemoBuildError(RuntimeError):
    """A build that cannot proceed (bad arguments, missing data); the message says how to fix it."""


# ---------------------------------------------------------------------------------------------
# Data


def is_heldout(dialogue_id: str) -> bool:
    """Deterministic ~5% eval split by a hash of the dialogue id (stable across Python runs)."""
    digest = hashlib.sha256(dialogue_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE


def heldout_dialogues() -> list[dict]:
    """The bundled dialogues held back from training (for evaluation)."""
    return [d for d in tiny_lm.iter_dialogues() if is_heldout(d["id"])]


def training_dialogues() -> list[dict]:
    """The bundled dialogues the demo model trains on (all but the held-out ones)."""
    return [d for d in tiny_lm.iter_dialogues() if not is_heldout(d["id"])]


class _ChatPieces:
    """Token ids of the ChatML pieces around a message, cached per role.

    A message is `<|im_start|>ROLE\\n` + content + `<|im_end|>` + `\\n` (tiny_lm.CHAT_TEMPLATE). Each
    piece is encoded on its own, as at inference, where the prompt ends with `<|im_start|>assistant\\n`
    and the reply is generated after it.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.end = tokenizer.convert_tokens_to_ids(tiny_lm.EOS_TOKEN)
        self.newline = self._encode("\n")
        self.headers: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def wrap(self, role: str, content_ids: list[int]) -> tuple[list[int], list[int]]:
        """(ids, mask) of one message; the mask is 1 on an assistant's content and <|im_end|>."""
        if role not in self.headers:
            self.headers[role] = self._encode(f"<|im_start|>{role}\n")
        header = self.headers[role]
        body = [*content_ids, self.end]
        scored = 1 if role == "assistant" else 0
        mask = [0] * len(header) + [scored] * len(body) + [0] * len(self.newline)
        return header + body + self.newline, mask


def encode_windows(
    tokenizer, dialogues: list[dict], max_length: int, system_prompts=(GENERIC_SYSTEM_PROMPT,)
) -> list[dict]:
    """Split dialogues into windows of whole turns of at most max_length tokens.

    Each window opens with a system prompt (rotating over `system_prompts` window by window), then as
    many whole messages as fit. A message too long for a window of its own is skipped (rare in data/).
    Returns [{"input_ids": [...], "assistant_mask": [0|1, ...], "dialogue_id": str}].
    """
    pieces = _ChatPieces(tokenizer)
    systems = [pieces.wrap("system", pieces._encode(p)) for p in system_prompts]
    windows: list[dict] = []
    for dialogue in dialogues:
        messages = dialogue["messages"]
        contents = tokenizer([m["content"] for m in messages], add_special_tokens=False)["input_ids"]
        ids: list[int] = []
        mask: list[int] = []
        count = 0  # messages in the current window
        for message, content_ids in zip(messages, contents):
            m_ids, m_mask = pieces.wrap(message["role"], content_ids)
            if count and len(ids) + len(m_ids) > max_length:
                windows.append({"input_ids": ids, "assistant_mask": mask, "dialogue_id": dialogue["id"]})
                count = 0
            if not count:
                s_ids, s_mask = systems[len(windows) % len(systems)]
                ids, mask = list(s_ids), list(s_mask)
            if len(ids) + len(m_ids) > max_length:
                continue
            ids += m_ids
            mask += m_mask
            count += 1
        if count:
            windows.append({"input_ids": ids, "assistant_mask": mask, "dialogue_id": dialogue["id"]})
    return windows


# ---------------------------------------------------------------------------------------------
# Evaluation


def eval_perplexity(model, tokenizer, dialogues: list[dict], max_length: int = DEFAULT_MAX_LENGTH,
                    batch_size: int = 8) -> float:
    """Perplexity of the assistant tokens (content + <|im_end|>) of dialogues.

    The dialogues are cut into the same whole-turn windows as in training, with the generic system
    prompt; every token before an assistant token is context. Returns exp(mean negative log-likelihood).
    """
    import torch
    import torch.nn.functional as F

    windows = encode_windows(tokenizer, dialogues, max_length)
    if not windows:
        raise DemoBuildError("eval_perplexity: the dialogues gave no window to score")
    windows.sort(key=lambda w: len(w["input_ids"]))  # less padding per batch
    pad = tokenizer.convert_tokens_to_ids(tiny_lm.PAD_TOKEN)
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    threads = torch.get_num_threads()
    # One thread: as fast on an idle 2-core machine, many times faster on a busy one (ThreadTuner).
    torch.set_num_threads(EVAL_THREADS)
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                width = max(len(w["input_ids"]) for w in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                for row, w in enumerate(batch):
                    n = len(w["input_ids"])
                    ids[row, :n] = torch.tensor(w["input_ids"])
                    attention[row, :n] = 1
                    scored = torch.tensor(w["assistant_mask"], dtype=torch.bool)
                    labels[row, :n] = torch.where(scored, ids[row, :n], -100)
                logits = model(input_ids=ids, attention_mask=attention).logits.float()
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)),
                    labels[:, 1:].reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
                total_nll += nll.item()
                total_tokens += int((labels[:, 1:] != -100).sum())
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    if total_tokens == 0:
        raise DemoBuildError("eval_perplexity: the dialogues have no assistant tokens to score")
    return math.exp(total_nll / total_tokens)
