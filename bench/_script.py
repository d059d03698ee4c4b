"""What the benchmark's fake upstream answers, as pure functions.

The fake upstream and the load generator both use this module: the fake to build
its reply, the load generator to rebuild the same assistant text for the history it
sends when it talks to the upstream directly (so a direct call carries exactly the
request the gateway would have sent).

The reply echoes the user's words, ``"You said: <last user message>"``, or with
``echo_all`` every user message of the request joined by `` | `` (the load test uses
that to see the whole upstream context and catch any cross-session mix-up). It is cut
into exactly ``chunks`` pieces of about one token each, padded with filler tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

__all__ = ["FILLER", "reply_pieces", "reply_text", "user_texts"]

FILLER: Final = (" lorem", " ipsum", " dolor", " sit", " amet")
_TOKEN_CHARS: Final = 4


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block.get("text", "") for block in content if isinstance(block, dict)
        )
    return ""


def user_texts(messages: Any) -> list[str]:
    """The text of every ``user`` message in a request's ``messages``, in order."""
    if not isinstance(messages, list):
        return []
    return [
        _content_text(message.get("content"))
        for message in messages
        if isinstance(message, dict) and message.get("role") == "user"
    ]


def reply_pieces(users: Sequence[str], chunks: int, *, echo_all: bool = False) -> list[str]:
    """The reply to a request whose user messages are ``users``, in ``chunks`` pieces."""
    said = " | ".join(users) if echo_all else (users[-1] if users else "nothing")
    text = f"You said: {said}"
    chunks = max(1, chunks)
    parts = max(1, min(chunks, len(text) // _TOKEN_CHARS))
    size, extra = divmod(len(text), parts)
    pieces: list[str] = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    for index in range(chunks - parts):
        pieces.append(FILLER[index % len(FILLER)])
    return pieces


def reply_text(users: Sequence[str], chunks: int, *, echo_all: bool = False) -> str:
    """The whole reply text, as the client sees it once the stream is done."""
    return "".join(reply_pieces(users, chunks, echo_all=echo_all))
