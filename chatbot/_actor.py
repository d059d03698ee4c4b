"""The conversation actor: one anyio task that owns one conversation.

The actor is the only code that touches a conversation's history. Others reach it
through a :class:`~chatbot.ConversationHandle`, which puts requests on a bounded
inbox. The actor answers ``Cancel`` and ``Snapshot`` at once and serves turns,
resets and reconfigurations one at a time, in arrival order, from a small queue.

Invariants:

* history never holds half a turn: a turn's user message and reply enter the history
  only after the store committed both, in one transaction;
* a turn is acknowledged (``TurnDone``) only after that commit;
* a stopped turn (Stop pressed, caller gone, server shutting down) keeps the text
  streamed so far as the reply, marked ``stopped``;
* a failed turn writes nothing and leaves the history as it was.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from contextlib import aclosing
from typing import final

import anyio
import attrs
import httpx
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from ._config import Limits, ProviderConfig, UpstreamPolicy
from ._context import fit_context
from ._errors import (
    ActorCrashed,
    Busy,
    ChatbotError,
    NotConnected,
    ShuttingDown,
    StoreError,
    UpstreamTimeout,
)
from ._handle import Inbox
from ._instrumentation import Instrumentation, TurnRecorder
from ._messages import Message, Reply, Usage
from ._requests import (
    Answer,
    Cancel,
    Failed,
    Reconfigure,
    Request,
    Reset,
    Snapshot,
    Turn,
    TurnDelta,
    TurnDone,
    TurnEvent,
    TurnFailed,
)
from .providers import ChatRequest, Provider, StreamEnd, resilient_stream
from .store import ConversationInfo, Store, StoreConflict

__all__ = ["ConversationActor"]

logger = logging.getLogger("chatbot.actor")

ProviderFactory = Callable[[ProviderConfig, httpx.AsyncClient], Provider]
Queued = Turn | Reset | Reconfigure

_CALLER_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError)


@attrs.define
class _Streamed:
    """What one turn's upstream call produced so far."""

    parts: list[str] = attrs.field(factory=list)
    end: StreamEnd | None = None
    error: ChatbotError | None = None
    stopped: bool = False

    def assistant(self, *, stopped: bool) -> Message:
        if stopped:
            return Message.assistant("".join(self.parts), stopped=True)
        if self.end is None:
            raise RuntimeError("the provider stream ended without a StreamEnd event")
        return Message.assistant("".join(self.parts), usage=self.end.usage)


@attrs.define
class _Conversation:
    """The state one actor incarnation owns. Never leaves :meth:`ConversationActor.run`."""

    history: list[Message]
    config: ProviderConfig | None
    exists: bool
    recorded: tuple[str | None, ...] | None = None  # the stored provider, model, prompt
    provider: Provider | None = None
    turn_scope: anyio.CancelScope | None = None


def _answer_nowait(reply_to: MemoryObjectSendStream[Answer | Failed], value: Answer | Failed) -> None:
    """Send a request's one answer and close its stream (whose buffer holds one: no waiting)."""
    with reply_to:
        try:
            reply_to.send_nowait(value)
        except (*_CALLER_GONE, anyio.WouldBlock):
            pass


