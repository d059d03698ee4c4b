"""The supervisor: routes requests to conversation actors and keeps them alive.

It owns the only task group. Actors are spawned on first use (loading their history
from the store), evicted after they idle for ``Limits.idle_evict_after`` seconds or
when ``Limits.max_actors`` is reached (least recently used first; nothing is lost,
the history is in the store), and restarted one-for-one when they crash: the caller
that was waiting gets :class:`~chatbot.ActorCrashed`, every other conversation goes
on untouched.

The routing table changes only in synchronous sections; a spawn in flight is a
placeholder with an ``Event``, so two callers never spawn the same actor twice.
Actor tasks are started by one long-lived spawner task, not by the caller that
needed them (see :meth:`Supervisor._spawn`).

Embed it in any anyio program, on asyncio or trio::

    async with Supervisor() as sup:
        await sup.connect("conv-1", ProviderConfig(provider="openai", api_key="…"))
        reply = await sup.chat("conv-1", "hello")
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import TypeVar, final

import anyio
import attrs
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._actor import ConversationActor, ProviderFactory, _fail_queued
from ._config import Limits, ProviderConfig, UpstreamPolicy
from ._errors import (
    ActorCrashed,
    ShuttingDown,
    UnknownConversation,
)
from ._handle import ActorGone, ConversationHandle, Inbox, TurnStream
from ._http_client import create_http_client
from ._instrumentation import Instrumentation, NoInstrumentation
from ._messages import Message, Reply
from .providers import Provider, create_provider
from .store import ConversationInfo, MemoryStore, Store

__all__ = ["Supervisor", "SupervisorStatistics", "new_conversation_id"]

logger = logging.getLogger("chatbot.supervisor")

T = TypeVar("T")

# A conversation that crashes this often in this window is not restarted again
# until someone asks for it: a crash loop must not eat the CPU of everyone else.
_MAX_RESTARTS = 5
_RESTART_WINDOW = 30.0

# New conversations whose first actor can start without reading the store (see
# Supervisor._remember_created). Forgetting one only costs that actor one store read.
_CREATED_MAX = 1024

# Every actor task's name: one string for all, not one built per task.
_ACTOR_TASK_NAME = "chatbot conversation actor"

# Provider configs whose adapter conversations share (see _SharedProviders).
_SHARED_PROVIDERS_MAX = 256


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A point-in-time view for ``/metrics`` and ``/readyz``."""

    live_actors: int
    inbox_depth: int
    spawned: int
    evicted: int
    restarts: int
    running: bool
    turns_started: int = 0
    turns_open: int = 0  # turns whose caller still waits for (or reads) the reply


@attrs.define(eq=False, slots=True)
class _Slot:
    """One routing-table entry: a ready handle, or a spawn in flight (``ready`` is set)."""

    conversation_id: str
    ready: anyio.Event | None = attrs.field(factory=anyio.Event)
    handle: ConversationHandle | None = None
    last_used: float = 0.0
    turns_open: int = 0


