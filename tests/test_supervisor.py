"""The supervisor and its actors, on asyncio and trio, with a scripted provider."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncGenerator
from contextvars import ContextVar

import anyio
import attrs
import pytest

from chatbot import (
    ActorCrashed,
    Busy,
    LimitExceeded,
    Limits,
    Message,
    NotConnected,
    ProviderConfig,
    Role,
    ShuttingDown,
    StoreError,
    Supervisor,
    TurnStream,
    UpstreamPolicy,
    UpstreamUnavailable,
    Usage,
)
from chatbot.providers import ChatRequest, StreamEnd, StreamEvent
from chatbot.store import ConversationInfo, MemoryStore
from tests.fakes.scripted import Hang, ScriptedProvider

pytestmark = pytest.mark.anyio

CONFIG = ProviderConfig(provider="openai", model="gpt-test", api_key="sk-test")


def supervisor(provider: ScriptedProvider, **kwargs: object) -> Supervisor:
    kwargs.setdefault("default_config", CONFIG)
    return Supervisor(provider_factory=provider.factory, **kwargs)  # type: ignore[arg-type]


async def test_chat_returns_reply_and_commits_the_turn() -> None:
    provider = ScriptedProvider()
    async with supervisor(provider) as sup:
        reply = await sup.chat("c1", "hello")
        history = await sup.history("c1")
    assert reply.text == "You said: hello"
    assert reply.usage == Usage(1, 3)
    assert reply.conversation_id == "c1"
    assert [(m.role, m.content) for m in history] == [
        (Role.USER, "hello"),
        (Role.ASSISTANT, "You said: hello"),
    ]


async def test_the_provider_sees_the_whole_history_in_order() -> None:
    provider = ScriptedProvider()
    async with supervisor(provider) as sup:
        await sup.chat("c1", "one")
        await sup.chat("c1", "two")
    last = provider.requests[-1]
    assert [m.content for m in last.messages] == ["one", "You said: one", "two"]
    assert last.system == CONFIG.system_prompt
    assert last.model == "gpt-test"


async def test_stream_yields_deltas_in_order() -> None:
    provider = ScriptedProvider()
    provider.enqueue("Hel", "lo ", "there", StreamEnd(usage=Usage(5, 3)))
    async with supervisor(provider) as sup:
        deltas = [d async for d in sup.stream("c1", "hi")]
        async with sup.open_turn("c1", "again") as turn:
            more = [d async for d in turn]
    assert deltas == ["Hel", "lo ", "there"]
    assert "".join(more) == "You said: again"
    assert turn.reply is not None and turn.reply.text == "You said: again"


async def test_a_failed_turn_leaves_history_unchanged() -> None:
    provider = ScriptedProvider()
    async with supervisor(provider) as sup:
        await sup.chat("c1", "first")
        provider.enqueue("partial ", UpstreamUnavailable("The model is overloaded.", provider="openai", status=529))
        with pytest.raises(UpstreamUnavailable, match="overloaded"):
            await sup.chat("c1", "second")
        history = await sup.history("c1")
        assert [m.content for m in history] == ["first", "You said: first"]
        # The conversation goes on after the failure.
        assert (await sup.chat("c1", "third")).text == "You said: third"


async def test_cancel_keeps_the_partial_reply_marked_stopped() -> None:
    provider = ScriptedProvider()
    provider.enqueue("The answer ", "is ", Hang())
    async with supervisor(provider) as sup:
        async with sup.open_turn("c1", "question") as turn:
            assert await turn.__anext__() == "The answer "
            assert await turn.__anext__() == "is "
            assert await sup.cancel("c1") is True
            reply = await turn.wait_reply()
        history = await sup.history("c1")
    assert reply.stopped and reply.text == "The answer is "
    assert history[-1].stopped and history[-1].content == "The answer is "
    assert provider.closed == 1


async def test_a_caller_that_leaves_stops_the_turn() -> None:
    provider = ScriptedProvider()
    provider.enqueue("abc", Hang())
    async with supervisor(provider) as sup:
        async with sup.open_turn("c1", "q") as turn:
            assert await turn.__anext__() == "abc"
        # The turn is committed as stopped once the actor notices; history() queues behind it.
        with anyio.fail_after(5):
            while len(history := await sup.history("c1")) < 2:
                await anyio.sleep(0.01)
    assert history[-1].stopped and history[-1].content == "abc"
    assert provider.closed == 1


async def test_a_crash_is_contained_and_the_actor_restarts() -> None:
    provider = ScriptedProvider()
    release = anyio.Event()
    async with supervisor(provider) as sup:
        await sup.chat("c1", "before")
        provider.enqueue("other ", Hang(release), StreamEnd())  # c2 is mid-stream meanwhile
        async with sup.open_turn("c2", "unrelated") as other:
            assert await other.__anext__() == "other "
            provider.enqueue(RuntimeError("bug in an adapter"))
            with pytest.raises(ActorCrashed):
                await sup.chat("c1", "boom")
            release.set()
            assert (await other.wait_reply()).text == "other "
        assert (await sup.chat("c1", "after")).text == "You said: after"
        assert [m.content for m in await sup.history("c1")] == [
            "before", "You said: before", "after", "You said: after",
        ]
        assert sup.statistics().restarts == 1


async def test_a_retry_right_after_a_crash_reaches_the_restarted_actor() -> None:
    """The caller hears of the crash before the actor is gone: its retry must not be lost."""
    provider = ScriptedProvider()
    async with supervisor(provider) as sup:
        await sup.chat("c1", "before")
        provider.enqueue(RuntimeError("bug in an adapter"))
        with pytest.raises(ActorCrashed):
            await sup.chat("c1", "boom")
        with anyio.fail_after(5):
            assert (await sup.chat("c1", "after")).text == "You said: after"
        assert [m.content for m in await sup.history("c1")] == [
            "before", "You said: before", "after", "You said: after",
        ]


async def test_turns_queued_behind_a_crash_are_served_after_the_restart() -> None:
    provider = ScriptedProvider()
    release = anyio.Event()
    async with supervisor(provider) as sup:
        provider.enqueue(Hang(release), RuntimeError("bug in an adapter"))
        async with (
            sup.open_turn("c1", "boom") as crashing,
            sup.open_turn("c1", "queued") as queued,
        ):
            release.set()
            with pytest.raises(ActorCrashed):
                await crashing.wait_reply()
            with anyio.fail_after(5):
                assert (await queued.wait_reply()).text == "You said: queued"
        assert [m.content for m in await sup.history("c1")] == ["queued", "You said: queued"]
        assert sup.statistics().restarts == 1


async def test_not_connected_without_any_provider() -> None:
    async with Supervisor() as sup:
        with pytest.raises(NotConnected):
            await sup.chat("c1", "hello")
        assert await sup.history("c1") == ()


async def test_connect_switches_provider_and_keeps_history() -> None:
    provider = ScriptedProvider()
    async with Supervisor(provider_factory=provider.factory) as sup:
        await sup.connect("c1", CONFIG)
        await sup.chat("c1", "hello")
        other = ProviderConfig(provider="claude", model="claude-test", api_key="k")
        await sup.connect("c1", other)
        await sup.chat("c1", "again")
        info = await sup.conversation("c1")
    assert provider.requests[-1].model == "claude-test"
    assert len(provider.requests[-1].messages) == 3
    assert (info.provider, info.model) == ("claude", "claude-test")


async def test_reset_forgets_history() -> None:
    provider = ScriptedProvider()
    async with supervisor(provider) as sup:
        await sup.chat("c1", "hello")
        await sup.reset("c1")
        assert await sup.history("c1") == ()


async def test_long_messages_are_refused() -> None:
    async with supervisor(ScriptedProvider(), limits=Limits(max_message_chars=10)) as sup:
        with pytest.raises(LimitExceeded, match="limit is 10"):
            await sup.chat("c1", "x" * 11)


async def test_context_budget_trims_the_request_not_the_history() -> None:
    provider = ScriptedProvider()
    async with supervisor(provider, limits=Limits(context_budget_tokens=200)) as sup:
        for i in range(10):
            await sup.chat("c1", f"{i} " + "y" * 100)
        history = await sup.history("c1")
    assert len(history) == 20
    sent = provider.requests[-1].messages
    assert len(sent) < 19
    assert sent[-1].content.startswith("9 ")
    assert sent[0].role is Role.USER  # whole turns only


async def test_idle_actors_are_evicted_and_nothing_is_lost() -> None:
    provider = ScriptedProvider()
    store = MemoryStore()
    async with supervisor(provider, store=store, limits=Limits(idle_evict_after=0.05)) as sup:
        await sup.chat("c1", "hello")
        with anyio.fail_after(5):
            while sup.statistics().live_actors:
                await anyio.sleep(0.02)
        assert sup.statistics().evicted >= 1
        assert [m.content for m in await sup.history("c1")] == ["hello", "You said: hello"]


async def test_max_actors_evicts_the_least_recently_used() -> None:
    provider = ScriptedProvider()
    async with supervisor(provider, limits=Limits(max_actors=3)) as sup:
        for i in range(6):
            await sup.chat(f"c{i}", "hi")
        assert sup.statistics().live_actors <= 3
        assert len(await sup.history("c0")) == 2  # respawned from the store


async def test_a_full_queue_answers_busy() -> None:
    provider = ScriptedProvider()
    release = anyio.Event()
    provider.enqueue(Hang(release), StreamEnd())
    limits = Limits(inbox_size=1, busy_timeout=0.05)
    async with supervisor(provider, limits=limits) as sup:
        async with sup.open_turn("c1", "first"):
            errors = []
            async with anyio.create_task_group() as tg:
                async def attempt(i: int) -> None:
                    try:
                        await sup.chat("c1", f"queued {i}")
                    except Busy as exc:
                        errors.append(exc)
                for i in range(4):
                    tg.start_soon(attempt, i)
                with anyio.fail_after(5):
                    while not errors:
                        await anyio.sleep(0.01)
                release.set()
        assert all(isinstance(e, Busy) for e in errors)
        assert "wait" in str(errors[0]) or "busy" in str(errors[0])


async def test_shutdown_cancels_in_flight_turns_after_the_grace_period() -> None:
    provider = ScriptedProvider()
    store = MemoryStore()
    provider.enqueue("partial", Hang())
    outcome: list[BaseException] = []

    async def finish(turn: TurnStream) -> None:
        try:
            await turn.wait_reply()
        except ShuttingDown as exc:
            outcome.append(exc)

    sup = supervisor(provider, store=store, shutdown_grace=0.1)
    async with anyio.create_task_group() as callers:
        await sup.__aenter__()
        async with sup.open_turn("c1", "q") as turn:
            assert await turn.__anext__() == "partial"
            callers.start_soon(finish, turn)
            # Leaving the supervisor while the turn hangs: the grace period runs out.
            await sup.__aexit__(None, None, None)
    assert outcome and isinstance(outcome[0], ShuttingDown)
    messages = await store.load_messages("c1")
    assert [(m.content, m.stopped) for m in messages] == [("q", False), ("partial", True)]


async def test_a_second_supervisor_rehydrates_from_the_store() -> None:
    store = MemoryStore()
    async with supervisor(ScriptedProvider(), store=store) as sup:
        await sup.chat("c1", "remember me")
    provider = ScriptedProvider()
    async with supervisor(provider, store=store) as sup:
        await sup.chat("c1", "again")
    assert [m.content for m in provider.requests[0].messages] == [
        "remember me", "You said: remember me", "again",
    ]


async def test_a_thousand_concurrent_conversations_keep_to_themselves() -> None:
    provider = ScriptedProvider()
    conversations, turns = 1000, 3
    async with supervisor(provider, policy=UpstreamPolicy()) as sup:
        async def converse(i: int) -> None:
            for t in range(turns):
                reply = await sup.chat(f"conv-{i}", f"canary-{i}-{t}")
                assert reply.text == f"You said: canary-{i}-{t}"

        async with anyio.create_task_group() as tg:
            for i in range(conversations):
                tg.start_soon(converse, i)
        for i in range(conversations):
            history = await sup.history(f"conv-{i}")
            assert len(history) == 2 * turns
            assert all(f"canary-{i}-" in m.content for m in history)
    assert len(provider.requests) == conversations * turns


async def test_cancel_also_stops_turns_waiting_in_the_queue() -> None:
    provider = ScriptedProvider()
    provider.enqueue("first ", Hang())
    async with supervisor(provider) as sup:
        async with sup.open_turn("c1", "one") as running:
            assert await running.__anext__() == "first "
            async with sup.open_turn("c1", "two") as queued:
                assert await sup.cancel("c1") is True
                first, second = await running.wait_reply(), await queued.wait_reply()
        history = await sup.history("c1")
    assert (first.stopped, first.text) == (True, "first ")
    assert (second.stopped, second.text) == (True, "")
    assert [(m.content, m.stopped) for m in history] == [
        ("one", False), ("first ", True), ("two", False), ("", True),
    ]
    assert provider.started == 1  # the queued turn never reached the upstream


async def test_looking_at_an_unknown_conversation_creates_nothing() -> None:
    store = MemoryStore()
    async with supervisor(ScriptedProvider(), store=store) as sup:
        assert await sup.history("nobody") == ()
        assert await sup.list_conversations(None) == []


async def test_errors_leave_the_supervisor_block_unwrapped() -> None:
    with pytest.raises(ValueError, match="mine"):
        async with supervisor(ScriptedProvider()) as sup:
            await sup.chat("c1", "hello")
            raise ValueError("mine")


async def test_actors_come_and_go_under_load_without_hanging() -> None:
    provider = ScriptedProvider()
    conversations, turns = 50, 200
    limits = Limits(idle_evict_after=0.02)
    with anyio.fail_after(120):  # a hang guard, not a timing assertion
        async with supervisor(provider, limits=limits) as sup:
            async def converse(i: int) -> None:
                for t in range(turns):
                    reply = await sup.chat(f"c{i}", f"{i}-{t}")
                    assert reply.text == f"You said: {i}-{t}"
                    if t % 50 == 49:
                        await anyio.sleep(0.05)  # idle long enough to be evicted

            async with anyio.create_task_group() as tg:
                for i in range(conversations):
                    tg.start_soon(converse, i)
            for i in range(conversations):
                assert len(await sup.history(f"c{i}")) == 2 * turns
            stats = sup.statistics()
    assert stats.evicted > 0
    assert stats.spawned > conversations
    assert stats.restarts == 0



async def test_conversations_with_the_same_config_share_one_adapter() -> None:
    provider = ScriptedProvider()
    made: list[ProviderConfig] = []

    def factory(config: ProviderConfig, client: object) -> object:
        made.append(config)
        return provider.factory(config, client)  # type: ignore[arg-type]

    other = ProviderConfig(provider="claude", model="claude-test", api_key="k")
    async with Supervisor(default_config=CONFIG, provider_factory=factory) as sup:  # type: ignore[arg-type]
        for i in range(5):
            await sup.chat(f"c{i}", "hi")
        await sup.connect("c0", other)
        await sup.chat("c0", "again")
        await sup.chat("c5", "hi")
    assert made == [CONFIG, other]


_REQUEST: ContextVar[object] = ContextVar("request")


class _RequestState:
    """Stands for what a web framework binds to a request's context."""


