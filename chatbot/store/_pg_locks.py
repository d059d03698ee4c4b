"""Per-conversation locks shared by every instance: PostgreSQL advisory locks.

A turn holds its conversation's lock for as long as it runs, upstream call
included, so the lock is a *session-level* advisory lock on a connection set apart
for it (a transaction-level one would keep a transaction open for minutes). The key
is the pair ``(LOCK_CLASS, lock_key(conversation_id))``.

Two things must never happen, whatever cancellation or network failure strikes:
a lock left held by a connection that goes back to the pool, and a lock granted to
a waiter that has already given up. :func:`acquire` waits in shielded slices and
lets cancellation in only between them; :func:`release` and :func:`discard` end
the session when they cannot be sure, since the server drops a closed session's
locks.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
from psycopg import errors

__all__ = ["LOCK_CLASS", "acquire", "configure", "discard", "lock_key", "release"]

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

LOCK_CLASS = 0x63686174
"""First key of every conversation lock ("chat"), so ours never collide with other users'."""

CLEANUP_TIMEOUT = 5.0
"""Seconds a release, a cancel or a close may take before we give up on the session."""

LOCK_SLICE = 0.5
"""Seconds of one shielded wait; the longest a cancellation of a waiter is delayed."""


def lock_key(conversation_id: str) -> int:
    """The second advisory-lock key of a conversation: a stable signed 32-bit hash.

    Every instance computes the same key whatever its Python hash seed. Two ids
    that collide only serialize each other's turns, which is safe.
    """
    digest = hashlib.blake2b(conversation_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def configure(conn: Connection) -> None:
    """Prepare a new lock connection: ``lock_timeout`` bounds each slice of :func:`acquire`."""
    await conn.execute(f"SET lock_timeout = {round(LOCK_SLICE * 1000)}")


async def discard(conn: Connection) -> None:
    """Cancel whatever ``conn`` is running and close it; the server drops its locks."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
        try:
            await conn.cancel_safe(timeout=CLEANUP_TIMEOUT)
        except psycopg.Error:
            pass
        await conn.close()


async def acquire(conn: Connection, key: int) -> None:
    """Wait for the lock ``(LOCK_CLASS, key)`` on a :func:`configure`-d connection.

    The wait runs in shielded slices that ``lock_timeout`` ends server-side, and a
    cancellation is let in only between slices, when the session is idle: so a
    cancelled caller never leaves a lock granted to nobody, nor a wait queued on
    the server. A slice the server does not end in time means the connection is dead.

    Raises:
        psycopg.Error: the server failed.
        TimeoutError: the server stopped answering.
    """
    while True:
        with anyio.fail_after(LOCK_SLICE + CLEANUP_TIMEOUT, shield=True):
            try:
                await conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, key))
                return
            except errors.LockNotAvailable:
                pass
        await anyio.lowlevel.checkpoint()


async def release(conn: Connection, key: int) -> None:
    """Release the lock, even during a cancellation; close the session if that fails."""
    with anyio.CancelScope(shield=True):
        try:
            with anyio.fail_after(CLEANUP_TIMEOUT):
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, key))
        except (psycopg.Error, TimeoutError) as exc:
            logger.warning("Releasing a conversation lock failed (%s); closing its session.", exc)
            await discard(conn)
