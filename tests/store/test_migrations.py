"""Schema migrations: from an empty database, again (a no-op), and from version 1.

Version 2 adds ``conversations.message_count`` and fills it from the messages, so
the upgrade tests build a database at version 1 with messages in it, open it with
the current code, and check that the counts, listings and turns are right.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from anyio import to_thread

from chatbot import Message, StoreError
from chatbot.store import ConversationInfo
from chatbot.store._migrations import (
    Migration,
    load_migrations,
    migrate_postgres,
    migrate_sqlite,
    plan,
)
from chatbot.store.postgres import PostgresStore
from chatbot.store.sqlite import SQLiteStore, database_path

pytestmark = pytest.mark.anyio

CURRENT = [(1, "init"), (2, "message_count")]
# Read here, at import: reading files inside a test's event loop would block it.
SQLITE = load_migrations("sqlite")
POSTGRES = load_migrations("postgres")

V1_CONVERSATION = (
    "INSERT INTO conversations (id, owner, title, provider, model, system_prompt, "
    "created_at, updated_at) VALUES ({p}, {p}, '', NULL, NULL, NULL, 1.0, {p})"
)
V1_MESSAGE = (
    "INSERT INTO messages (conversation_id, seq, role, content, input_tokens, output_tokens, "
    "stopped, created_at) VALUES ({p}, {p}, {p}, {p}, NULL, NULL, {false}, 1.0)"
)


def v1_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Two conversations at schema version 1: one with three messages, one with none."""
    conversations = [("busy", "alice", 2.0), ("empty", "alice", 1.0)]
    messages = [
        ("busy", 0, "user", "first question"),
        ("busy", 1, "assistant", "first answer"),
        ("busy", 2, "user", "unanswered"),
    ]
    return conversations, messages


def test_both_dialects_have_the_same_migrations() -> None:
    sqlite_versions = [(m.version, m.name) for m in SQLITE]
    postgres_versions = [(m.version, m.name) for m in POSTGRES]

    assert sqlite_versions == postgres_versions == CURRENT


def test_plan_returns_pending_migrations_in_order() -> None:
    migrations = [Migration(3, "c", ""), Migration(1, "a", ""), Migration(2, "b", "")]

    assert [m.version for m in plan(migrations, {})] == [1, 2, 3]
    assert [m.version for m in plan(migrations, {1: "a"})] == [2, 3]
    assert plan(migrations, {1: "a", 2: "b", 3: "c"}) == ()


def test_plan_refuses_a_database_from_a_newer_release() -> None:
    with pytest.raises(StoreError, match="upgrade chatbot"):
        plan([Migration(1, "a", "")], {1: "a", 2: "from-the-future"})


