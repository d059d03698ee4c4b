"""The supervisor and its actors, on asyncio and trio, with a scripted provider."""

from __future__ import annotations

import anyio
import pytest

from chatbot import (
    ActorCrashed,
    Busy,
    LimitExceeded,
    Limits,
    NotConnected,
    ProviderConfig,
    Role,
    ShuttingDown,
    Supervisor,
    TurnStream,
    UpstreamPolicy,
    UpstreamUnavailable,
    Usage,
)
from chatbot.providers import StreamEnd
from chatbot.store import MemoryStore
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
