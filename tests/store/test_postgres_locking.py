"""Two PostgresStore instances on one database behave like two chatbot processes.

``lock_conversation`` must make the second instance wait for the first one's turn,
and ``append_turn`` must refuse a turn based on a stale count. Waiting is observed
in ``pg_locks`` (a backend waiting for our advisory lock), never by timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import psycopg
import pytest

from chatbot import Message, Role
from chatbot.store import ConversationInfo, StoreConflict
from chatbot.store._pg_locks import LOCK_CLASS, lock_key
from chatbot.store.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

# A guard against hangs, not a timing assertion: every wait below ends by itself.
DEADLINE = 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def stores(postgres_schema_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two independent stores (two pools) on the same schema, like two instances."""
    first = await PostgresStore.open(postgres_schema_url)
    try:
        second = await PostgresStore.open(postgres_schema_url)
        try:
            await first.create_conversation(ConversationInfo(id="c1", owner="o"))
            yield first, second
        finally:
            await second.aclose()
    finally:
        await first.aclose()


async def advisory_locks(url: str, conversation_id: str) -> list[bool]:
    """The ``granted`` flag of every backend holding or awaiting the conversation's lock."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s AND objid = %s AND objsubid = 2",
            (LOCK_CLASS, lock_key(conversation_id) % 2**32),
        )
        return [granted for (granted,) in await cursor.fetchall()]


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(DEADLINE):
        while not await check():
            await anyio.sleep(0.01)


async def take_turn(store: PostgresStore, conversation_id: str, text: str) -> int:
    """One turn as an actor takes it: under the lock, from the count it reads there."""
    async with store.lock_conversation(conversation_id):
        count = await store.message_count(conversation_id)
        return await store.append_turn(
            conversation_id,
            Message.user(text),
            Message.assistant(f"re: {text}"),
            expected_count=count,
        )


async def test_lock_makes_the_other_instance_wait(
    stores: tuple[PostgresStore, PostgresStore], postgres_schema_url: str
) -> None:
    first, second = stores
    events: list[str] = []
    first_in = anyio.Event()
    release_first = anyio.Event()

    async def hold_in_first() -> None:
        async with first.lock_conversation("c1"):
            events.append("first in")
            first_in.set()
            await release_first.wait()
            await first.append_turn(
                "c1", Message.user("from first"), Message.assistant("ok"), expected_count=0
            )
            events.append("first out")

    async def enter_in_second() -> None:
        async with second.lock_conversation("c1"):
            events.append("second in")
            events.append(f"second sees {await second.message_count('c1')}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_in_first)
        await first_in.wait()
        tg.start_soon(enter_in_second)

        async def second_is_waiting() -> bool:
            return sorted(await advisory_locks(postgres_schema_url, "c1")) == [False, True]

        await wait_until(second_is_waiting)
        assert events == ["first in"]
        release_first.set()

    assert events == ["first in", "first out", "second in", "second sees 2"]
    assert await advisory_locks(postgres_schema_url, "c1") == []


async def test_locks_of_different_conversations_are_independent(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    assert lock_key("c1") != lock_key("c2")

    with anyio.fail_after(DEADLINE):
        async with first.lock_conversation("c1"), second.lock_conversation("c2"):
            pass


async def test_stale_count_from_another_instance_conflicts(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    seen_by_second = await second.message_count("c1")
    await first.append_turn(
        "c1", Message.user("first wins"), Message.assistant("ok"), expected_count=0
    )

    with pytest.raises(StoreConflict):
        await second.append_turn(
            "c1", Message.user("stale"), Message.assistant("lost"), expected_count=seen_by_second
        )

    reloaded = await second.message_count("c1")
    assert (
        await second.append_turn(
            "c1", Message.user("retried"), Message.assistant("ok"), expected_count=reloaded
        )
        == 4
    )
    assert [m.content for m in await first.load_messages("c1")] == [
        "first wins",
        "ok",
        "retried",
        "ok",
    ]


async def test_simultaneous_appends_from_both_instances_commit_once(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    outcomes: list[str] = []

    async def attempt(store: PostgresStore, text: str) -> None:
        try:
            await store.append_turn(
                "c1", Message.user(text), Message.assistant("x"), expected_count=0
            )
            outcomes.append("committed")
        except StoreConflict:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for i, store in enumerate(stores * 3):
            tg.start_soon(attempt, store, f"attempt {i}")

    assert outcomes.count("committed") == 1 and outcomes.count("conflict") == 5
    assert await stores[0].message_count("c1") == 2


async def test_interleaved_turns_through_both_instances_lose_nothing(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    async def client(store: PostgresStore, name: str) -> None:
        for i in range(5):
            await take_turn(store, "c1", f"{name} {i}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(client, stores[0], "first")
        tg.start_soon(client, stores[1], "second")

    first_view = await stores[0].load_messages("c1")
    assert first_view == await stores[1].load_messages("c1")
    assert len(first_view) == 20
    pairs = list(zip(first_view[::2], first_view[1::2], strict=True))
    assert all(
        u.role is Role.USER and a.role is Role.ASSISTANT and a.content == f"re: {u.content}"
        for u, a in pairs
    )
    assert sorted(u.content for u, _ in pairs) == sorted(
        f"{name} {i}" for name in ("first", "second") for i in range(5)
    )


async def test_error_in_the_block_propagates_and_releases_the_lock(
    stores: tuple[PostgresStore, PostgresStore], postgres_schema_url: str
) -> None:
    first, second = stores

    with pytest.raises(ZeroDivisionError):
        async with first.lock_conversation("c1"):
            1 / 0  # noqa: B018

    assert await advisory_locks(postgres_schema_url, "c1") == []
    with anyio.fail_after(DEADLINE):
        async with second.lock_conversation("c1"):
            pass


async def test_cancelled_waiter_leaves_no_lock_behind(
    stores: tuple[PostgresStore, PostgresStore], postgres_schema_url: str
) -> None:
    first, second = stores
    entered_second = False

    async def wait_in_second(scope: anyio.CancelScope) -> None:
        nonlocal entered_second
        with scope:
            async with second.lock_conversation("c1"):
                entered_second = True

    async with first.lock_conversation("c1"):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(wait_in_second, scope)

            async def second_is_waiting() -> bool:
                return False in await advisory_locks(postgres_schema_url, "c1")

            await wait_until(second_is_waiting)
            scope.cancel()

        async def only_first_holds() -> bool:
            return await advisory_locks(postgres_schema_url, "c1") == [True]

        await wait_until(only_first_holds)

    assert not entered_second

    async def nobody_holds() -> bool:
        return await advisory_locks(postgres_schema_url, "c1") == []

    await wait_until(nobody_holds)
    with anyio.fail_after(DEADLINE):
        assert await take_turn(second, "c1", "after the cancelled wait") == 2


async def test_held_locks_never_starve_the_turns_they_protect(postgres_schema_url: str) -> None:
    """More concurrent turns than query connections: each still commits under its lock."""
    store = await PostgresStore.open(postgres_schema_url, max_size=2)
    try:
        ids = [f"conv-{i}" for i in range(6)]
        for conversation_id in ids:
            await store.create_conversation(ConversationInfo(id=conversation_id))
        all_locked = anyio.Event()
        locked = 0

        async def turn(conversation_id: str) -> None:
            nonlocal locked
            async with store.lock_conversation(conversation_id):
                locked += 1
                if locked == len(ids):
                    all_locked.set()
                await all_locked.wait()  # every lock is held before any turn commits
                await store.append_turn(
                    conversation_id, Message.user("q"), Message.assistant("a"), expected_count=0
                )

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for conversation_id in ids:
                    tg.start_soon(turn, conversation_id)

        assert [await store.message_count(c) for c in ids] == [2] * len(ids)
    finally:
        await store.aclose()
