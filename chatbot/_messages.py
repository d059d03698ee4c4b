"""Domain values: what a conversation is made of, independent of any wire format.

These are frozen attrs classes and know nothing about JSON: each provider adapter
translates them to its own wire types, and each store to its own rows.
"""

from __future__ import annotations

import enum
import time

import attrs

__all__ = ["Message", "Reply", "Role", "Usage"]


class Role(enum.StrEnum):
    """Who said a message. The system prompt is not a message: it travels apart."""

    USER = "user"
    ASSISTANT = "assistant"


@attrs.frozen
class Usage:
    """Token counts the upstream reported for one reply (zero when it reported none)."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@attrs.frozen(kw_only=True)
class Message:
    """One message of a conversation's history.

    ``stopped`` marks an assistant reply that the user cut short: its text is what
    had streamed when they pressed Stop. ``usage`` is set on assistant replies.
    """

    role: Role = attrs.field(converter=Role)
    content: str
    usage: Usage | None = None
    stopped: bool = False
    created_at: float = attrs.field(factory=time.time)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role=Role.USER, content=content)

    @classmethod
    def assistant(
        cls, content: str, *, usage: Usage | None = None, stopped: bool = False
    ) -> Message:
        return cls(role=Role.ASSISTANT, content=content, usage=usage, stopped=stopped)


@attrs.frozen(kw_only=True)
class Reply:
    """The outcome of one completed (or stopped) turn."""

    text: str
    usage: Usage = attrs.field(factory=Usage)
    model: str = ""
    stop_reason: str | None = None
    stopped: bool = False
    conversation_id: str = ""
