"""Screening of model replies before the client sees them, whole (`screen_text`) or streamed (`ReplyStream`).

What it is for: a reply that gives method details, encourages harm, dismisses risk or claims to be a
human clinician is replaced by a safe text (patterns and replacements in config/safety_rules.yaml,
section reply_screening), or that the learned reply model (mvp/safety/reply_model.py) flags; either
blocks. `ReplyStream` lets the app stream a reply through the screen: text is
released only when a screen of everything released so far (plus a small lookahead) passes, so that
blocked content never reaches the client, not even for a moment.

    python -m mvp.safety screen --crisis < replies.txt

    stream = ReplyStream(lambda text: screen_reply(text, detection))
    for chunk in engine_chunks:
        shown += stream.feed(chunk)          # only screened text, sentence by sentence
    final = stream.close()                   # ReplyScreen of the whole reply
    shown = final.text if final.blocked else shown + stream.tail   # replacement, or the rest
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from mvp.safety.detect import RuleSet

MAX_EVIDENCE = 20                 # evidence strings kept per detection
MAX_EVIDENCE_SPAN = 40            # characters of matched text kept per evidence string
LEARNED_REASON = "screen_error"   # reason when the learned reply model failed (the reply is not shown)
STREAM_LOOKAHEAD = 8              # characters past a boundary that must pass the screen before release
STREAM_MAX_HOLD = 60              # release at a clause break once this much text waits for a sentence end


@dataclass(frozen=True)
class ReplyScreen:
    """Screening of a model reply: `text` is the reply itself or, when blocked, a safe replacement."""

    blocked: bool
    reasons: tuple[str, ...]
    text: str
    evidence: tuple[str, ...] = ()


def original_span(text: str, index: list[int] | None, start: int, end: int) -> str:
    """The original text behind normalised positions start:end (cut to MAX_EVIDENCE_SPAN)."""
    if index is not None:
        start, end = index[start], index[end - 1] + 1
    return text[start:end][:MAX_EVIDENCE_SPAN]


def screen_text(rules: "RuleSet", text: str, crisis: bool, resources=None, learned: bool = True) -> ReplyScreen:
    """Apply `rules`' reply_screening patterns (crisis_patterns too when `crisis`) and, when `learned`, the
    learned reply model (mvp/safety/reply_model.py) to one reply: either one blocks."""
    from mvp.safety.normalise import normalise
    from mvp.safety.rules import SCREEN_KINDS

    norm, index = normalise(text)
    reasons: list[str] = []
    evidence: list[str] = []
    for kind in SCREEN_KINDS:
        always, crisis_only = rules._screening[kind]
        for regex in (always, crisis_only if crisis else None):
            if regex is None:
                continue
            for m in regex.finditer(norm):
                if m.end() == m.start() or rules.negated(norm, m.start(), m.end()):
                    continue
                if kind not in reasons:
                    reasons.append(kind)
                evidence.append(f"{kind}:{original_span(text, index, m.start(), m.end())}")
    if learned:
        try:
            from mvp.safety.reply_model import unsafe_kinds
            found = unsafe_kinds(text, crisis)
        except Exception as exc:  # noqa: BLE001 - fail safe: a reply that cannot be screened is not shown
            found = {LEARNED_REASON: 1.0}
            evidence.append(f"error:{type(exc).__name__}")
        for kind, p in found.items():
            if kind not in reasons:
                reasons.append(kind)
            evidence.append(f"{kind}:learned {p:.2f}")
    if not reasons:
        return ReplyScreen(False, (), text)
    return ReplyScreen(True, tuple(reasons), replacement(rules, reasons, crisis, resources),
                       tuple(dict.fromkeys(evidence))[:MAX_EVIDENCE])


def replacement(rules: "RuleSet", reasons: list[str], crisis: bool, resources=None) -> str:
    """The safe text shown instead of a blocked reply."""
    from mvp.safety.resources import default_resources

    parts = []
    if "human_claim" in reasons:
        parts.append(rules.replacements["human_claim"])
    if crisis or "method_details" in reasons or "encouragement" in reasons or LEARNED_REASON in reasons:
        res = resources or default_resources()
        parts.append(rules.replacements["crisis"].format(
            emergency_medical=res.emergency_medical, emergency_police=res.emergency_police,
            hotlines=res.hotline_text()))
    elif "dismissive" in reasons or not parts:
        parts.append(rules.replacements["default"])
    return "\n\n".join(parts)


_SENTENCE_END = re.compile(r"[。！？!?；;\n…]+[”’」』）)]*")
_CLAUSE_END = re.compile(r"[，,、：:]")


class ReplyStream:
    """Release a streamed reply only as far as the screen passes; blocked text is never released.

    `screen(text) -> ReplyScreen` is called on everything released so far plus the candidate text
    and a lookahead of `lookahead` characters beyond it (so that a pattern that starts just before a
    boundary is seen whole). Text is released at sentence ends (。！？…), or at a clause break (，)
    once `max_hold` characters are waiting, or (a reply with no punctuation)
    all but the lookahead once twice that many are waiting. After the first failed screen nothing more is released;
    `close()` screens the whole reply and returns the final ReplyScreen: when `blocked`, the client
    must be shown `result.text` (the replacement) instead of what was released (which passed).
    """

    def __init__(self, screen: Callable[[str], ReplyScreen], lookahead: int = STREAM_LOOKAHEAD,
                 max_hold: int = STREAM_MAX_HOLD) -> None:
        if lookahead < 0 or max_hold < 1:
            raise ValueError("ReplyStream needs lookahead >= 0 and max_hold >= 1")
        self._screen = screen
        self.lookahead = lookahead
        self.max_hold = max_hold
        self.released = ""           # text already handed to the client
        self._pending = ""
        self.held = False            # a screen failed: nothing more is released before close()
        self.tail = ""               # what close() released (the end of a reply that passed)
        self.result: ReplyScreen | None = None

    @property
    def text(self) -> str:
        """Everything received so far (released and pending)."""
        return self.released + self._pending

    def _boundary(self) -> int:
        """End of the longest releasable prefix of pending text (0 when none)."""
        limit = len(self._pending) - self.lookahead       # a lookahead must already be there
        cut = 0
        for m in _SENTENCE_END.finditer(self._pending):
            if m.end() <= limit:
                cut = m.end()
        if cut == 0 and len(self._pending) >= self.max_hold:
            for m in _CLAUSE_END.finditer(self._pending):
                if m.end() <= limit:
                    cut = m.end()
        if cut == 0 and len(self._pending) >= 2 * self.max_hold:
            cut = max(limit, 0)  # no punctuation at all: release all but the lookahead (still screened)
        return cut

    def feed(self, chunk: str) -> str:
        """Add generated text; return the part newly released (often "")."""
        if self.result is not None:
            raise RuntimeError("ReplyStream.feed() after close()")
        self._pending += chunk
        if self.held:
            return ""
        cut = self._boundary()
        if cut == 0:
            return ""
        if self._screen(self.released + self._pending).blocked:   # candidate + lookahead (and more)
            self.held = True
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self.released += out
        return out

    def close(self) -> ReplyScreen:
        """End of the reply: screen all of it. Returns the final ReplyScreen (idempotent)."""
        if self.result is None:
            self.result = self._screen(self.text)
            if not self.result.blocked:
                self.tail, self.released, self._pending = self._pending, self.text, ""
        return self.result
