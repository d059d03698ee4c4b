"""Turns as seen by HTTP: the ``text/event-stream`` encoding, stopping, and shutdown.

A streamed turn is three kinds of events::

    event: delta          data: {"text": "..."}                       zero or more
    event: done           data: {"reply", "usage", "stopped", "conversation_id"}
    event: error          data: {"error", "code"}                     instead of done

:func:`stream_turn` is an async generator the route drives once itself before it
answers: a turn that fails before its first token (not connected, the upstream
refused) raises, and the route answers with a JSON error and a proper status. Only
when there is a first event does the streaming response start, so its first byte
leaves as soon as the upstream's first token arrives.

Who stops a turn:

* the client goes away: Quart cancels the request task (streamed or not), which
  leaves ``open_turn``'s block; the turn stream's closing stops the turn in the
  actor at once, and the actor keeps the partial reply as stopped;
* the server shuts down: :meth:`TurnTracker.stop_all` cancels every turn an HTTP
  request is waiting for; each stream then ends with an ``error`` event saying the
  partial reply was saved, and new turns are refused with 503.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any, Final, final

import anyio

from chatbot._config import ProviderConfig
from chatbot._errors import ChatbotError, ShuttingDown
from chatbot._messages import Reply
from chatbot._supervisor import Supervisor

from .errors import error_body

__all__ = [
    "EVENT_STREAM_HEADERS",
    "Prefixed",
    "TurnTracker",
    "encode_event",
    "reply_body",
    "run_turn",
    "stream_turn",
]

EVENT_STREAM_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

# How long stopping a turn at shutdown may take (the actor answers a Cancel at once;
# this only bounds a wedged actor).
_STOP_TIMEOUT: Final = 5.0


def encode_event(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event. JSON never contains a raw newline, so ``data`` is one line."""
    return b"event: " + event.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def reply_body(reply: Reply, conversation_id: str) -> dict[str, Any]:
    """The fields ``/api/chat`` answers and the ``done`` event carries."""
    return {
        "reply": reply.text,
        "usage": {
            "input_tokens": reply.usage.input_tokens,
            "output_tokens": reply.usage.output_tokens,
        },
        "stopped": reply.stopped,
        "conversation_id": conversation_id,
    }


def _shutting_down() -> ShuttingDown:
    return ShuttingDown("The server is shutting down; the partial reply was saved.")


@final
class TurnTracker:
    """Counts the turns HTTP requests are waiting for, so shutdown can stop them."""

    __slots__ = ("_active", "shutting_down")

    def __init__(self) -> None:
        self._active: Counter[str] = Counter()
        self.shutting_down = False

    def __len__(self) -> int:
        return sum(self._active.values())

    def check_open(self) -> None:
        """
        Raises:
            ShuttingDown: the server no longer takes new turns.
        """
        if self.shutting_down:
            raise ShuttingDown("The server is shutting down; try again in a moment.")

    @contextmanager
    def track(self, conversation_id: str) -> Iterator[None]:
        """
        Raises:
            ShuttingDown: the server no longer takes new turns.
        """
        self.check_open()
        self._active[conversation_id] += 1
        try:
            yield
        finally:
            self._active[conversation_id] -= 1
            if self._active[conversation_id] <= 0:
                del self._active[conversation_id]

    def stopped_by_shutdown(self, reply: Reply) -> bool:
        return reply.stopped and self.shutting_down

    def shutdown_error(self) -> ShuttingDown:
        return _shutting_down()

    async def stop_all(self, supervisor: Supervisor) -> int:
        """Refuse new turns and stop every running one; returns how many were asked to stop."""
        self.shutting_down = True
        conversation_ids = list(self._active)
        for conversation_id in conversation_ids:
            with anyio.move_on_after(_STOP_TIMEOUT):
                try:
                    await supervisor.cancel(conversation_id)
                except ChatbotError:
                    pass
        return len(conversation_ids)


async def stream_turn(
    supervisor: Supervisor,
    tracker: TurnTracker,
    conversation_id: str,
    message: str,
    *,
    config: ProviderConfig | None,
    owner: str,
) -> AsyncGenerator[bytes, None]:
    """The SSE events of one turn; see the module docstring.

    Raises (before the first event only; later failures become an ``error`` event):
        ShuttingDown, LimitExceeded, Busy, NotConnected, ProviderError, StoreError,
        ActorCrashed.
    """
    with tracker.track(conversation_id):
        async with supervisor.open_turn(
            conversation_id, message, config=config, owner=owner
        ) as turn:
            started = False
            try:
                async for text in turn:
                    started = True
                    yield encode_event("delta", {"text": text})
                assert turn.reply is not None
                if tracker.stopped_by_shutdown(turn.reply):
                    yield encode_event("error", _event_error(tracker.shutdown_error()))
                else:
                    yield encode_event("done", reply_body(turn.reply, conversation_id))
            except ChatbotError as exc:
                if not started:
                    raise
                yield encode_event("error", _event_error(exc))


async def run_turn(
    supervisor: Supervisor,
    tracker: TurnTracker,
    conversation_id: str,
    message: str,
    *,
    config: ProviderConfig | None,
    owner: str,
) -> Reply:
    """The whole reply of one turn, for ``/api/chat``; stopped like a stream if the client leaves.

    Raises:
        ShuttingDown, LimitExceeded, Busy, NotConnected, ProviderError, StoreError,
        ActorCrashed.
    """
    with tracker.track(conversation_id):
        async with supervisor.open_turn(
            conversation_id, message, config=config, owner=owner
        ) as turn:
            reply = await turn.wait_reply()
    if tracker.stopped_by_shutdown(reply):
        raise tracker.shutdown_error()
    return reply


def _event_error(exc: ChatbotError) -> dict[str, Any]:
    body = error_body(exc)
    return {"error": body["error"], "code": body["code"]}


@final
class Prefixed:
    """An event stream whose first chunk was already read (to pick the status)."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes, None]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> Prefixed:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        return await self._rest.__anext__()

    async def aclose(self) -> None:
        await self._rest.aclose()