def sqlite_query(path: str, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(query).fetchall()


def sqlite_migrate(path: str, migrations: Sequence[Migration] | None = None) -> list[int]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return [m.version for m in migrate_sqlite(conn, migrations)]


def build_sqlite_v1(path: str) -> None:
    """A database as release 1 left it: schema version 1, with messages."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert [m.version for m in migrate_sqlite(conn, SQLITE[:1])] == [1]
        conversations, messages = v1_rows()
        conn.executemany(V1_CONVERSATION.format(p="?"), conversations)
        conn.executemany(V1_MESSAGE.format(p="?", false="0"), messages)


class TestSQLite:
    """Raw sqlite3 work runs on a worker thread: it would block the test's event loop."""

    VERSIONS = "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"

    async def test_from_empty_database(self, sqlite_url: str) -> None:
        store = await SQLiteStore.open(sqlite_url)
        await store.aclose()

        path = database_path(sqlite_url)
        versions = await to_thread.run_sync(sqlite_query, path, self.VERSIONS)
        assert [row[:2] for row in versions] == CURRENT
        tables = await to_thread.run_sync(
            sqlite_query, path, "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
        assert {"conversations", "messages", "sessions", "schema_migrations"} <= {
            name for (name,) in tables
        }

    async def test_reopening_applies_nothing_and_keeps_data(self, sqlite_url: str) -> None:
        path = database_path(sqlite_url)
        store = await SQLiteStore.open(sqlite_url)
        await store.create_conversation(ConversationInfo(id="c1", owner="o"))
        await store.append_turn(
            "c1", Message.user("hello"), Message.assistant("hi"), expected_count=0
        )
        await store.aclose()
        before = await to_thread.run_sync(sqlite_query, path, self.VERSIONS)

        store = await SQLiteStore.open(sqlite_url)
        try:
            assert [m.content for m in await store.load_messages("c1")] == ["hello", "hi"]
        finally:
            await store.aclose()

        assert await to_thread.run_sync(sqlite_query, path, self.VERSIONS) == before
        assert await to_thread.run_sync(sqlite_migrate, path) == []

    async def test_upgrade_from_version_1_fills_message_counts(self, tmp_path: Path) -> None:
        path = str(tmp_path / "v1.db")
        await to_thread.run_sync(build_sqlite_v1, path)

        store = await SQLiteStore.open(f"sqlite:///{path}")
        try:
            listed = await store.list_conversations("alice")
            assert [(c.id, c.message_count) for c in listed] == [("busy", 3), ("empty", 0)]
            assert (
                await store.append_turn(
                    "busy", Message.user("q"), Message.assistant("a"), expected_count=3
                )
                == 5
            )
            assert [m.content for m in await store.load_messages("busy")][-2:] == ["q", "a"]
        finally:
            await store.aclose()
        versions = await to_thread.run_sync(sqlite_query, path, self.VERSIONS)
        assert [row[:2] for row in versions] == CURRENT

    async def test_newer_schema_is_refused(self, sqlite_url: str) -> None:
        store = await SQLiteStore.open(sqlite_url)
        await store.aclose()
        await to_thread.run_sync(
            sqlite_query,
            database_path(sqlite_url),
            "INSERT INTO schema_migrations VALUES (99, 'future', 0)",
        )

        with pytest.raises(StoreError, match="newer than this release"):
            await SQLiteStore.open(sqlite_url)

    def test_failing_migration_leaves_the_database_unchanged(self, tmp_path: Path) -> None:
        conn = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
        try:
            migrate_sqlite(conn, SQLITE[:1])
            broken = Migration(2, "broken", "CREATE TABLE half_done (x);\nTHIS IS NOT SQL;\n")

            with pytest.raises(sqlite3.Error):
                migrate_sqlite(conn, [*SQLITE[:1], broken])

            assert not conn.in_transaction
            assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
            assert conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'half_done'"
            ).fetchone() == (0,)
            assert [m.version for m in migrate_sqlite(conn)] == [2]
        finally:
            conn.close()

    def test_statements_are_split_on_real_boundaries_only(self, tmp_path: Path) -> None:
        tricky = Migration(
            1,
            "tricky",
            "-- a comment; with a semicolon\n"
            "CREATE TABLE t (x TEXT);\n"
            "CREATE TABLE log (x TEXT);\n"
            "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN\n"
            "  INSERT INTO log VALUES ('seen; ' || new.x);\n"
            "END;\n"
            "INSERT INTO t VALUES ('a;b');\n",
        )
        conn = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
        try:
            migrate_sqlite(conn, [tricky])

            assert conn.execute("SELECT x FROM log").fetchall() == [("seen; a;b",)]
        finally:
            conn.close()


class TestPostgres:
    """PostgreSQL migrations; each test gets its own empty schema."""

    pytestmark = pytest.mark.postgres

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @staticmethod
    async def fetch(url: str, query: str) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute(query.encode())
            return await cursor.fetchall()

    async def test_from_empty_database(self, postgres_schema_url: str) -> None:
        store = await PostgresStore.open(postgres_schema_url)
        await store.aclose()

        rows = await self.fetch(
            postgres_schema_url, "SELECT version, name FROM schema_migrations ORDER BY version"
        )
        assert rows == CURRENT
        tables = await self.fetch(
            postgres_schema_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        assert {"conversations", "messages", "sessions", "schema_migrations"} <= {
            t for (t,) in tables
        }

    async def test_reopening_applies_nothing_and_keeps_data(self, postgres_schema_url: str) -> None:
        store = await PostgresStore.open(postgres_schema_url)
        await store.create_conversation(ConversationInfo(id="c1", owner="o"))
        await store.append_turn(
            "c1", Message.user("hello"), Message.assistant("hi"), expected_count=0
        )
        await store.aclose()
        query = "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        before = await self.fetch(postgres_schema_url, query)

        store = await PostgresStore.open(postgres_schema_url)
        try:
            assert [m.content for m in await store.load_messages("c1")] == ["hello", "hi"]
        finally:
            await store.aclose()

        assert await self.fetch(postgres_schema_url, query) == before
        async with await psycopg.AsyncConnection.connect(
            postgres_schema_url, autocommit=True
        ) as conn:
            assert await migrate_postgres(conn, POSTGRES) == ()

    async def test_upgrade_from_version_1_fills_message_counts(
        self, postgres_schema_url: str
    ) -> None:
        async with await psycopg.AsyncConnection.connect(
            postgres_schema_url, autocommit=True
        ) as conn:
            applied = await migrate_postgres(conn, POSTGRES[:1])
            assert [m.version for m in applied] == [1]
            conversations, messages = v1_rows()
            async with conn.cursor() as cursor:
                await cursor.executemany(V1_CONVERSATION.format(p="%s").encode(), conversations)
                await cursor.executemany(
                    V1_MESSAGE.format(p="%s", false="false").encode(), messages
                )

        store = await PostgresStore.open(postgres_schema_url)
        try:
            listed = await store.list_conversations("alice")
            assert [(c.id, c.message_count) for c in listed] == [("busy", 3), ("empty", 0)]
            assert (
                await store.append_turn(
                    "busy", Message.user("q"), Message.assistant("a"), expected_count=3
                )
                == 5
            )
        finally:
            await store.aclose()
        rows = await self.fetch(
            postgres_schema_url, "SELECT version, name FROM schema_migrations ORDER BY version"
        )
        assert rows == CURRENT

    async def test_newer_schema_is_refused(self, postgres_schema_url: str) -> None:
        store = await PostgresStore.open(postgres_schema_url)
        await store.aclose()
        async with await psycopg.AsyncConnection.connect(
            postgres_schema_url, autocommit=True
        ) as conn:
            await conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")

        with pytest.raises(StoreError, match="newer than this release"):
            await PostgresStore.open(postgres_schema_url)

    async def test_failing_migration_applies_nothing(self, postgres_schema_url: str) -> None:
        broken = Migration(2, "broken", "CREATE TABLE half_done (x int); THIS IS NOT SQL;")
        async with await psycopg.AsyncConnection.connect(
            postgres_schema_url, autocommit=True
        ) as conn:
            with pytest.raises(psycopg.Error):
                await migrate_postgres(conn, [*POSTGRES[:1], broken])

            # Every pending migration ran in one transaction, so none of them stuck.
            cursor = await conn.execute(
                "SELECT to_regclass('schema_migrations'), to_regclass('conversations'), "
                "to_regclass('half_done')"
            )
            assert await cursor.fetchone() == (None, None, None)

    async def test_instances_starting_together_migrate_once(self, postgres_schema_url: str) -> None:
        stores: list[PostgresStore] = []

        async def open_one() -> None:
            stores.append(await PostgresStore.open(postgres_schema_url))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(open_one)
        finally:
            for store in stores:
                await store.aclose()

        assert len(stores) == 3
        rows = await self.fetch(
            postgres_schema_url, "SELECT version, name FROM schema_migrations ORDER BY version"
        )
        assert rows == CURRENT
