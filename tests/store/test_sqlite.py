"""What only the SQLite store does: its URL, its file, its query plans, its durability."""

from __future__ import annotations

import _sqlite3
import ctypes
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from anyio import to_thread

from chatbot import ConfigError, Message, StoreError
from chatbot.store import ConversationInfo
from chatbot.store import sqlite as sqlite_module
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


def _count_thread_hops(
    monkeypatch: pytest.MonkeyPatch, *, first: Callable[[], None] | None = None
) -> list[str]:
    """The functions run on a worker thread from now on, by name; ``first`` runs on the
    thread before each of them."""
    hops: list[str] = []
    real_run_sync = to_thread.run_sync

    async def counting_run_sync(work, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(work, "__qualname__", repr(work)))

        def on_thread(*work_args):  # type: ignore[no-untyped-def]
            if first is not None:
                first()
            return work(*work_args)

        return await real_run_sync(on_thread, *args, **kwargs)

    monkeypatch.setattr(to_thread, "run_sync", counting_run_sync)
    return hops


def _sqlite_memory_used() -> int:
    """Bytes SQLite holds in this process (``sqlite3_status64(SQLITE_STATUS_MEMORY_USED)``)."""
    status64 = ctypes.CDLL(_sqlite3.__file__).sqlite3_status64
    current, highwater = ctypes.c_int64(), ctypes.c_int64()
    assert status64(0, ctypes.byref(current), ctypes.byref(highwater), 0) == 0
    return current.value


@pytest.mark.anyio
async def test_quick_calls_skip_the_worker_thread(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn's writes run on the event loop; a long turn and whole histories do not."""
    store = await SQLiteStore.open(sqlite_url)
    hops = _count_thread_hops(monkeypatch)
    try:
        await store.create_conversation(ConversationInfo(id="c1"))
        await store.append_turn("c1", Message.user("hi"), Message.assistant("hello"), expected_count=0)
        assert hops == []

        long_reply = "x" * (sqlite_module._QUICK_TEXT_LIMIT + 1)
        await store.append_turn("c1", Message.user("more"), Message.assistant(long_reply), expected_count=2)
        messages = await store.load_messages("c1")
        assert [m.content for m in messages] == ["hi", "hello", "more", long_reply]
        assert len(hops) == 2, hops
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_release_memory_empties_the_page_cache_on_the_event_loop(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the server calls once a busy spell is over; the data stays, of course."""
    store = await SQLiteStore.open(sqlite_url)
    try:
        await store.create_conversation(ConversationInfo(id="c1"))
        for i in range(50):
            await store.append_turn(
                "c1", Message.user(f"{i} " + "q" * 4000), Message.assistant("a" * 4000),
                expected_count=2 * i,
            )
        messages = await store.load_messages("c1")  # about 100 pages now in the cache
        filled = _sqlite_memory_used()
        hops = _count_thread_hops(monkeypatch)
        await store.release_memory()
        assert filled - _sqlite_memory_used() > 300_000
        assert hops == []
        assert await store.load_messages("c1") == messages
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_quick_calls_wait_for_a_call_on_the_thread_without_joining_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turns saved while a long one is on the worker thread still run on the event loop
    (queueing behind it on the thread would keep every later call there under load),
    and every write lands."""
    store = await SQLiteStore.open(sqlite_url)
    on_thread, release = threading.Event(), threading.Event()

    def hold_the_thread() -> None:
        on_thread.set()
        release.wait(10)  # the thread stays busy until the others have queued

    async def save(name: str, reply: Message) -> None:
        await store.append_turn(name, Message.user(name), reply, expected_count=0)

    async def until(condition: Callable[[], bool]) -> None:
        with anyio.fail_after(5):
            while not condition():
                await anyio.sleep(0.005)

    try:
        for name in ("long", "a", "b", "c"):
            await store.create_conversation(ConversationInfo(id=name))
        hops = _count_thread_hops(monkeypatch, first=hold_the_thread)
        long_reply = Message.assistant("x" * (sqlite_module._QUICK_TEXT_LIMIT + 1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(save, "long", long_reply)
            await until(on_thread.is_set)
            for name in ("a", "b", "c"):
                tg.start_soon(save, name, Message.assistant(name))
            await until(lambda: store._limiter.statistics().tasks_waiting == 3)
            release.set()
        assert len(hops) == 1, hops
        for name in ("long", "a", "b", "c"):
            assert await store.message_count(name) == 2
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_write_lock_held_elsewhere_never_stalls_the_event_loop(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another connection holds the write lock, a quick write waits for it on the
    worker thread, and the event loop goes on serving everyone else. (A busy wait on the
    loop would stall it for the whole busy timeout, then fail the write.)"""
    store = await SQLiteStore.open(sqlite_url)
    await store.create_conversation(ConversationInfo(id="c1"))
    other = sqlite3.connect(database_path(sqlite_url), isolation_level=None, check_same_thread=False)
    ticks = 0
    written = anyio.Event()
    hops = _count_thread_hops(monkeypatch)

    async def write() -> None:
        await store.append_turn("c1", Message.user("hi"), Message.assistant("hello"), expected_count=0)
        written.set()

    try:
        other.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            while ticks < 20:  # the loop goes on while the write waits
                await anyio.sleep(0.01)
                ticks += 1
            assert not written.is_set()  # still waiting for the lock...
            assert len(hops) == 1, hops  # ...on the worker thread
            other.execute("COMMIT")
            with anyio.fail_after(5):
                await written.wait()
        assert await store.message_count("c1") == 2
    finally:
        other.close()
        await store.aclose()


def size_of(path: Path) -> int:
    return path.stat().st_size


@pytest.mark.anyio
async def test_the_store_checkpoints_the_wal(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's automatic checkpoint is off (it would run on the event loop), so the
    store must copy the WAL into the database file itself, or the file never grows."""
    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_EVERY", 8)
    database = Path(database_path(sqlite_url))
    store = await SQLiteStore.open(sqlite_url)
    try:
        await store.create_conversation(ConversationInfo(id="c1"))
        size_before = size_of(database)
        for turn in range(4):
            reply = Message.assistant(f"{turn}" * 20_000)
            await store.append_turn("c1", Message.user("hi"), reply, expected_count=2 * turn)
        assert size_of(database) == size_before  # all of it in the WAL so far

        for turn in range(4, 8):
            reply = Message.assistant(f"{turn}" * 20_000)
            await store.append_turn("c1", Message.user("hi"), reply, expected_count=2 * turn)
        assert size_of(database) > size_before + 8 * 20_000
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_failed_checkpoint_fails_no_call(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The turn that happens to trigger a checkpoint was committed: a failing checkpoint
    (a full disk, say) is logged, and the turn is acknowledged as it should be."""

    def failing_checkpoint(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(sqlite_module, "_checkpoint", failing_checkpoint)
    store = await SQLiteStore.open(sqlite_url)
    try:
        await store.create_conversation(ConversationInfo(id="c1"))
        count = await store.append_turn(
            "c1", Message.user("hi"), Message.assistant("hello"), expected_count=0
        )
        assert count == 2
        assert [m.content for m in await store.load_messages("c1")] == ["hi", "hello"]
    finally:
        await store.aclose()
    assert "Checkpointing the SQLite database" in caplog.text
    assert "database or disk is full" in caplog.text


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