@final
@attrs.define(kw_only=True)
class ConversationActor:
    """Serves one conversation's requests; built and run only by the supervisor."""

    conversation_id: str
    store: Store
    provider_factory: ProviderFactory
    http_client: httpx.AsyncClient
    policy: UpstreamPolicy
    limits: Limits
    instrumentation: Instrumentation
    default_config: ProviderConfig | None
    owner: str | None = None
    created: ConversationInfo | None = None  # just created, no messages: nothing to load

    async def run(
        self,
        inbox: Inbox,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load the history, report ready, then serve until the inbox closes.

        Most actors are idle most of the time, so an idle one holds only this frame,
        its inbox and its state: the queue and the task group that serving needs
        exist only while there is work (see :meth:`_work_through`).

        Raises:
            StoreError: the history could not be loaded (before ``task_status.started``).
            Exception: a bug while serving; the supervisor restarts the actor.
        """
        state = await self._load()
        task_status.started()
        while True:
            try:
                request = inbox.take()
            except anyio.EndOfStream:
                return  # closed by the supervisor (idle, evicted, shutting down)
            if request is None:
                # Parked right here, without a frame for a receive() call. Taking without
                # waiting needs no checkpoint: the inbox is bounded, and turns await anyway.
                await inbox.readable()
                continue
            if isinstance(request, Snapshot):
                await self._snapshot(state, request)
            elif isinstance(request, Cancel):
                _answer_nowait(request.reply_to, Answer(False))  # nothing runs or waits
            else:
                await self._work_through(state, inbox, request)
            del request  # nothing of the last request stays alive while idle

    async def _work_through(self, state: _Conversation, inbox: Inbox, first: Queued) -> None:
        """Serve ``first`` and whatever queues up behind it, in order, then return.

        A worker task serves the queue while this one goes on reading the inbox, so
        Cancel and Snapshot are answered at once. A crash in the worker fails the
        request it was serving and propagates: the supervisor restarts the actor.
        The requests still queued (a caller told of the crash may have retried at
        once) go back to the inbox, for the restarted actor to serve.
        """
        queue: deque[Queued] = deque((first,))
        del first
        try:
            # The reader can queue one last request as it is being stopped: go round again.
            while queue:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._serve_queue, state, queue, tg.cancel_scope)
                    await self._read_while_busy(state, inbox, queue)
        finally:
            if queue:
                inbox.put_back(queue)
                queue.clear()

    async def _serve_queue(
        self, state: _Conversation, queue: deque[Queued], reading: anyio.CancelScope
    ) -> None:
        """Serve the queue until it is empty, then stop the reader.

        The worker does the stopping: on asyncio, cancelling a scope formats the
        calling task, which gives that task's coroutine a frame object for good;
        better a short-lived worker than the actor.
        """
        while queue:
            request = queue.popleft()
            try:
                await self._serve(state, request)
            except Exception:
                # Only this request is lost; the ones behind it go to the restarted actor.
                _fail_queued(request, ActorCrashed.restarted(self.conversation_id))
                raise
        reading.cancel()

    async def _read_while_busy(self, state: _Conversation, inbox: Inbox, queue: deque[Queued]) -> None:
        """Answer Cancel and Snapshot at once and queue the rest, until stopped or closed.

        Nothing here waits but ``receive``: a request taken is always dealt with, even
        when the stop comes right then.
        """
        while True:
            try:
                request = await inbox.receive()
            except anyio.EndOfStream:
                return  # what is queued is still served; then the actor exits
            if isinstance(request, Cancel):
                _answer_nowait(request.reply_to, Answer(_stop(state, queue)))
            elif isinstance(request, Snapshot):
                # No refresh: the running turn owns the history and the store lock.
                _answer_nowait(request.reply_to, Answer(tuple(state.history)))
            elif len(queue) >= self.limits.inbox_size:
                _fail_queued(request, _busy(self.conversation_id))
            else:
                queue.append(request)

    async def _load(self) -> _Conversation:
        """The conversation's state: one store call, none for one the supervisor just created.

        ``created`` serves the first incarnation only; a restarted actor reads the store.
        """
        created, self.created = self.created, None
        if created is not None:
            return self._loaded(created, ())
        loaded = await self.store.load_conversation(self.conversation_id)
        if loaded is None:
            # Created in the store by the first turn or connect, not by merely looking.
            return _Conversation(history=[], config=self.default_config, exists=False)
        return self._loaded(*loaded)

    def _loaded(self, info: ConversationInfo, messages: tuple[Message, ...]) -> _Conversation:
        return _Conversation(
            history=list(messages),
            config=self._restored_config(info),
            exists=True,
            recorded=_recorded(info),
        )

    def _restored_config(self, info: ConversationInfo) -> ProviderConfig | None:
        """The default connection, with the model and prompt this conversation last used."""
        default = self.default_config
        if default is None or info.provider != default.provider:
            return default
        model = info.model or default.model
        system_prompt = info.system_prompt if info.system_prompt is not None else default.system_prompt
        if (model, system_prompt) == (default.model, default.system_prompt):
            return default  # shared, not copied: most conversations use the default as it is
        return default.evolve(model=model, system_prompt=system_prompt)

    async def _refresh(self, state: _Conversation) -> None:
        """Reload the history if another process changed the stored conversation."""
        if not state.exists or not self.store.shared:
            return
        if await self.store.message_count(self.conversation_id) != len(state.history):
            state.history = list(await self.store.load_messages(self.conversation_id))

    async def _snapshot(self, state: _Conversation, request: Snapshot) -> None:
        """Answer with the history, refreshed first: only an idle actor calls this."""
        try:
            await self._refresh(state)
        except StoreError as exc:
            _answer_nowait(request.reply_to, Failed(exc))
        else:
            _answer_nowait(request.reply_to, Answer(tuple(state.history)))

    async def _adopt(self, state: _Conversation, config: ProviderConfig) -> Provider:
        """Make ``config`` the conversation's provider, recording it in the store."""
        if not state.exists:
            info = ConversationInfo(
                id=self.conversation_id,
                owner=self.owner,
                provider=config.provider,
                model=config.model,
                system_prompt=config.system_prompt,
            )
            try:
                await self.store.create_conversation(info)
            except StoreConflict:
                pass  # another instance created it first; it is the same conversation
            else:
                state.recorded = _recorded(config)
            state.exists = True
        elif config != state.config and _recorded(config) != state.recorded:
            # Only what the store keeps: a new key or base URL is not worth a write.
            await self.store.update_conversation(
                self.conversation_id,
                provider=config.provider,
                model=config.model,
                system_prompt=config.system_prompt,
            )
            state.recorded = _recorded(config)
        if state.provider is None or config != state.config:
            state.config = config
            state.provider = self.provider_factory(config, self.http_client)
        return state.provider

    async def _serve(self, state: _Conversation, request: Queued) -> None:
        if isinstance(request, Turn):
            await self._serve_turn(state, request)
            return
        try:
            if isinstance(request, Reset):
                if state.exists:
                    await self.store.replace_messages(self.conversation_id, ())
                state.history.clear()
            else:
                await self._adopt(state, request.config)
        except ChatbotError as exc:
            _answer_nowait(request.reply_to, Failed(exc))
        else:
            _answer_nowait(request.reply_to, Answer(None))

    async def _serve_turn(self, state: _Conversation, turn: Turn) -> None:
        with turn.reply_to:
            if turn.control.abandoned:
                return  # the caller left before the turn began: nothing to do or keep
            config = turn.config or state.config
            if config is None:
                await _send(turn.reply_to, TurnFailed(_not_connected(self.conversation_id)))
                return
            try:
                provider = await self._adopt(state, config)
            except ChatbotError as exc:
                await _send(turn.reply_to, TurnFailed(exc))
                return
            try:
                with self.instrumentation.turn(
                    self.conversation_id, config, turn.trace_context
                ) as recorder:
                    await self._run_turn(state, turn, config, provider, recorder)
            except Exception:
                # A bug, not a user-facing failure: tell the caller before the crash
                # propagates to the supervisor, which restarts this actor.
                crashed = ActorCrashed.restarted(self.conversation_id)
                _send_nowait(turn.reply_to, TurnFailed(crashed))
                raise

    async def _run_turn(
        self,
        state: _Conversation,
        turn: Turn,
        config: ProviderConfig,
        provider: Provider,
        recorder: TurnRecorder,
    ) -> None:
        user = Message.user(turn.text)
        streamed = _Streamed()
        async with self.store.lock_conversation(self.conversation_id):
            try:
                await self._refresh(state)
            except StoreError as exc:
                await self._fail(turn, recorder, exc)
                return
            request = ChatRequest(
                model=config.model,
                system=config.system_prompt,
                messages=fit_context(
                    state.history, user, config.system_prompt, self.limits.context_budget_tokens
                ),
                max_tokens=config.max_tokens,
            )
            recorder.request(request)
            try:
                await self._stream_reply(state, turn, provider, request, recorder, streamed)
            except anyio.get_cancelled_exc_class():
                # The supervisor is shutting down: keep what streamed, tell the caller.
                with anyio.CancelScope(shield=True):
                    await self._commit(state, user, streamed.assistant(stopped=True))
                _send_nowait(turn.reply_to, TurnFailed(_shutting_down(self.conversation_id)))
                recorder.finished("stopped", None, None)
                raise
            if not streamed.stopped and streamed.error is not None:
                await self._fail(turn, recorder, streamed.error)
                return
            assistant = streamed.assistant(stopped=streamed.stopped)
            if streamed.end is not None and not assistant.stopped:
                recorder.response(streamed.end, assistant.content)
            with anyio.CancelScope(shield=True):
                try:
                    await self._commit(state, user, assistant)
                except StoreError as exc:
                    await self._fail(turn, recorder, exc)
                    return
        recorder.finished("stopped" if assistant.stopped else "ok", assistant.usage, None)
        end = streamed.end
        reply = Reply(
            text=assistant.content,
            usage=assistant.usage or Usage(),
            model=end.model if end and end.model else config.model,
            stop_reason=end.stop_reason if end else None,
            stopped=assistant.stopped,
            conversation_id=self.conversation_id,
        )
        await _send(turn.reply_to, TurnDone(reply))

    async def _stream_reply(
        self,
        state: _Conversation,
        turn: Turn,
        provider: Provider,
        request: ChatRequest,
        recorder: TurnRecorder,
        out: _Streamed,
    ) -> None:
        """Relay the upstream's deltas to the caller, inside a scope that Stop cancels."""
        with anyio.CancelScope() as scope:
            state.turn_scope = turn.control.scope = scope
            try:
                if turn.control.abandoned or turn.control.stop_requested:
                    scope.cancel()  # stopped while queued: do not call the upstream at all
                else:
                    await self._relay(turn, provider, request, recorder, out, scope)
            except ChatbotError as exc:
                out.error = exc
            except TimeoutError:
                out.error = UpstreamTimeout(
                    f"The model did not finish its reply within {self.policy.total_timeout:g} s; "
                    "try again or raise CHATBOT_TOTAL_TIMEOUT.",
                    provider=provider.name,
                    phase="total",
                )
            finally:
                state.turn_scope = turn.control.scope = None
        # A reply that arrived whole before Stop landed is kept whole.
        out.stopped = scope.cancel_called and (out.end is None or out.error is not None)

    async def _relay(
        self,
        turn: Turn,
        provider: Provider,
        request: ChatRequest,
        recorder: TurnRecorder,
        out: _Streamed,
        scope: anyio.CancelScope,
    ) -> None:
        with anyio.fail_after(self.policy.total_timeout), recorder.upstream_attempt():
            events = resilient_stream(provider, request, self.policy, on_retry=recorder.retried)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, StreamEnd):
                        out.end = event
                        continue
                    if not out.parts:
                        recorder.first_token()
                    out.parts.append(event.text)
                    try:
                        await _send_delta(turn.reply_to, TurnDelta(event.text))
                    except _CALLER_GONE:
                        scope.cancel()  # the caller left: stop, as Stop would

    async def _fail(self, turn: Turn, recorder: TurnRecorder, error: ChatbotError) -> None:
        recorder.finished(error.code, None, error)
        await _send(turn.reply_to, TurnFailed(error))

    async def _commit(self, state: _Conversation, user: Message, assistant: Message) -> None:
        """Write the turn, then (and only then) let it into the history."""
        try:
            await self.store.append_turn(
                self.conversation_id, user, assistant, expected_count=len(state.history)
            )
        except StoreError:
            # Our view may be stale (another instance wrote): reload on the next turn.
            state.history = list(await _reload_or_keep(self.store, self.conversation_id, state.history))
            raise
        state.history.extend((user, assistant))


