"""A conversation's risk state: what the open safety flags mean for the next turn.

Once a client message is flagged (a crisis detected by any layer, or a screening answer such as PHQ-9
item 9 above 0), the conversation is "at risk" until an admin marks every such flag reviewed:
- the crisis instruction stays on in the system prompt (not only on the detected turn);
- a short risk note is pinned to the system prompt, so that the context budget never drops what
  the client disclosed, however many turns later;
- an active screening pauses (the crisis flow comes first; no item is scored from a crisis message).
Flags on model replies (`output_screen`) are about the model, not the client, and do not count.
"""
from __future__ import annotations

from dataclasses import dataclass

CLIENT_SOURCES = ("rules", "model", "assessment", "manual")
MAX_QUOTES = 3
QUOTE_CHARS = 60


@dataclass(frozen=True)
class RiskState:
    """Open client-risk flags of one conversation, as the next turn needs them."""

    categories: tuple[str, ...] = ()
    quotes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.categories)

    def note(self, names: dict[str, str]) -> str:
        """The pinned risk note (Chinese, for the model); empty when there is no open risk."""
        if not self.active:
            return ""
        what = "、".join(names.get(c, c) for c in self.categories)
        said = "；".join(f"「{q}」" for q in self.quotes)
        return (f"风险提示（系统记录，尚未由临床人员确认处理）：来访者在本次会谈中表达过{what}"
                + (f"，原话：{said}" if said else "")
                + "。请始终把来访者的安全放在首位，温和地关注和评估风险，必要时再次提供求助资源。")


def risk_state(flags: list[dict]) -> RiskState:
    """The RiskState of open flags (`Store.open_flags(conversation_id)` rows, newest first)."""
    categories: list[str] = []
    quotes: list[str] = []
    for flag in reversed(flags):  # oldest first: the first disclosure leads
        if flag.get("source") not in CLIENT_SOURCES or flag.get("reviewed_at"):
            continue
        for category in flag.get("categories") or [flag["category"]]:
            if category not in categories:
                categories.append(category)
        text = " ".join(str(flag.get("message_content") or "").split())
        if text and flag.get("message_role") == "user" and len(quotes) < MAX_QUOTES:
            quotes.append(text[:QUOTE_CHARS] + ("…" if len(text) > QUOTE_CHARS else ""))
    return RiskState(tuple(categories), tuple(quotes))
