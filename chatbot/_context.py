"""Which part of a conversation's history is sent upstream.

The stored history always stays whole; only the request is trimmed. When the history
exceeds the context budget, the oldest turns are left out of the request, a whole
turn at a time, so the model never sees an assistant reply without its question. The
system prompt travels apart and is always kept; the newest user message always goes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._messages import Message

__all__ = ["estimate_tokens", "fit_context"]

# A deliberately simple estimate: providers tokenize differently, and the budget is a
# safety margin, not an exact limit. About four characters per token in English text.
_CHARS_PER_TOKEN = 4
_PER_MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    return len(text) // _CHARS_PER_TOKEN + _PER_MESSAGE_OVERHEAD


def fit_context(
    history: Sequence[Message], new_message: Message, system_prompt: str, budget_tokens: int
) -> tuple[Message, ...]:
    """The messages to send: as many recent turns as fit in ``budget_tokens``, then ``new_message``.

    Empty messages (a reply stopped before its first token) are left out, because
    providers reject empty content.
    """
    remaining = budget_tokens - estimate_tokens(system_prompt) - estimate_tokens(new_message.content)
    kept: list[Message] = []
    # Walk back a turn at a time: history is [user, assistant, user, assistant, ...].
    index = len(history)
    while index > 0:
        start = max(index - 2, 0)
        turn = history[start:index]
        cost = sum(estimate_tokens(m.content) for m in turn)
        if cost > remaining:
            break
        remaining -= cost
        kept[:0] = turn
        index = start
    kept.append(new_message)
    return tuple(m for m in kept if m.content)