class _SharedProviders:
    """A provider factory that gives conversations with equal configs the same adapter.

    Adapters are immutable and keep nothing between calls, yet each holds its config
    and prepared request parts (about a kilobyte): one per idle conversation adds up.
    One supervisor has one HTTP client, so the config alone tells adapters apart.
    """

    __slots__ = ("_factory", "_made")

    def __init__(self, factory: ProviderFactory) -> None:
        self._factory = factory
        self._made: OrderedDict[ProviderConfig, Provider] = OrderedDict()

    def __call__(self, config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
        provider = self._made.get(config)
        if provider is not None:
            self._made.move_to_end(config)
            return provider
        provider = self._made[config] = self._factory(config, client)
        if len(self._made) > _SHARED_PROVIDERS_MAX:
            self._made.popitem(last=False)
        return provider


@attrs.define(eq=False, slots=True)
class _SpawnOrder:
    """One actor for the spawner task to start, and how its start went.

    It is the actor's ``task_status``: ``started`` settles it. Once settled it lets go
    of everything but the outcome, because the actor's frames keep it while it lives.
    """

    supervisor: Supervisor | None
    slot: _Slot
    inbox: Inbox | None
    handle: ConversationHandle | None
    owner: str | None
    settled: bool = False
    error: BaseException | None = None

    def started(self, value: None = None) -> None:
        assert self.supervisor is not None
        self.supervisor._settle_spawn(self, None)


@final
class Supervisor:
    """Routes requests to one actor per conversation; see the module docstring.

    Args:
        store: where conversations live; an in-memory store by default.
        default_config: the provider for conversations that were never connected.
        policy: upstream timeouts and retries.
        limits: inbox size, idle eviction, max live actors, message length...
        http_client: a shared client; one is created (and closed) if omitted.
        instrumentation: metrics and tracing hooks; none by default.
        provider_factory: builds an adapter from a config (tests inject fakes here).
        shutdown_grace: seconds in-flight turns get to finish when the supervisor exits.
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        default_config: ProviderConfig | None = None,
        policy: UpstreamPolicy | None = None,
        limits: Limits | None = None,
        http_client: httpx.AsyncClient | None = None,
        instrumentation: Instrumentation | None = None,
        provider_factory: ProviderFactory = create_provider,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.store: Store = store if store is not None else MemoryStore()
        self.default_config = default_config
        self.policy = policy or UpstreamPolicy()
        self.limits = limits or Limits()
        self.instrumentation: Instrumentation = instrumentation or NoInstrumentation()
        self._provider_factory = provider_factory
        self._shared_providers = _SharedProviders(provider_factory)
        self._given_client = http_client
        self._client: httpx.AsyncClient | None = http_client
        self._shutdown_grace = shutdown_grace
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._tg: TaskGroup | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._running = False
        self._spawned = 0
        self._evicted = 0
        self._turns_started = 0
        self._turns_open = 0
        self._restarts = 0
        self._janitor: anyio.CancelScope | None = None
        self._spawn_orders: MemoryObjectSendStream[_SpawnOrder] | None = None
        self._created: OrderedDict[str, ConversationInfo] = OrderedDict()

    # -- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        if self._exit_stack is not None:
            raise RuntimeError("a Supervisor can be entered only once")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._given_client is None:
                self._client = create_http_client(self.policy)
                stack.push_async_callback(self._client.aclose)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._janitor = anyio.CancelScope()
            self._tg.start_soon(self._evict_idle_actors, self._janitor)
            self._spawn_orders, orders = anyio.create_memory_object_stream[_SpawnOrder](math.inf)
            self._tg.start_soon(self._spawn_actors, orders)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._exit_stack = stack
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Close every inbox, give in-flight turns the grace period, then cancel them."""
        self._running = False
        assert self._tg is not None and self._exit_stack is not None and self._janitor is not None
        assert self._spawn_orders is not None
        self._janitor.cancel()
        self._spawn_orders.close()
        for slot in list(self._slots.values()):
            if slot.handle is not None:
                slot.handle.close()
        self._tg.cancel_scope.deadline = anyio.current_time() + self._shutdown_grace
        try:
            return await self._exit_stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The block's own exception comes back wrapped by the task group; give the
            # embedding program the exception it raised, not an implementation detail.
            if exc is not None and _only_contains(group, exc):
                raise exc.with_traceback(tb) from exc.__cause__
            raise

    @property
    def running(self) -> bool:
        return self._running

    @property
    def http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("enter the Supervisor with 'async with' first")
        return self._client

    def statistics(self) -> SupervisorStatistics:
        depth = sum(s.handle.statistics() for s in self._slots.values() if s.handle is not None)
        return SupervisorStatistics(
            live_actors=len(self._slots),
            inbox_depth=depth,
            spawned=self._spawned,
            evicted=self._evicted,
            restarts=self._restarts,
            running=self._running,
            turns_started=self._turns_started,
            turns_open=self._turns_open,
        )

    # -- routing ----------------------------------------------------------------

    async def _route(self, conversation_id: str, owner: str | None = None) -> ConversationHandle:
        while True:
            slot = self._slots.get(conversation_id)
            if slot is None:
                if not self._running or self._tg is None:
                    raise _shutting_down()
                slot = _Slot(conversation_id)
                self._slots[conversation_id] = slot
                await self._spawn(slot, owner)
                continue  # it got ready in its own task: it may even be evicted already
            if slot.handle is None:
                assert slot.ready is not None
                await slot.ready.wait()
                continue
            self._slots.move_to_end(conversation_id)
            slot.last_used = anyio.current_time()
            assert slot.handle is not None
            return slot.handle

    async def _spawn(self, slot: _Slot, owner: str | None) -> None:
        """Have the spawner task start the slot's actor, and wait until it is ready.

        The caller does not start the task itself: a task inherits its creator's
        context variables, and an actor started from a web request would keep that
        request's context (request, app context, everything they reference) alive for
        as long as it lives. If the caller is cancelled meanwhile, the spawn goes on
        and the slot is ready for the next caller.

        Raises:
            StoreError: the actor could not load the history.
            ShuttingDown: the supervisor is exiting.
        """
        assert self._spawn_orders is not None and slot.ready is not None
        if len(self._slots) > self.limits.max_actors:
            self._evict_least_recent()
        ready = slot.ready
        inbox = Inbox(self.limits.inbox_size)
        handle = ConversationHandle._create(slot.conversation_id, inbox, self.limits.busy_timeout)
        order = _SpawnOrder(self, slot, inbox, handle, owner)
        try:
            self._spawn_orders.send_nowait(order)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._settle_spawn(order, _shutting_down())
        await ready.wait()
        if order.error is not None:
            raise order.error

    def _settle_spawn(self, order: _SpawnOrder, error: BaseException | None) -> None:
        """Record how a spawn went (once): fill the slot, or free it for a new attempt."""
        if order.settled:
            return
        slot, handle = order.slot, order.handle
        assert handle is not None
        order.settled, order.error = True, error
        order.supervisor = order.inbox = order.handle = order.owner = None
        current = self._slots.get(slot.conversation_id) is slot
        if error is None:
            slot.handle = handle
            slot.last_used = anyio.current_time()
            self._spawned += 1
            if not current or not self._running:
                handle.close()  # deleted or shut down meanwhile: the actor just exits
        else:
            handle.close()
            if current:
                del self._slots[slot.conversation_id]
        # Release the event: an idle actor should cost as little memory as possible.
        ready, slot.ready = slot.ready, None
        assert ready is not None
        ready.set()

    async def _spawn_actors(self, orders: MemoryObjectReceiveStream[_SpawnOrder]) -> None:
        """The spawner: start each ordered actor in this task's context (see :meth:`_spawn`)."""
        assert self._tg is not None
        try:
            async for order in orders:
                if not self._running:
                    self._settle_spawn(order, _shutting_down())
                    continue
                try:
                    self._tg.start_soon(self._supervise, order, name=_ACTOR_TASK_NAME)
                except BaseException:
                    self._settle_spawn(order, _shutting_down())  # nobody waits forever
                    raise
        finally:
            with orders:
                while True:
                    try:
                        self._settle_spawn(orders.receive_nowait(), _shutting_down())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break

    def _evict_least_recent(self) -> None:
        """Close the least recently used actor's inbox; it exits once its work is done."""
        for conversation_id, slot in self._slots.items():
            if slot.handle is not None:
                del self._slots[conversation_id]
                slot.handle.close()
                self._evicted += 1
                return

    async def _evict_idle_actors(self, scope: anyio.CancelScope) -> None:
        """Close the inboxes of actors unused for ``Limits.idle_evict_after`` seconds.

        The table is ordered by last use, so the scan stops at the first recent actor.
        An evicted actor finishes what is queued and exits; its history is in the store.
        Actors with a turn in progress are left alone.
        """
        idle_after = self.limits.idle_evict_after
        with scope:
            while True:
                await anyio.sleep(min(max(idle_after / 4, 0.01), 5.0))
                cutoff = anyio.current_time() - idle_after
                for conversation_id, slot in list(self._slots.items()):
                    if slot.last_used > cutoff:
                        break
                    if slot.handle is None or slot.turns_open:
                        continue
                    del self._slots[conversation_id]
                    slot.handle.close()
                    self._evicted += 1

    async def _supervise(self, order: _SpawnOrder) -> None:
        """Run one conversation's actor, restarting it (one-for-one) when it crashes.

        A failure before the actor is ready (loading the history) goes to the caller
        waiting in :meth:`_spawn`, and nothing is restarted.
        """
        assert self._client is not None and order.inbox is not None
        slot, inbox = order.slot, order.inbox
        actor = ConversationActor(
            conversation_id=slot.conversation_id,
            store=self.store,
            provider_factory=self._shared_providers,
            http_client=self._client,
            policy=self.policy,
            limits=self.limits,
            instrumentation=self.instrumentation,
            default_config=self.default_config,
            owner=order.owner,
            created=self._created.pop(slot.conversation_id, None),
        )
        crashes: deque[float] | None = None  # made on the first crash: most actors never crash
        try:
            while True:
                try:
                    await actor.run(inbox, task_status=anyio.TASK_STATUS_IGNORED if order.settled else order)
                    return
                except Exception as exc:
                    if not order.settled:
                        self._settle_spawn(order, exc)  # the spawning caller raises it
                        return
                    now = anyio.current_time()
                    if crashes is None:
                        crashes = deque(maxlen=_MAX_RESTARTS)
                    crashes.append(now)
                    logger.exception(
                        "conversation actor crashed; restarting it from the store",
                        extra={"conversation_id": slot.conversation_id},
                    )
                    self._restarts += 1
                    if len(crashes) == _MAX_RESTARTS and now - crashes[0] < _RESTART_WINDOW:
                        logger.error(
                            "conversation actor keeps crashing; leaving it stopped until next use",
                            extra={"conversation_id": slot.conversation_id},
                        )
                        return
        finally:
            if not order.settled:
                self._settle_spawn(order, _shutting_down())  # cancelled before it was ready
            if self._slots.get(slot.conversation_id) is slot:
                del self._slots[slot.conversation_id]
            _fail_remaining(inbox)

    async def _with_actor(
        self,
        conversation_id: str,
        operation: Callable[[ConversationHandle], Awaitable[T]],
        owner: str | None = None,
    ) -> T:
        for _ in range(3):
            handle = await self._route(conversation_id, owner)
            try:
                return await operation(handle)
            except ActorGone:
                continue  # evicted or stopped between routing and sending: spawn again
        raise ActorCrashed(
            "This conversation could not be reached; please retry.", conversation_id=conversation_id
        )

    # -- conversations ----------------------------------------------------------

    async def create_conversation(
        self,
        conversation_id: str | None = None,
        *,
        owner: str | None = None,
        config: ProviderConfig | None = None,
        title: str = "",
        messages: tuple[Message, ...] = (),
    ) -> ConversationInfo:
        """Create a conversation in the store (its actor starts on first use).

        Raises:
            StoreConflict: the id is taken.
            StoreError: the store failed.
        """
        config = config or self.default_config
        fresh_id = conversation_id is None
        info = ConversationInfo(
            id=conversation_id or new_conversation_id(),
            owner=owner,
            title=title,
            provider=config.provider if config else None,
            model=config.model if config else None,
            system_prompt=config.system_prompt if config else None,
        )
        stored = await self.store.create_conversation(info)
        if messages:
            try:
                await self.store.replace_messages(info.id, messages)
            except BaseException:
                # An import is all or nothing: no empty conversation is left behind.
                with anyio.CancelScope(shield=True):
                    await self.store.delete_conversation(info.id)
                raise
            return await self.conversation(info.id)
        if fresh_id:
            self._remember_created(stored)
        return stored

    def _remember_created(self, info: ConversationInfo) -> None:
        """Hand a new, empty conversation to its first actor, which then reads nothing.

        Only for an id generated here: nobody else can have spawned an actor for it or
        written to it yet. The first actor takes the entry; rename and delete drop it.
        """
        self._created[info.id] = info
        if len(self._created) > _CREATED_MAX:
            self._created.popitem(last=False)

    async def conversation(self, conversation_id: str) -> ConversationInfo:
        """The conversation's metadata.

        Raises:
            UnknownConversation: no such conversation.
        """
        info = await self.store.get_conversation(conversation_id)
        if info is None:
            raise UnknownConversation(
                "No such conversation.", conversation_id=conversation_id
            )
        return info

    async def list_conversations(
        self, owner: str | None, *, limit: int = 200
    ) -> list[ConversationInfo]:
        return await self.store.list_conversations(owner, limit=limit)

    async def rename(self, conversation_id: str, title: str) -> ConversationInfo:
        await self.conversation(conversation_id)
        self._created.pop(conversation_id, None)
        await self.store.update_conversation(conversation_id, title=title)
        return await self.conversation(conversation_id)

    async def delete(self, conversation_id: str) -> None:
        """Stop the conversation's actor (cancelling a running turn) and delete it.

        Raises:
            UnknownConversation: no such conversation.
        """
        self._created.pop(conversation_id, None)
        slot = self._slots.pop(conversation_id, None)
        if slot is not None and slot.handle is not None:
            try:
                await slot.handle.cancel()
            except (ActorGone, ActorCrashed):
                pass
            slot.handle.close()
        if not await self.store.delete_conversation(conversation_id):
            raise UnknownConversation("No such conversation.", conversation_id=conversation_id)

    # -- turns ------------------------------------------------------------------

    @asynccontextmanager
    async def open_turn(
        self,
        conversation_id: str,
        text: str,
        *,
        config: ProviderConfig | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[TurnStream]:
        """Send a user message and stream the reply; leaving the block early stops the turn.

        ``config`` overrides the conversation's provider for this and later turns.

        Raises:
            LimitExceeded: the message is too long.
            Busy: the conversation's inbox stayed full.
            NotConnected, ProviderError, StoreError, ActorCrashed: from the turn, while iterating.
        """
        self.limits.check_message(text)
        captured = self.instrumentation.capture_context()
        turn = await self._with_actor(
            conversation_id, lambda h: h.open_turn(text, config, captured), owner
        )
        slot = self._slots.get(conversation_id)
        if slot is not None:
            slot.turns_open += 1  # not idle while someone waits for a reply
        self._turns_started += 1
        self._turns_open += 1
        try:
            yield turn
        finally:
            turn.close()
            self._turns_open -= 1
            if slot is not None:
                slot.turns_open -= 1

    async def chat(
        self,
        conversation_id: str,
        text: str,
        *,
        config: ProviderConfig | None = None,
        owner: str | None = None,
    ) -> Reply:
        """Send a user message and wait for the whole reply (committed before it returns).

        Raises:
            LimitExceeded, Busy, NotConnected, ProviderError, StoreError, ActorCrashed.
        """
        async with self.open_turn(conversation_id, text, config=config, owner=owner) as turn:
            return await turn.wait_reply()

    async def stream(
        self,
        conversation_id: str,
        text: str,
        *,
        config: ProviderConfig | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas; breaking out early stops the turn.

        Raises:
            the same as :meth:`chat`.
        """
        async with self.open_turn(conversation_id, text, config=config, owner=owner) as turn:
            async for delta in turn:
                yield delta

    async def cancel(self, conversation_id: str) -> bool:
        """Stop the conversation's running turn, if any; True if one was stopped."""
        slot = self._slots.get(conversation_id)
        if slot is None or slot.handle is None:
            return False
        try:
            return await slot.handle.cancel()
        except ActorGone:
            return False

    async def history(self, conversation_id: str) -> tuple[Message, ...]:
        """A copy of the committed history (refreshed if another instance changed it)."""
        return await self._with_actor(conversation_id, lambda h: h.history())

    async def reset(self, conversation_id: str) -> None:
        """Forget the conversation's messages (after the running turn, if any)."""
        await self._with_actor(conversation_id, lambda h: h.reset())

    async def connect(
        self, conversation_id: str, config: ProviderConfig, *, owner: str | None = None
    ) -> None:
        """Use ``config`` for this conversation's next turns, keeping its history.

        Creates the conversation if it does not exist yet.
        """
        await self._with_actor(conversation_id, lambda h: h.reconfigure(config), owner)

    async def list_models(self, config: ProviderConfig) -> list[str]:
        """The models ``config``'s provider offers.

        Raises:
            ProviderError: the upstream failed.
        """
        provider = self._provider_factory(config, self.http_client)
        return await provider.list_models()

    async def ping(self) -> None:
        """Raise unless the supervisor runs and its store answers (readiness).

        Raises:
            ShuttingDown, StoreError.
        """
        if not self._running:
            raise ShuttingDown("The server is shutting down.")
        await self.store.ping()


def _only_contains(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    return all(
        leaf is exc if not isinstance(leaf, BaseExceptionGroup) else _only_contains(leaf, exc)
        for leaf in group.exceptions
    )


def new_conversation_id() -> str:
    """A random, unguessable conversation id (122 random bits)."""
    return uuid.uuid4().hex


def _fail_remaining(inbox: Inbox) -> None:
    """Shut the inbox of an actor that exits, answering what it never took: no caller waits forever."""
    left = inbox.shut()
    if left:
        error = ActorCrashed("This conversation stopped unexpectedly; please retry.")
        for request in left:
            _fail_queued(request, error)


def _shutting_down() -> ShuttingDown:
    return ShuttingDown("The server is shutting down; try again shortly.")