@attrs.define
class _ContextProbe(ScriptedProvider):
    """Records what the actor sees of ``_REQUEST`` while it serves a turn."""

    seen: list[object] = attrs.field(factory=list)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.seen.append(_REQUEST.get(None))
        async for event in ScriptedProvider.stream(self, request):
            yield event


async def test_an_actor_neither_sees_nor_keeps_the_context_of_the_caller_that_spawned_it() -> None:
    provider = _ContextProbe()
    state = _RequestState()
    alive = weakref.ref(state)

    async def handle_request(state: _RequestState) -> None:
        _REQUEST.set(state)
        await sup.chat("c1", "hello")  # spawns the actor

    async with supervisor(provider) as sup:
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle_request, state)
        del state
        gc.collect()
        assert sup.statistics().live_actors == 1
        assert alive() is None  # the live actor does not keep the request's context
        await sup.chat("c1", "again")
    assert provider.seen == [None, None]


class _SlowStore:
    """A memory store whose loading waits for ``release``, then fails if ``fail`` is set."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.release = anyio.Event()
        self.fail = False
        self.loads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def _loading(self) -> None:
        self.loads += 1
        await self.release.wait()
        if self.fail:
            raise StoreError("The database is unreachable.")

    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationInfo, tuple[Message, ...]] | None:
        await self._loading()
        return await self.inner.load_conversation(conversation_id)

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        await self._loading()
        return await self.inner.get_conversation(conversation_id)


async def test_a_failed_spawn_raises_the_store_error_to_the_caller_and_is_retried_next_time() -> None:
    store = _SlowStore()
    store.release.set()
    store.fail = True
    async with supervisor(ScriptedProvider(), store=store) as sup:
        with pytest.raises(StoreError, match="unreachable"):
            await sup.chat("c1", "hello")
        assert sup.statistics().live_actors == 0
        store.fail = False
        assert (await sup.chat("c1", "hello")).text == "You said: hello"
        assert sup.statistics().spawned == 1


async def test_callers_arriving_during_a_spawn_share_one_actor_even_if_the_first_gives_up() -> None:
    store = _SlowStore()
    async with supervisor(ScriptedProvider(), store=store) as sup:
        with anyio.move_on_after(0.05):
            await sup.chat("c1", "abandoned")  # waits for the load, then is cancelled
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(sup.chat, "c1", f"hello {i}")
            await anyio.sleep(0.05)
            store.release.set()
        assert sup.statistics().spawned == 1
        assert len(await sup.history("c1")) == 6


async def test_shutting_down_during_a_spawn_answers_the_waiting_caller() -> None:
    store = _SlowStore()  # never released: the actor is still loading at shutdown
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await sup.chat("c1", "hello")
        except ShuttingDown as exc:
            outcome.append(exc)

    sup = supervisor(ScriptedProvider(), store=store, shutdown_grace=0.05)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as callers:
            await sup.__aenter__()
            callers.start_soon(call)
            while not store.loads:
                await anyio.sleep(0.01)
            await sup.__aexit__(None, None, None)
    assert outcome and isinstance(outcome[0], ShuttingDown)
