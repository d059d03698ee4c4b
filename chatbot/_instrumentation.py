"""The seam between the core and telemetry.

The actor reports what happens in a turn to an :class:`Instrumentation`; the default
does nothing and costs a few attribute look-ups. ``chatbot.telemetry`` provides the
Prometheus and OpenTelemetry implementation. Keeping this a protocol keeps the core
free of telemetry imports and lets embedders plug in their own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Protocol

from ._config import ProviderConfig
from ._messages import Usage

if TYPE_CHECKING:
    from .providers import ChatRequest, StreamEnd

__all__ = ["Instrumentation", "NoInstrumentation", "TurnRecorder"]


class TurnRecorder(Protocol):
    """Receives the events of one turn, in order; ``finished`` is called exactly once."""

    def request(self, request: ChatRequest) -> None:
        """The request about to be sent upstream (for request attributes)."""
        ...

    def upstream_attempt(self) -> AbstractContextManager[object]:
        """Wraps the upstream call, retries included (a span, a latency timer)."""
        ...

    def response(self, end: StreamEnd, text: str) -> None:
        """The completed reply (for response attributes and opt-in content capture)."""
        ...

    def retried(self, attempt: int, error: Exception, delay: float) -> None: ...

    def first_token(self) -> None: ...

    def finished(self, outcome: str, usage: Usage | None, error: Exception | None) -> None:
        """``outcome`` is ``ok``, ``stopped`` or the error's ``code``."""
        ...


class Instrumentation(Protocol):
    def capture_context(self) -> object:
        """Called in the caller's task: whatever must follow the request into the actor."""
        ...

    def turn(
        self, conversation_id: str, config: ProviderConfig, captured: object
    ) -> AbstractContextManager[TurnRecorder]:
        """Wraps a whole turn inside the actor, with the caller's captured context."""
        ...


class _NoRecorder:
    __slots__ = ()

    def request(self, request: ChatRequest) -> None:
        return None

    def upstream_attempt(self) -> AbstractContextManager[object]:
        return nullcontext()

    def response(self, end: StreamEnd, text: str) -> None:
        return None

    def retried(self, attempt: int, error: Exception, delay: float) -> None:
        return None

    def first_token(self) -> None:
        return None

    def finished(self, outcome: str, usage: Usage | None, error: Exception | None) -> None:
        return None


_NO_RECORDER = _NoRecorder()


class NoInstrumentation:
    """The default: records nothing."""

    __slots__ = ()

    def capture_context(self) -> object:
        return None

    def turn(
        self, conversation_id: str, config: ProviderConfig, captured: object
    ) -> AbstractContextManager[TurnRecorder]:
        return nullcontext(_NO_RECORDER)