def _recorded(config: ProviderConfig | ConversationInfo) -> tuple[str | None, ...]:
    """What the store keeps of a config: its provider, model and prompt (see ``_Conversation.recorded``)."""
    return (config.provider, config.model, config.system_prompt)


async def _reload_or_keep(store: Store, conversation_id: str, history: list[Message]) -> list[Message]:
    try:
        return list(await store.load_messages(conversation_id))
    except StoreError:
        return history


async def _send_delta(reply_to: MemoryObjectSendStream[TurnEvent], delta: TurnDelta) -> None:
    """Pass a delta on; wait only when the reader is behind (the buffer is full).

    The upstream read before it was already a checkpoint, so the usual case needs no
    second trip through the event loop.

    Raises:
        anyio.BrokenResourceError, anyio.ClosedResourceError: the caller left.
    """
    try:
        reply_to.send_nowait(delta)
    except anyio.WouldBlock:
        await reply_to.send(delta)


async def _send(reply_to: MemoryObjectSendStream[TurnEvent], event: TurnEvent) -> None:
    try:
        await reply_to.send(event)
    except _CALLER_GONE:
        pass


def _send_nowait(reply_to: MemoryObjectSendStream[TurnEvent], event: TurnEvent) -> None:
    try:
        reply_to.send_nowait(event)
    except (*_CALLER_GONE, anyio.WouldBlock):
        pass


