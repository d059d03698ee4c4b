"""Store fixtures: one open store per test, for each backend, each in isolation.

``store_kind`` parametrizes a test over every backend and event loop it supports:
memory and SQLite on asyncio and trio, PostgreSQL on asyncio only (psycopg's async
mode needs it). Each PostgreSQL test gets a fresh schema, dropped afterwards, so
tests never see each other's rows.

PostgreSQL comes from ``CHATBOT_TEST_POSTGRES_URL`` (default: the role and database
that ``.ci/run`` creates). When it is unreachable the PostgreSQL tests are skipped
with the reason, except when ``CI`` is set: there they fail, because a CI run that
silently skipped them would prove nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from chatbot.store import MemoryStore, Store
from chatbot.store.postgres import PostgresStore
from chatbot.store.sqlite import SQLiteStore

STORE_CASES = [
    pytest.param("memory", "asyncio", id="memory-asyncio"),
    pytest.param("memory", "trio", id="memory-trio"),
    pytest.param("sqlite", "asyncio", id="sqlite-asyncio"),
    pytest.param("sqlite", "trio", id="sqlite-trio"),
    pytest.param("postgres", "asyncio", id="postgres-asyncio", marks=pytest.mark.postgres),
]


@pytest.hookimpl(tryfirst=True)  # before the anyio_backend fixture's own params apply
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        metafunc.parametrize(("store_kind", "anyio_backend"), STORE_CASES)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq's ``options`` set so that every connection uses ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections live in a new, empty schema, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(postgres_url, schema)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A database file in a folder that does not exist yet (the store creates both)."""
    return f"sqlite:///{tmp_path / 'data' / 'chatbot.db'}"


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of an empty store of ``store_kind``."""
    if store_kind == "memory":
        return "memory:"
    if store_kind == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_schema_url"))


async def open_test_store(kind: str, url: str) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return await SQLiteStore.open(url)
    return await PostgresStore.open(url)


@pytest.fixture
async def store(store_kind: str, store_url: str, anyio_backend: str) -> AsyncIterator[Store]:
    """An open, empty store of ``store_kind``, closed after the test."""
    opened = await open_test_store(store_kind, store_url)
    try:
        yield opened
    finally:
        await opened.aclose()
