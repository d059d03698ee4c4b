"""What only the SQLite store does: its URL, its file, its query plans, its durability."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from anyio import to_thread

from chatbot import ConfigError, Message, StoreError
from chatbot.store import ConversationInfo
from chatbot.store.sqlite import (
    _LIST_BY_OWNER,
    _LIST_UNOWNED,
    _SELECT_MESSAGES,
    SQLiteStore,
    database_path,
)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/chatbot.db", "data/chatbot.db"),
        ("sqlite:////var/lib/chatbot/chatbot.db", "/var/lib/chatbot/chatbot.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_url_names_the_file(url: str, path: str) -> None:
    assert database_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://chatbot.db", "sqlite:///", "sqlite:///x.db?mode=ro"])
def test_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("sqlite:///data/chatbot.db")):
        database_path(url)


def file_facts(path: Path) -> tuple[bool, int, tuple[str]]:
    with closing(sqlite3.connect(path)) as conn:
        journal = conn.execute("PRAGMA journal_mode").fetchone()
    return path.is_file(), stat.S_IMODE(path.stat().st_mode), journal


@pytest.mark.anyio
async def test_first_open_creates_a_private_file_and_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "chatbot.db"

    store = await SQLiteStore.open(f"sqlite:///{path}")
    await store.aclose()

    assert await to_thread.run_sync(file_facts, path) == (True, 0o600, ("wal",))


@pytest.mark.anyio
async def test_in_memory_database_works(anyio_backend: str) -> None:
    store = await SQLiteStore.open("sqlite:///:memory:")
    try:
        await store.create_conversation(ConversationInfo(id="c1"))
        assert (
            await store.append_turn(
                "c1", Message.user("hi"), Message.assistant("yo"), expected_count=0
            )
            == 2
        )
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    await to_thread.run_sync(blocker.write_text, "not a folder")

    with pytest.raises(StoreError, match="Opening the SQLite database"):
        await SQLiteStore.open(f"sqlite:///{blocker / 'chatbot.db'}")


@pytest.mark.anyio
async def test_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "chatbot.db"
    await to_thread.run_sync(path.write_bytes, b"definitely not SQLite" * 100)

    with pytest.raises(StoreError, match="not a database"):
        await SQLiteStore.open(f"sqlite:///{path}")


@pytest.mark.anyio
async def test_closed_store_raises_store_error(sqlite_url: str) -> None:
    store = await SQLiteStore.open(sqlite_url)
    await store.aclose()
    await store.aclose()  # idempotent

    with pytest.raises(StoreError, match="closed"):
        await store.ping()


@pytest.mark.anyio
async def test_lone_surrogate_is_a_store_error(sqlite_url: str) -> None:
    store = await SQLiteStore.open(sqlite_url)
    try:
        await store.create_conversation(ConversationInfo(id="c1"))
        with pytest.raises(StoreError, match="not valid Unicode"):
            await store.append_turn(
                "c1", Message.user("bad \ud800"), Message.assistant("x"), expected_count=0
            )
        assert await store.message_count("c1") == 0
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("query", "params", "index"),
    [
        (_LIST_BY_OWNER, ("alice", 50), "conversations_owner_updated"),
        (_LIST_UNOWNED, (50,), "conversations_owner_updated"),
        (_SELECT_MESSAGES, ("c1",), "sqlite_autoindex_messages_1"),
    ],
    ids=["list-owned", "list-unowned", "load"],
)
@pytest.mark.anyio
async def test_hot_queries_read_an_index_in_order(
    sqlite_url: str, query: str, params: tuple[object, ...], index: str
) -> None:
    """Listing and loading stay flat as the store grows: an index range, no sort."""
    store = await SQLiteStore.open(sqlite_url)
    await store.aclose()

    def explain() -> str:
        with closing(sqlite3.connect(database_path(sqlite_url))) as conn:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {query}", params).fetchall()
        return " | ".join(row[3] for row in rows)

    plan = await to_thread.run_sync(explain)

    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import anyio
    from chatbot import Message
    from chatbot.store import ConversationInfo
    from chatbot.store.sqlite import SQLiteStore

    async def main() -> None:
        store = await SQLiteStore.open(sys.argv[1])
        await store.create_conversation(ConversationInfo(id="c1"))
        await store.append_turn(
            "c1", Message.user("acknowledged?"), Message.assistant("yes"), expected_count=0
        )
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint

    anyio.run(main)
    """
)


def test_acknowledged_turn_survives_kill_9(sqlite_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )

    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == "acknowledged"
    with closing(sqlite3.connect(database_path(sqlite_url))) as conn:
        rows = conn.execute(
            "SELECT seq, role, content FROM messages WHERE conversation_id = 'c1' ORDER BY seq"
        ).fetchall()
        count = conn.execute("SELECT message_count FROM conversations").fetchone()
    assert rows == [(0, "user", "acknowledged?"), (1, "assistant", "yes")]
    assert count == (2,)
