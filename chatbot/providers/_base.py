"""The one small protocol every provider adapter implements, and the values it speaks.

An adapter turns a :class:`ChatRequest` (domain messages) into its wire format and
yields :class:`StreamEvent` values: zero or more :class:`TextDelta` and then exactly
one :class:`StreamEnd`. Non-streaming calls collect the same stream, so there is a
single code path per provider. Closing the generator early (``aclose()``) closes the
upstream HTTP response: that is how Stop reaches the provider.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

import attrs

from .._messages import Message, Usage

__all__ = ["ChatRequest", "Provider", "StreamEnd", "StreamEvent", "TextDelta"]


@attrs.frozen(kw_only=True)
class ChatRequest:
    """What an actor asks of a provider: the whole context of one turn."""

    model: str
    system: str
    messages: tuple[Message, ...]
    max_tokens: int


@attrs.frozen
class TextDelta:
    """A piece of the assistant's reply, in order."""

    text: str


@attrs.frozen(kw_only=True)
class StreamEnd:
    """The upstream finished the reply: usage and why it stopped."""

    usage: Usage = attrs.field(factory=Usage)
    stop_reason: str | None = None
    model: str = ""


StreamEvent = TextDelta | StreamEnd


@runtime_checkable
class Provider(Protocol):
    """A model API. Implementations are frozen attrs classes holding config and a client."""

    @property
    def name(self) -> str:
        """The canonical provider name, used in errors, metrics and traces."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream one reply.

        Raises:
            ProviderError: any subclass; no httpx exception escapes.
        """
        ...

    async def list_models(self) -> list[str]:
        """Model ids the upstream offers, for the connect flow.

        Raises:
            ProviderError: any subclass.
        """
        ...
