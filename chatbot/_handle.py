"""The send side of a conversation actor, and the stream of one turn's reply.

A :class:`ConversationHandle` is all anyone but the actor holds: it can put requests
on the actor's bounded inbox and read the answers, never touch the state. Only the
supervisor creates handles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, final

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from ._errors import ActorCrashed, Busy, ChatbotError
from ._messages import Message, Reply
from ._requests import (
    Answer,
    Cancel,
    Failed,
    Reconfigure,
    Request,
    Reset,
    Snapshot,
    Turn,
    TurnControl,
    TurnDelta,
    TurnDone,
    TurnEvent,
)

if TYPE_CHECKING:
    from ._config import ProviderConfig

__all__ = ["ConversationHandle", "TurnStream"]

# Deltas in flight between the actor and a slow reader; beyond this the actor waits,
# which in turn slows reading from the upstream (backpressure, not buffering).
_REPLY_BUFFER = 16


class ActorGone(Exception):
    """The actor's inbox closed under us (idle eviction, crash loop): route again."""


@final
class Inbox:
    """A conversation actor's bounded queue of requests: any number of writers, one reader.

    An anyio memory object stream would do, but an idle actor parked on one keeps its
    shared state, both ends and a waiting-receiver record alive: about 3 KB, times tens
    of thousands of idle conversations. This keeps a list and, only while someone
    waits, one event. A request stays queued until the reader takes it, so a reader
    cancelled while waiting never loses one.
    """

    __slots__ = ("_closed", "_gone", "_readable", "_requests", "_size", "_writable")

    def __init__(self, size: int) -> None:
        self._requests: list[Request] = []
        self._size = size
        self._closed = False  # no more requests: the reader ends after the queued ones
        self._gone = False  # the reader left: nothing will be taken any more
        self._readable: anyio.Event | None = None
        self._writable: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._requests)

    def send_nowait(self, request: Request) -> None:
        """Queue a request.

        Raises:
            anyio.WouldBlock: the inbox is full.
            anyio.ClosedResourceError: the inbox was closed.
            anyio.BrokenResourceError: the actor is gone.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if self._gone:
            raise anyio.BrokenResourceError
        if len(self._requests) >= self._size:
            raise anyio.WouldBlock
        self._requests.append(request)
        if (readable := self._readable) is not None:
            self._readable = None
            readable.set()

    async def send(self, request: Request) -> None:
        """Queue a request, waiting for room; raises as :meth:`send_nowait`, never WouldBlock."""
        while True:
            try:
                self.send_nowait(request)
                return
            except anyio.WouldBlock:
                if self._writable is None:
                    self._writable = anyio.Event()
                await self._writable.wait()

    def close(self) -> None:
        """Take no more requests; the reader gets the queued ones, then ``EndOfStream``."""
        self._closed = True
        self._wake()

    async def receive(self) -> Request:
        """The next request (for the actor only).

        Raises:
            anyio.EndOfStream: the inbox was closed and is empty.
            anyio.ClosedResourceError: :meth:`shut` was called.
        """
        if (request := self.take()) is not None:
            await anyio.lowlevel.checkpoint()
            return request
        while True:
            await self.readable()
            if (request := self.take()) is not None:
                return request

    def take(self) -> Request | None:
        """The next request if one is queued, else ``None``; raises as :meth:`receive`.

        With :meth:`readable`, this is how an idle actor waits without a frame of its own
        for :meth:`receive`: tens of thousands of them park at once.
        """
        if not self._requests:
            if self._gone:
                raise anyio.ClosedResourceError
            if self._closed:
                raise anyio.EndOfStream
            return None
        request = self._requests.pop(0)
        if (writable := self._writable) is not None:
            self._writable = None
            writable.set()
        return request

    def readable(self) -> Awaitable[None]:
        """Wait until :meth:`take` may have something to say (a request, or the end)."""
        if self._requests or self._closed or self._gone:
            return anyio.lowlevel.checkpoint()
        readable = self._readable = anyio.Event()
        return readable.wait()

    def put_back(self, requests: Iterable[Request]) -> None:
        """Return requests that were taken but never started to the front, in order.

        They were admitted once, so the size limit does not apply; after :meth:`shut`
        they go where every other request left behind goes.
        """
        self._requests[:0] = requests
        if self._requests and (readable := self._readable) is not None:
            self._readable = None
            readable.set()

    def shut(self) -> list[Request]:
        """The actor leaves: writers are refused from now on. Returns what was never taken."""
        self._gone = True
        left, self._requests = self._requests, []
        self._wake()
        return left

    def _wake(self) -> None:
        readable, writable, self._readable, self._writable = self._readable, self._writable, None, None
        for event in (readable, writable):
            if event is not None:
                event.set()


@final
class TurnStream:
    """The text deltas of one turn, then its :class:`~chatbot.Reply` in ``reply``.

    Iterate it with ``async for``; it raises the turn's ``ChatbotError`` if the turn
    failed. Closing it before the end (leaving ``open_turn``'s block) stops the turn,
    and the text streamed so far is kept as a stopped reply.
    """

    __slots__ = ("_control", "_finished", "_receive", "reply")

    def __init__(
        self, receive: MemoryObjectReceiveStream[TurnEvent], control: TurnControl
    ) -> None:
        self._receive = receive
        self._control = control
        self._finished = False
        self.reply: Reply | None = None

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> str:
        try:
            try:
                # Deltas usually wait in the buffer already: take one without a trip
                # through the event loop, and wait only when there is none yet.
                event = self._receive.receive_nowait()
            except anyio.WouldBlock:
                event = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self.reply is None:
                self._raise(ActorCrashed.restarted())
            raise StopAsyncIteration from None
        if isinstance(event, TurnDelta):
            return event.text
        self._finished = True
        self._receive.close()
        if isinstance(event, TurnDone):
            self.reply = event.reply
            raise StopAsyncIteration
        self._raise(event.error)

    def _raise(self, error: ChatbotError) -> NoReturn:
        self._finished = True
        self._receive.close()
        raise error

    async def wait_reply(self) -> Reply:
        """Consume the remaining deltas and return the reply.

        Raises:
            ChatbotError: the turn failed.
        """
        async for _ in self:
            pass
        assert self.reply is not None
        return self.reply

    def close(self) -> None:
        """Stop listening; a turn still running is stopped, keeping its partial reply."""
        if not self._finished:
            self._finished = True
            self._control.abandon()
        self._receive.close()


@final
class ConversationHandle:
    """Puts requests on one actor's inbox. Built only by the :class:`~chatbot.Supervisor`."""

    __slots__ = ("_busy_timeout", "_inbox", "conversation_id")

    conversation_id: str
    _inbox: Inbox
    _busy_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("ConversationHandle is created by the Supervisor only")

    @classmethod
    def _create(
        cls,
        conversation_id: str,
        inbox: Inbox,
        busy_timeout: float,
    ) -> ConversationHandle:
        self = object.__new__(cls)
        self.conversation_id = conversation_id
        self._inbox = inbox
        self._busy_timeout = busy_timeout
        return self

    async def _put(self, request: Request) -> None:
        try:
            try:
                self._inbox.send_nowait(request)
            except anyio.WouldBlock:
                with anyio.fail_after(self._busy_timeout):
                    await self._inbox.send(request)
        except TimeoutError:
            raise Busy(
                "This conversation is busy; try again in a moment.",
                conversation_id=self.conversation_id,
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ActorGone from None

    async def _request(self, build: Any) -> object:
        send, receive = anyio.create_memory_object_stream[Answer | Failed](1)
        with receive:
            try:
                await self._put(build(send))
            except BaseException:
                send.close()
                raise
            try:
                answer = await receive.receive()
            except anyio.EndOfStream:
                raise ActorCrashed.restarted() from None
        if isinstance(answer, Failed):
            raise answer.error
        return answer.value

    async def open_turn(
        self, text: str, config: ProviderConfig | None, trace_context: object = None
    ) -> TurnStream:
        """Queue a turn and return the stream of its reply.

        Raises:
            Busy: the inbox stayed full for the busy timeout.
        """
        send, receive = anyio.create_memory_object_stream[TurnEvent](_REPLY_BUFFER)
        control = TurnControl()
        try:
            await self._put(
                Turn(text=text, config=config, reply_to=send, control=control, trace_context=trace_context)
            )
        except BaseException:
            send.close()
            receive.close()
            raise
        return TurnStream(receive, control)

    async def cancel(self) -> bool:
        """Stop the running turn; True if one was running."""
        return bool(await self._request(Cancel))

    async def history(self) -> tuple[Message, ...]:
        value = await self._request(Snapshot)
        assert isinstance(value, tuple)
        return value

    async def reset(self) -> None:
        await self._request(Reset)

    async def reconfigure(self, config: ProviderConfig) -> None:
        await self._request(lambda reply_to: Reconfigure(config, reply_to))

    def close(self) -> None:
        """Close the inbox: the actor finishes what is queued and exits."""
        self._inbox.close()

    def statistics(self) -> int:
        """Requests waiting in the inbox."""
        return len(self._inbox)
