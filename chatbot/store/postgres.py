"""PostgresStore: one database shared by several chatbot instances.

psycopg 3 talks to the server through two :class:`psycopg_pool.AsyncConnectionPool`:

* the *query* pool serves every read and write, each write in one transaction;
* the *lock* pool only holds :meth:`PostgresStore.lock_conversation` locks. A lock
  is a session-level advisory lock kept on its own connection for the whole turn
  (the upstream call included), so it must never use up the connections that the
  turn's own ``append_turn`` needs: with one pool, ``max_size`` turns holding locks
  would wait for a connection none of them gives back. ``_pg_locks`` takes and
  releases them safely under cancellation.

Turns of one conversation are serialized across instances twice over: the advisory
lock makes the second instance wait for the first turn to finish, and
``append_turn`` re-checks the message count under ``SELECT ... FOR UPDATE`` so that
a writer that skipped the lock still cannot interleave.

psycopg's async mode runs on asyncio only, so this store needs the asyncio backend
(the web server runs there); :meth:`PostgresStore.open` says so on trio.
Connection URLs may carry libpq parameters such as ``?options=-csearch_path%3Dname``;
they never appear in messages, since they may hold a password.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, final

import anyio
import anyio.to_thread
import attrs
import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from chatbot._errors import ConfigError, StoreError
from chatbot._messages import Message

from . import _pg_locks
from ._base import ConversationInfo, SessionRecord, StoreConflict, derive_title
from ._migrations import load_migrations, migrate_postgres
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

__all__ = ["PostgresStore", "describe"]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
_SELECT_CONVERSATION = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s"
# Two statements rather than "owner IS NOT DISTINCT FROM %s", which no index serves.
_LIST_BY_OWNER = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner = %s "
    "ORDER BY updated_at DESC, created_at DESC LIMIT %s"
)
_LIST_UNOWNED = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner IS NULL "
    "ORDER BY updated_at DESC, created_at DESC LIMIT %s"
)
_UPDATE_METADATA = (
    "UPDATE conversations SET title = coalesce(%s, title), provider = coalesce(%s, provider), "
    "model = coalesce(%s, model), system_prompt = coalesce(%s, system_prompt), "
    "updated_at = %s WHERE id = %s"
)
_LOCK_CONVERSATION_ROW = "SELECT message_count, title FROM conversations WHERE id = %s FOR UPDATE"
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_MESSAGES = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s ORDER BY seq"
_UPSERT_SESSION = (
    f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET current_conversation = excluded.current_conversation, "
    "connection = excluded.connection, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at"
)


def describe(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL, for messages: never the password.

    Raises:
        ConfigError: the URL cannot be parsed (the message does not repeat it).
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        raise ConfigError(
            "DATABASE_URL is not a valid PostgreSQL URL: "
            "use postgresql://user:password@host:5432/dbname.",
            variable="DATABASE_URL",
        ) from None
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


@contextmanager
def _map_errors(action: str) -> Iterator[None]:
    """The one place where psycopg and pool errors become StoreError or StoreConflict."""
    try:
        yield
    except (errors.UniqueViolation, errors.SerializationFailure, errors.DeadlockDetected) as exc:
        raise StoreConflict(f"{action} conflicted with another write; reload and retry.") from exc
    except (psycopg.Error, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"{action} failed: {reason}.") from exc
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. from "\ud800" in JSON
        raise StoreError(f"{action} failed: the text is not valid Unicode.") from exc


def _require_asyncio() -> None:
    """psycopg's async connections need asyncio; fail clearly instead of deep inside it.

    Raises:
        StoreError: the running event loop is not asyncio.
    """
    try:
        import sniffio
    except ImportError:  # without sniffio there is no trio either
        return
    if sniffio.current_async_library() != "asyncio":
        raise StoreError("The PostgreSQL store needs the asyncio event loop.")


@final
class PostgresStore:
    """A :class:`~chatbot.store.Store` in PostgreSQL. Open it with :meth:`open`."""

    shared = True  # several instances may write the same conversations

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        lock_pool: AsyncConnectionPool[Connection],
        where: str,
    ) -> None:
        """Use :meth:`open`; this only wraps two opened pools of a migrated database."""
        self._pool = pool
        self._lock_pool = lock_pool
        self._where = where
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        max_size: int = 10,
        max_locks: int = 32,
        connect_timeout: float = 10.0,
        pool_timeout: float = 10.0,
    ) -> PostgresStore:
        """Connect to ``url``, apply pending migrations and open the pools.

        Args:
            url: ``postgresql://user:password@host:port/dbname[?libpq params]``.
            max_size: connections for queries.
            max_locks: connections for conversation locks, i.e. how many conversations
                of this instance can run a turn at once; one more waits for a free
                connection up to ``pool_timeout``. Both pools open connections only
                as needed, but size them so that every instance's ``max_size +
                max_locks`` fits the server's ``max_connections`` (100 by default).
            connect_timeout: seconds to wait for the first connection.
            pool_timeout: seconds a call waits for a free connection before failing.

        Raises:
            ConfigError: ``url`` is not a PostgreSQL URL.
            StoreError: the server is unreachable or refuses us, a migration failed,
                or the event loop is not asyncio.
        """
        where = describe(url)
        _require_asyncio()
        migrations = await anyio.to_thread.run_sync(load_migrations, "postgres")
        with _map_errors(f"Connecting to PostgreSQL at {where}"):
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
            )
        async with conn:
            with _map_errors(f"Migrating the PostgreSQL database at {where}"):
                await migrate_postgres(conn, migrations)
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            # A connection that died with the server (a restart, a failover) is
            # replaced on checkout instead of failing the next user's request.
            check=AsyncConnectionPool.check_connection,
            open=False,
            name="chatbot",
            timeout=pool_timeout,
        )
        lock_pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=0,
            max_size=max_locks,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            open=False,
            name="chatbot-locks",
            timeout=pool_timeout,
            configure=_pg_locks.configure,
        )
        try:
            with _map_errors(f"Connecting to PostgreSQL at {where}"):
                await pool.open(wait=True, timeout=connect_timeout)
                await lock_pool.open()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await pool.close()
                await lock_pool.close()
            raise
        return cls(pool, lock_pool, where)

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    @asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit mode: each statement is its own transaction."""
        if self._closed:
            raise StoreError("The PostgreSQL store is closed.")
        with _map_errors(action):
            async with self._pool.connection() as conn:
                yield conn

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[Connection]:
        """A pooled connection inside one transaction, committed when the block exits."""
        async with self._connection(action) as conn, conn.transaction():
            yield conn

    async def create_conversation(self, info: ConversationInfo) -> ConversationInfo:
        row = conversation_row(info)
        async with self._connection("Creating a conversation") as conn:
            cursor = await conn.execute(_INSERT_CONVERSATION, row)
            if cursor.rowcount == 0:
                raise StoreConflict(f"Conversation {info.id!r} already exists.")
        return conversation_from_row(row)  # double precision keeps every float as given

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        async with self._connection("Reading a conversation") as conn:
            cursor = await conn.execute(_SELECT_CONVERSATION, (conversation_id,))
            row = await cursor.fetchone()
        return None if row is None else conversation_from_row(row)

    async def list_conversations(
        self, owner: str | None, *, limit: int = 200
    ) -> list[ConversationInfo]:
        async with self._connection("Listing conversations") as conn:
            if owner is None:
                cursor = await conn.execute(_LIST_UNOWNED, (limit,))
            else:
                cursor = await conn.execute(_LIST_BY_OWNER, (owner, limit))
            rows = await cursor.fetchall()
        return [conversation_from_row(row) for row in rows]

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
        async with self._connection("Updating a conversation") as conn:
            await conn.execute(_UPDATE_METADATA, params)

    async def delete_conversation(self, conversation_id: str) -> bool:
        async with self._connection("Deleting a conversation") as conn:
            # One statement is one transaction; ON DELETE CASCADE removes the messages.
            cursor = await conn.execute(
                "DELETE FROM conversations WHERE id = %s", (conversation_id,)
            )
        return cursor.rowcount > 0

    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationInfo, tuple[Message, ...]] | None:
        """The metadata and the messages through one pooled connection.

        ``message_count`` is taken from the messages read, so the two always agree.
        """
        async with self._connection("Loading a conversation") as conn:
            cursor = await conn.execute(_SELECT_CONVERSATION, (conversation_id,))
            row = await cursor.fetchone()
            if row is None:
                return None
            cursor = await conn.execute(_SELECT_MESSAGES, (conversation_id,))
            rows = await cursor.fetchall()
        messages = tuple(message_from_row(m) for m in rows)
        info = attrs.evolve(conversation_from_row(row), message_count=len(messages))
        return info, messages

    async def load_messages(self, conversation_id: str) -> tuple[Message, ...]:
        async with self._connection("Loading messages") as conn:
            cursor = await conn.execute(_SELECT_MESSAGES, (conversation_id,))
            rows = await cursor.fetchall()
        return tuple(message_from_row(row) for row in rows)

    async def message_count(self, conversation_id: str) -> int:
        async with self._connection("Counting messages") as conn:
            cursor = await conn.execute(
                "SELECT message_count FROM conversations WHERE id = %s", (conversation_id,)
            )
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def _lock_row(self, conn: Connection, conversation_id: str) -> tuple[int, str]:
        """Lock the conversation's row until commit; return (message_count, title).

        Raises:
            StoreConflict: it does not exist (any more).
        """
        cursor = await conn.execute(_LOCK_CONVERSATION_ROW, (conversation_id,))
        row = await cursor.fetchone()
        if row is None:
            raise StoreConflict(f"Conversation {conversation_id!r} no longer exists.")
        return int(row[0]), str(row[1])

    async def append_turn(
        self,
        conversation_id: str,
        user: Message,
        assistant: Message,
        *,
        expected_count: int,
    ) -> int:
        """Commit one turn atomically and return the new message count.

        A cancelled call rolls back unless its COMMIT had already been sent; a caller
        that must know the outcome shields the call.

        Raises:
            StoreConflict: the conversation is gone or its count is not ``expected_count``.
            StoreError: the write failed; nothing was written.
        """
        async with self._transaction("Saving the turn") as conn:
            count, title = await self._lock_row(conn, conversation_id)
            if count != expected_count:
                raise StoreConflict(
                    f"Conversation {conversation_id!r} changed elsewhere; reload and retry."
                )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    _INSERT_MESSAGE,
                    [
                        message_row(conversation_id, count, user),
                        message_row(conversation_id, count + 1, assistant),
                    ],
                )
            await conn.execute(
                "UPDATE conversations SET message_count = %s, title = %s, updated_at = %s "
                "WHERE id = %s",
                (count + 2, title or derive_title(user.content), time.time(), conversation_id),
            )
        return count + 2

    async def replace_messages(self, conversation_id: str, messages: tuple[Message, ...]) -> None:
        """Replace the whole history in one transaction.

        Raises:
            StoreConflict: the conversation does not exist.
            StoreError: the write failed; the old history is intact.
        """
        async with self._transaction("Replacing messages") as conn:
            await self._lock_row(conn, conversation_id)
            await conn.execute(
                "DELETE FROM messages WHERE conversation_id = %s", (conversation_id,)
            )
            if messages:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        _INSERT_MESSAGE,
                        [message_row(conversation_id, seq, m) for seq, m in enumerate(messages)],
                    )
            await conn.execute(
                "UPDATE conversations SET message_count = %s, updated_at = %s WHERE id = %s",
                (len(messages), time.time(), conversation_id),
            )

    @asynccontextmanager
    async def lock_conversation(self, conversation_id: str) -> AsyncIterator[None]:
        """Hold the conversation's advisory lock for the block, across all instances.

        The lock lives on a connection of the lock pool, taken for the block. It is
        released when the block exits, however it exits; if releasing fails, the
        connection is closed, which releases it on the server. Waiting for it can be
        cancelled (a ``fail_after`` around the block works); the cancellation takes
        effect within half a second and leaves nothing held or queued.

        Raises:
            StoreError: no lock connection is free within the pool timeout, or the
                server failed while we waited for the lock.
        """
        if self._closed:
            raise StoreError("The PostgreSQL store is closed.")
        key = _pg_locks.lock_key(conversation_id)
        async with AsyncExitStack() as stack:
            with _map_errors("Locking the conversation"):
                conn = await stack.enter_async_context(self._lock_pool.connection())
                try:
                    await _pg_locks.acquire(conn, key)
                except (psycopg.Error, TimeoutError) as exc:
                    # Whatever state the session is in, ending it ends its locks.
                    await _pg_locks.discard(conn)
                    if isinstance(exc, TimeoutError):
                        raise StoreError(
                            f"PostgreSQL at {self._where} stopped answering while locking "
                            "the conversation."
                        ) from exc
                    raise
            try:
                yield
            finally:
                await _pg_locks.release(conn, key)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self._connection("Reading a session") as conn:
            cursor = await conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = %s", (session_id,)
            )
            row = await cursor.fetchone()
        return None if row is None else session_from_row(row)

    async def save_session(self, record: SessionRecord) -> None:
        async with self._connection("Saving a session") as conn:
            await conn.execute(_UPSERT_SESSION, session_row(record, updated_at=time.time()))

    async def ping(self) -> None:
        async with self._connection("Checking PostgreSQL") as conn:
            await conn.execute("SELECT 1")

    async def aclose(self) -> None:
        """Close both pools; calls still running finish first. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._lock_pool.close()
            await self._pool.close()
