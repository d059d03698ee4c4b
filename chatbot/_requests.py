"""What a handle sends to a conversation actor, and what the actor sends back.

Every request that expects an answer carries its own reply stream. The actor closes
it when it is done, which ends the caller's ``async for``; a failure travels as a
final :class:`TurnFailed` (or :class:`Failed`) and is raised again in the caller, so a
caller always gets an answer or a ``ChatbotError``, never a hang.
"""

from __future__ import annotations

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._config import ProviderConfig
from ._errors import ChatbotError
from ._messages import Message, Reply

__all__ = [
    "Answer",
    "Cancel",
    "Failed",
    "Reconfigure",
    "Request",
    "Reset",
    "Snapshot",
    "Turn",
    "TurnControl",
    "TurnDelta",
    "TurnDone",
    "TurnEvent",
    "TurnFailed",
]


@attrs.frozen
class TurnDelta:
    text: str


@attrs.frozen
class TurnDone:
    reply: Reply


@attrs.frozen
class TurnFailed:
    error: ChatbotError


TurnEvent = TurnDelta | TurnDone | TurnFailed


@attrs.frozen
class Answer:
    """The successful answer to a non-turn request."""

    value: object


@attrs.frozen
class Failed:
    error: ChatbotError


@attrs.define
class TurnControl:
    """Lets the caller of one turn stop it without a round trip through the inbox.

    When the caller leaves early (a browser disconnects, a ``break``), the actor may
    be blocked on a silent upstream and would not notice until the next delta; so the
    caller cancels the turn's scope directly. Cancelling a scope from another task
    of the same event loop is safe in anyio.
    """

    scope: anyio.CancelScope | None = None
    abandoned: bool = False
    stop_requested: bool = False

    def abandon(self) -> None:
        """The caller left: stop the turn, or skip it if it has not started."""
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()

    def stop(self) -> None:
        """Stop was pressed while the turn waited in the queue: it ends as soon as it starts."""
        self.stop_requested = True
        if self.scope is not None:
            self.scope.cancel()


@attrs.frozen(kw_only=True)
class Turn:
    """Run one turn: the user's ``text`` against ``config`` (or the actor's own)."""

    text: str
    config: ProviderConfig | None
    reply_to: MemoryObjectSendStream[TurnEvent]
    control: TurnControl = attrs.field(factory=TurnControl)
    trace_context: object = None


@attrs.frozen
class Cancel:
    """Stop the running turn at once, keeping what streamed so far as a stopped reply."""

    reply_to: MemoryObjectSendStream[Answer | Failed]


@attrs.frozen
class Snapshot:
    """A copy of the committed history, refreshed from the store when it changed."""

    reply_to: MemoryObjectSendStream[Answer | Failed]


@attrs.frozen
class Reset:
    """Forget the history (after the running turn), in memory and in the store."""

    reply_to: MemoryObjectSendStream[Answer | Failed]


@attrs.frozen
class Reconfigure:
    """Switch provider, model or system prompt for the next turns, keeping history."""

    config: ProviderConfig
    reply_to: MemoryObjectSendStream[Answer | Failed]


Request = Turn | Cancel | Snapshot | Reset | Reconfigure

HistorySnapshot = tuple[Message, ...]
