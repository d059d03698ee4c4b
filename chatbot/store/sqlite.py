"""SQLiteStore: one database file, the default store of ``chatbot web`` and ``chatbot cli``.

The standard library's :mod:`sqlite3` blocks. The store owns one connection and a
``CapacityLimiter(1)``: calls run one at a time, in order, and a call that has
started always finishes (a cancelled caller gets its cancellation after it returns),
so a transaction is never left half done. It works the same on asyncio and trio.

Where calls run:

* **Quick calls** touch a handful of rows: a turn's two messages, a session, one
  conversation's metadata. They take tens of microseconds, less than the round trip to
  a worker thread (about 100 µs of CPU, and more under load, when the thread waits for
  the GIL). They run on the event loop, in their turn, with SQLite's busy wait off,
  so they never wait for a lock there: if another process (the CLI next
  to the server) holds the write lock, the call goes to the worker thread and waits
  for it there. A turn whose messages exceed ``_QUICK_TEXT_LIMIT`` goes to the thread too.
* **Everything else** (loading a whole history, listing, deleting, replacing) runs on a
  worker thread through :func:`anyio.to_thread.run_sync`.
* **Checkpoints** never run on the event loop: SQLite's automatic checkpoint (which
  copies the WAL into the database file and syncs it, in whichever call's commit
  crosses the threshold) is off, and the store checkpoints on the worker thread every
  ``_CHECKPOINT_EVERY`` calls instead.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A commit has
reached the WAL file (in the OS page cache) before the call returns, so every
acknowledged turn survives the process being killed, ``kill -9`` included. Only
a power loss or an OS crash can lose the last commits; that is out of scope, and
``PRAGMA synchronous=FULL`` would be the knob if it ever is not.

Other processes may open the same file (the CLI next to the web server): writes
take SQLite's write lock (``BEGIN IMMEDIATE``, or a single statement) and wait up to
five seconds for it, and :meth:`SQLiteStore.append_turn`'s count check keeps their turns apart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar, final

import anyio
import anyio.to_thread

from chatbot._errors import ConfigError, StoreError
from chatbot._messages import Message

from ._base import ConversationInfo, SessionRecord, StoreConflict, derive_title
from ._migrations import migrate_sqlite
from ._rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    conversation_from_row,
    conversation_row,
    message_from_row,
    message_row,
    session_from_row,
    session_row,
)

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_URL_PREFIX = "sqlite:///"
_BUSY_TIMEOUT = 5.0
_BUSY_TIMEOUT_PRAGMA = f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT * 1000)}"

# A turn with more text than this (in characters) is written on the worker thread:
# copying megabytes into the WAL would hold up every other session on the event loop.
_QUICK_TEXT_LIMIT = 64 * 1024

# Calls between two checkpoints. A turn appends about four pages to the WAL, so the WAL
# stays near SQLite's own threshold (1,000 pages).
_CHECKPOINT_EVERY = 256

_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO NOTHING"
)
_SELECT_CONVERSATION = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?"
_LIST_BY_OWNER = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner = ? "
    "ORDER BY updated_at DESC, created_at DESC LIMIT ?"
)
_LIST_UNOWNED = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner IS NULL "
    "ORDER BY updated_at DESC, created_at DESC LIMIT ?"
)
_UPDATE_METADATA = (
    "UPDATE conversations SET title = coalesce(?, title), provider = coalesce(?, provider), "
    "model = coalesce(?, model), system_prompt = coalesce(?, system_prompt), updated_at = ? "
    "WHERE id = ?"
)
_INSERT_MESSAGE = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_MESSAGES = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq"
_UPSERT_SESSION = (
    f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET current_conversation = excluded.current_conversation, "
    "connection = excluded.connection, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at"
)


def database_path(url: str) -> str:
    """The file a ``sqlite:///…`` URL names (``:memory:`` for a private in-memory one).

    ``sqlite:///data/chatbot.db`` is relative to the working directory and
    ``sqlite:////var/lib/chatbot/chatbot.db`` is absolute.

    Raises:
        ConfigError: the URL is not of that form.
    """
    path = url[len(_URL_PREFIX) :] if url.startswith(_URL_PREFIX) else ""
    if not path or "?" in path:
        raise ConfigError(
            "A SQLite DATABASE_URL looks like sqlite:///data/chatbot.db (relative) "
            "or sqlite:////var/lib/chatbot/chatbot.db (absolute).",
            variable="DATABASE_URL",
        )
    return path


@contextmanager
def _map_errors(action: str) -> Iterator[None]:
    """The one place where sqlite3 and file-system errors become StoreError."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorname in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"):
            raise StoreConflict(
                f"{action} conflicted with another write; reload and retry."
            ) from exc
        raise StoreError(f"{action} failed: {exc}.") from exc
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{action} failed: {exc}.") from exc
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. from "\ud800" in JSON
        raise StoreError(f"{action} failed: the text is not valid Unicode.") from exc


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the database's write lock from its start.

    ``BEGIN IMMEDIATE`` (not a deferred ``BEGIN``) means the checks made inside
    cannot go stale before the writes that depend on them.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def _read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: its statements see one snapshot, even while another
    process (the CLI next to the server) commits between them."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _connect(path: str) -> sqlite3.Connection:
    """Open (creating if needed) the database, configure it and migrate it. Blocking."""
    if path != ":memory:":
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        # Conversations are private: create the file readable by its owner only.
        # SQLite gives the -wal and -shm files the same permissions.
        os.close(os.open(file, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the store checkpoints (see above)
        migrate_sqlite(conn)
        conn.execute("PRAGMA busy_timeout = 0")  # quick calls never wait (see _patiently)
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.execute(_BUSY_TIMEOUT_PRAGMA)
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Copy what the WAL holds into the database file, as far as readers allow (a passive
    checkpoint waits for no lock). Blocking."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class _LockHeld(Exception):
    """Another connection holds the write lock: this call must wait, off the event loop."""


def _without_waiting(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` now (the connection's busy timeout is 0), failing with
    :class:`_LockHeld` instead of waiting for a lock.

    ``work`` starts its writes by taking the write lock (``BEGIN IMMEDIATE`` or a
    single statement), so when it cannot, nothing was written and it can run again.
    """
    try:
        return work(conn)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            raise _LockHeld from exc
        raise


def _patiently(work: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``work``, waiting up to ``_BUSY_TIMEOUT`` for another process's lock (on the thread).

    The connection's own busy timeout stays 0, so the calls on the event loop pay
    nothing for this.
    """

    def patient_work(conn: sqlite3.Connection) -> T:
        conn.execute(_BUSY_TIMEOUT_PRAGMA)
        try:
            return work(conn)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    return patient_work


def _require_conversation(conn: sqlite3.Connection, conversation_id: str) -> tuple[int, str]:
    """The conversation's (message_count, title), inside a write transaction.

    Raises:
        StoreConflict: it does not exist (any more).
    """
    row = conn.execute(
        "SELECT message_count, title FROM conversations WHERE id = ?", (conversation_id,)
    ).fetchone()
    if row is None:
        raise StoreConflict(f"Conversation {conversation_id!r} no longer exists.")
    return int(row[0]), str(row[1])


@final
class SQLiteStore:
    """A :class:`~chatbot.store.Store` in one SQLite file. Open it with :meth:`open`."""

    shared = False  # one process: every write goes through this instance's actors

    def __init__(self, conn: sqlite3.Connection, path: str, limiter: anyio.CapacityLimiter) -> None:
        """Use :meth:`open`; this only wraps an already migrated connection."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._limiter = limiter
        self._calls_since_checkpoint = 0

    @classmethod
    async def open(cls, url: str) -> SQLiteStore:
        """Open the database ``url`` names, creating the file and its folder on first use,
        and apply pending migrations.

        Raises:
            ConfigError: ``url`` is not ``sqlite:///path``.
            StoreError: the file cannot be created or opened, or a migration failed.
        """
        path = database_path(url)
        limiter = anyio.CapacityLimiter(1)
        with _map_errors(f"Opening the SQLite database {path}"):
            conn = await anyio.to_thread.run_sync(_connect, path, limiter=limiter)
        return cls(conn, path, limiter)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    async def _call(
        self, action: str, work: Callable[[sqlite3.Connection], T], *, quick: bool = False
    ) -> T:
        """Run ``work`` with the connection: on the event loop when ``quick`` (see the
        module's docstring), else on the worker thread; one call at a time, in order.

        Raises:
            StoreConflict: ``work`` raised it, or a uniqueness constraint failed.
            StoreError: the store is closed or SQLite failed.
        """
        conn = self._conn
        if conn is None:
            raise StoreError("The SQLite store is closed.")
        self._calls_since_checkpoint += 1
        with _map_errors(action):
            if quick:
                result = await self._run_here(conn, work)
            else:
                result = await self._run_on_thread(conn, work)
        if self._calls_since_checkpoint >= _CHECKPOINT_EVERY:
            await self._checkpoint(conn)
        return result

    async def _run_here(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the event loop in its turn; on the thread if a lock is held elsewhere.

        It waits for a call on the thread to finish rather than joining the thread's
        queue: under load that queue would otherwise keep every later call there.
        """
        if self._limiter.available_tokens:
            self._limiter.acquire_nowait()  # acquire() would also yield to the loop
        else:
            await self._limiter.acquire()
        try:
            return _without_waiting(conn, work)
        except _LockHeld:
            pass  # another process is writing: wait for its lock on the thread
        finally:
            self._limiter.release()
        return await self._run_on_thread(conn, work)

    async def _run_on_thread(
        self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]
    ) -> T:
        return await anyio.to_thread.run_sync(_patiently(work), conn, limiter=self._limiter)

    async def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Checkpoint after a call that succeeded; a failure must not fail that call.

        The WAL only grows until the next checkpoint, so the failure is logged, not raised.
        """
        self._calls_since_checkpoint = 0
        try:
            await anyio.to_thread.run_sync(_checkpoint, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            logger.warning("Checkpointing the SQLite database %s failed: %s", self._path, exc)

    async def create_conversation(self, info: ConversationInfo) -> ConversationInfo:
        row = conversation_row(info)

        def work(conn: sqlite3.Connection) -> None:
            if conn.execute(_INSERT_CONVERSATION, row).rowcount == 0:
                raise StoreConflict(f"Conversation {info.id!r} already exists.")

        await self._call("Creating a conversation", work, quick=True)
        return conversation_from_row(row)  # REAL columns keep every float as given

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        def work(conn: sqlite3.Connection) -> ConversationInfo | None:
            row = conn.execute(_SELECT_CONVERSATION, (conversation_id,)).fetchone()
            return None if row is None else conversation_from_row(row)

        return await self._call("Reading a conversation", work, quick=True)

    async def list_conversations(
        self, owner: str | None, *, limit: int = 200
    ) -> list[ConversationInfo]:
        def work(conn: sqlite3.Connection) -> list[ConversationInfo]:
            if owner is None:
                rows = conn.execute(_LIST_UNOWNED, (limit,)).fetchall()
            else:
                rows = conn.execute(_LIST_BY_OWNER, (owner, limit)).fetchall()
            return [conversation_from_row(row) for row in rows]

        return await self._call("Listing conversations", work)

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        params = (title, provider, model, system_prompt, time.time(), conversation_id)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(_UPDATE_METADATA, params)

        await self._call("Updating a conversation", work, quick=True)

    async def delete_conversation(self, conversation_id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            # One statement is one transaction; ON DELETE CASCADE removes the messages.
            cursor = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return cursor.rowcount > 0

        return await self._call("Deleting a conversation", work)

    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationInfo, tuple[Message, ...]] | None:
        """The metadata and the messages from one read transaction, in one thread hop."""

        def work(conn: sqlite3.Connection) -> tuple[ConversationInfo, tuple[Message, ...]] | None:
            with _read_snapshot(conn):
                row = conn.execute(_SELECT_CONVERSATION, (conversation_id,)).fetchone()
                if row is None:
                    return None
                rows = conn.execute(_SELECT_MESSAGES, (conversation_id,)).fetchall()
            return conversation_from_row(row), tuple(message_from_row(m) for m in rows)

        return await self._call("Loading a conversation", work)

    async def load_messages(self, conversation_id: str) -> tuple[Message, ...]:
        def work(conn: sqlite3.Connection) -> tuple[Message, ...]:
            rows = conn.execute(_SELECT_MESSAGES, (conversation_id,)).fetchall()
            return tuple(message_from_row(row) for row in rows)

        return await self._call("Loading messages", work)

    async def message_count(self, conversation_id: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT message_count FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._call("Counting messages", work, quick=True)

    async def append_turn(
        self,
        conversation_id: str,
        user: Message,
        assistant: Message,
        *,
        expected_count: int,
    ) -> int:
        """Commit one turn atomically and return the new message count.

        Raises:
            StoreConflict: the conversation is gone or its count is not ``expected_count``.
            StoreError: the write failed; nothing was written.
        """

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                count, title = _require_conversation(conn, conversation_id)
                if count != expected_count:
                    raise StoreConflict(
                        f"Conversation {conversation_id!r} changed elsewhere; reload and retry."
                    )
                conn.executemany(
                    _INSERT_MESSAGE,
                    (
                        message_row(conversation_id, count, user),
                        message_row(conversation_id, count + 1, assistant),
                    ),
                )
                conn.execute(
                    "UPDATE conversations SET message_count = ?, title = ?, updated_at = ? "
                    "WHERE id = ?",
                    (count + 2, title or derive_title(user.content), time.time(), conversation_id),
                )
            return count + 2

        quick = len(user.content) + len(assistant.content) <= _QUICK_TEXT_LIMIT
        return await self._call("Saving the turn", work, quick=quick)

    async def replace_messages(self, conversation_id: str, messages: tuple[Message, ...]) -> None:
        """Replace the whole history in one transaction.

        Raises:
            StoreConflict: the conversation does not exist.
            StoreError: the write failed; the old history is intact.
        """

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                _require_conversation(conn, conversation_id)
                conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
                conn.executemany(
                    _INSERT_MESSAGE,
                    (message_row(conversation_id, seq, m) for seq, m in enumerate(messages)),
                )
                conn.execute(
                    "UPDATE conversations SET message_count = ?, updated_at = ? WHERE id = ?",
                    (len(messages), time.time(), conversation_id),
                )

        await self._call("Replacing messages", work)

    @asynccontextmanager
    async def lock_conversation(self, conversation_id: str) -> AsyncIterator[None]:
        """No lock: one process serializes its turns itself, and ``append_turn``'s
        count check refuses a turn another process committed first."""
        yield

    async def get_session(self, session_id: str) -> SessionRecord | None:
        def work(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            return None if row is None else session_from_row(row)

        return await self._call("Reading a session", work, quick=True)

    async def save_session(self, record: SessionRecord) -> None:
        row = session_row(record, updated_at=time.time())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT_SESSION, row)

        await self._call("Saving a session", work, quick=True)

    async def ping(self) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1").fetchone()

        await self._call("Checking the SQLite store", work, quick=True)

    async def release_memory(self) -> None:
        """Hand back the memory of SQLite's page cache (up to 2 MiB).

        A busy spell fills the cache with pages of conversations that have since gone
        idle. Emptied, it fills again from the operating system's file cache as pages
        are read, without touching the disk. The server calls this once a spell is over.
        """

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA shrink_memory")

        await self._call("Releasing SQLite's page cache", work, quick=True)

    async def aclose(self) -> None:
        """Close the connection after the calls already queued. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with anyio.CancelScope(shield=True), _map_errors("Closing the SQLite store"):
            await anyio.to_thread.run_sync(_close, conn, limiter=self._limiter)