def _shutting_down(conversation_id: str) -> ShuttingDown:
    return ShuttingDown(
        "The server is shutting down; the partial reply was saved.",
        conversation_id=conversation_id,
    )


def _busy(conversation_id: str) -> Busy:
    return Busy(
        "This conversation has too many requests waiting; wait for the current reply.",
        conversation_id=conversation_id,
    )


def _not_connected(conversation_id: str) -> NotConnected:
    return NotConnected(
        "No model provider is connected for this conversation: connect one first.",
        conversation_id=conversation_id,
    )


def _stop(state: _Conversation, queue: deque[Queued]) -> bool:
    """Stop the running turn and the queued ones; True if there was any."""
    stopped = state.turn_scope is not None
    if state.turn_scope is not None:
        state.turn_scope.cancel()
    for queued in queue:
        if isinstance(queued, Turn):
            queued.control.stop()
            stopped = True
    return stopped


def _fail_queued(request: Request, error: ChatbotError) -> None:
    """Answer a request that will not be served, without waiting."""
    if isinstance(request, Turn):
        with request.reply_to:
            _send_nowait(request.reply_to, TurnFailed(error))
    else:
        with request.reply_to:
            try:
                request.reply_to.send_nowait(Failed(error))
            except (*_CALLER_GONE, anyio.WouldBlock):
                pass
