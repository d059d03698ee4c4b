"""What only the PostgreSQL store does: URLs and passwords, plans, its error boundary."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from chatbot import ConfigError, Message, StoreError
from chatbot.store import ConversationInfo
from chatbot.store._pg_locks import lock_key
from chatbot.store.postgres import (
    _LIST_BY_OWNER,
    _LIST_UNOWNED,
    _SELECT_MESSAGES,
    PostgresStore,
    describe,
)

pytestmark = pytest.mark.anyio

PASSWORD = "pa55-w0rd-never-shown"


def test_describe_names_the_server_but_not_the_password() -> None:
    described = describe(f"postgresql://chatbot:{PASSWORD}@db.internal:6543/chat?sslmode=require")

    assert described == "db.internal:6543/chat"


def test_malformed_url_is_a_config_error_that_does_not_repeat_it() -> None:
    with pytest.raises(ConfigError) as caught:
        describe(f"postgresql://chatbot:{PASSWORD}@host/db?no_such_option={PASSWORD}")

    assert PASSWORD not in str(caught.value)
    assert caught.value.variable == "DATABASE_URL"


def test_lock_keys_are_stable_signed_32_bit_integers() -> None:
    keys = {lock_key(f"conversation-{i}") for i in range(1000)}

    assert lock_key("abc") == lock_key("abc")
    assert all(-(2**31) <= key < 2**31 for key in keys)
    assert len(keys) > 990  # spread out: collisions only serialize, but should be rare


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    url = f"postgresql://chatbot:{PASSWORD}@127.0.0.1:1/chatbot"

    with pytest.raises(StoreError) as caught:
        await PostgresStore.open(url, connect_timeout=2)

    assert "127.0.0.1:1/chatbot" in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_clearly() -> None:
    with pytest.raises(StoreError, match="asyncio"):
        await PostgresStore.open("postgresql://chatbot@127.0.0.1:1/chatbot")


@pytest.mark.postgres
class TestWithServer:
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.mark.parametrize(
        ("query", "params", "index"),
        [
            (_LIST_BY_OWNER, ("alice", 50), "conversations_owner_updated"),
            (_LIST_UNOWNED, (50,), "conversations_unowned_updated"),
            (_SELECT_MESSAGES, ("c1",), "messages_pkey"),
        ],
        ids=["list-owned", "list-unowned", "load"],
    )
    async def test_hot_queries_can_read_an_index_in_order(
        self, postgres_schema_url: str, query: str, params: tuple[object, ...], index: str
    ) -> None:
        """With whole-table scans ruled out, the planner finds an index that needs no sort."""
        store = await PostgresStore.open(postgres_schema_url)
        await store.aclose()

        async with await psycopg.AsyncConnection.connect(postgres_schema_url) as conn:
            await conn.execute("SET enable_seqscan = off")
            await conn.execute("SET enable_bitmapscan = off")
            cursor = await conn.execute(f"EXPLAIN {query}".encode(), params)
            plan = "\n".join(row[0] for row in await cursor.fetchall())

        assert index in plan, plan
        assert "Sort" not in plan, plan

    async def test_pool_replaces_connections_the_server_dropped(
        self, postgres_schema_url: str
    ) -> None:
        """After a server restart or failover, the next calls work; no user sees the error."""
        name = f"chatbot-test-{uuid.uuid4().hex[:8]}"
        store = await PostgresStore.open(f"{postgres_schema_url}&application_name={name}")
        try:
            await store.create_conversation(ConversationInfo(id="c1"))
            async with store.lock_conversation("c1"):
                pass
            async with await psycopg.AsyncConnection.connect(postgres_schema_url) as admin:
                cursor = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                )
                assert await cursor.fetchone() == (2,)  # one query, one lock connection

            await store.ping()
            async with store.lock_conversation("c1"):
                assert await store.message_count("c1") == 0
        finally:
            await store.aclose()

    async def test_closed_store_raises_store_error(self, postgres_schema_url: str) -> None:
        store = await PostgresStore.open(postgres_schema_url)
        await store.aclose()
        await store.aclose()  # idempotent

        with pytest.raises(StoreError, match="closed"):
            await store.ping()
        with pytest.raises(StoreError, match="closed"):
            async with store.lock_conversation("c1"):
                pass

    @pytest.mark.parametrize(
        ("text", "reason"),
        [("nul \x00 byte", "NUL"), ("lone \ud800 surrogate", "not valid Unicode")],
    )
    async def test_text_postgres_cannot_hold_is_a_store_error(
        self, postgres_schema_url: str, text: str, reason: str
    ) -> None:
        store = await PostgresStore.open(postgres_schema_url)
        try:
            await store.create_conversation(ConversationInfo(id="c1"))
            with pytest.raises(StoreError, match=reason):
                await store.append_turn(
                    "c1", Message.user(text), Message.assistant("x"), expected_count=0
                )
            assert await store.message_count("c1") == 0
            await store.ping()  # the pool is still healthy
        finally:
            await store.aclose()
