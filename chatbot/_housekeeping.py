"""Memory policy for the long-running web server process.

Three things keep the server's memory honest:

* Everything imported at start-up is frozen (:func:`settle_garbage_collector`), so full
  collections do not walk modules, classes and functions again and again, and the
  young generation is large enough that a request's objects seldom outlive it.
* Memory is released once a busy spell is over (:func:`collect_when_quiet`,
  :func:`release_memory`). The spell leaves its connections, requests and upstream
  responses behind as reference cycles; once traffic stops nothing allocates, so
  CPython's own thresholds would keep that garbage (a quarter of the heap after a
  500-session burst) until the next one. SQLite's page cache, full of conversations
  that have gone idle, is emptied too. A second release follows once the spell's idle
  upstream connections have closed: they leave garbage of their own, and refill the
  interpreter's free lists, which only a full collection empties.
* Browser sessions unseen for as long as an actor may idle leave the session cache
  (:func:`forget_idle_sessions`), as their actors leave the supervisor.

All three are the server's choice: an application embedding the
:class:`~chatbot.Supervisor` keeps its own collector policy and its own caches.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import anyio

from chatbot._errors import StoreError
from chatbot._supervisor import SupervisorStatistics
from chatbot.store import Store
from chatbot.store.sqlite import SQLiteStore

__all__ = ["collect_when_quiet", "forget_idle_sessions", "release_memory", "settle_garbage_collector"]

logger = logging.getLogger("chatbot.server")

# How often the supervisor's counters are read, and how many actors spawned or evicted
# since the last collection make a spell worth collecting after. With the start-up heap
# frozen, a full collection of an idle server takes a few milliseconds (20-40 ms just
# after a 64-session spell, on a 2-core machine).
CHECK_EVERY_SECONDS = 1.0
ACTORS_PER_COLLECTION = 64

# Net allocations of container objects between two young collections (CPython: 700).
YOUNG_GENERATION_SIZE = 10_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off what lives long, and out of each request.

    Modules, classes and functions live as long as the process, yet every full
    collection walked them again: under load that was about a twentieth of the
    server's CPU, in pauses of tens of milliseconds. Frozen, they are skipped.

    CPython collects its young generation after 700 net allocations, which is every few
    requests here: each collection then finds the objects of the requests in flight
    alive, moves them to an older generation, and a full collection (which walks every
    live actor and browser session) follows after every hundred young ones. With new
    conversations arriving at 16 sessions, the collector took about 300 µs per turn, in
    full collections of about 110 ms each with 4,000 idle actors. With a young
    generation of :data:`YOUNG_GENERATION_SIZE`, most request objects are freed by
    their reference counts before a collection looks at them: about 110 µs per turn
    there, and 14 µs instead of 45 µs per turn for ongoing conversations. Cyclic
    garbage waits a little longer, and the collection after a spell still clears it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_SIZE, *gc.get_threshold()[1:])


def _jemalloc_tcache_flush() -> Callable[[], int] | None:
    """jemalloc's ``thread.tcache.flush``, when jemalloc is this process's allocator.

    jemalloc keeps a cache of freed blocks per thread, which it trims only as the thread
    goes on allocating. After a spell each cached block keeps a page of the spell's
    alive; flushed, the blocks go back to their pages, and empty pages to the system.
    """
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (AttributeError, OSError, TypeError):  # not jemalloc, or no such lookup here
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    return partial(mallctl, b"thread.tcache.flush", None, None, None, 0)


_flush_allocator_cache = _jemalloc_tcache_flush()


async def collect_garbage() -> int:
    """A full collection; returns how many objects it freed."""
    return gc.collect()


async def release_memory(store: Store) -> int:
    """Hand back what a busy spell leaves; returns how many objects the collection freed.

    In order: SQLite's page cache, the garbage (a full collection, which also empties
    the interpreter's free lists), then jemalloc's cache of freed blocks for the event
    loop's thread (this must run on that thread). A store that cannot release its
    cache now only logs why: the rest does not depend on it.
    """
    if isinstance(store, SQLiteStore):
        try:
            await store.release_memory()
        except StoreError as exc:
            logger.warning("could not release SQLite's page cache: %s", exc)
    freed = gc.collect()
    if _flush_allocator_cache is not None:
        _flush_allocator_cache()
    return freed


async def collect_when_quiet(
    statistics: Callable[[], SupervisorStatistics],
    *,
    every: float = CHECK_EVERY_SECONDS,
    actors: int = ACTORS_PER_COLLECTION,
    again_after: float | None = None,
    collect: Callable[[], Awaitable[int]] = collect_garbage,
) -> None:
    """Run ``collect`` once a busy spell is over; runs until cancelled.

    A spell counts once ``actors`` actors were spawned or evicted since the last
    collection. It is over when a look at the counters finds no turn open, and no actor
    and no turn started or gone since the previous look: a collection then pauses
    nobody's reply. Under steady traffic nothing runs here, and CPython's own
    thresholds look after the garbage.

    Args:
        statistics: the supervisor's :meth:`~chatbot.Supervisor.statistics`.
        every: seconds between two looks at the counters.
        actors: spawns and evictions since the last collection that make a spell.
        again_after: if given, collect once more at the first quiet look this many
            seconds after a spell's collection: by then the HTTP client has closed the
            upstream connections the spell left idle.
        collect: the full collection, or what releases more memory besides
            (:func:`release_memory`); returns how many objects it freed.
    """

    def look() -> tuple[int, int, bool]:
        counts = statistics()
        actors_moved = counts.spawned + counts.evicted
        return actors_moved, actors_moved + counts.turns_started, counts.turns_open == 0

    async def collect_and_log(why: str) -> None:
        began = time.perf_counter()
        freed = await collect()
        logger.debug(
            "full garbage collection %s: %d objects freed in %.1f ms",
            why, freed, (time.perf_counter() - began) * 1000,
        )

    collected_at, previous, _ = look()
    again_at: float | None = None
    while True:
        await anyio.sleep(every)
        actors_moved, activity, no_turn_open = look()
        quiet, previous = no_turn_open and activity == previous, activity
        if not quiet:
            continue
        if actors_moved - collected_at >= actors:
            await collect_and_log(f"after {actors_moved - collected_at} actors came and went")
            collected_at = actors_moved
            if again_after is not None:
                again_at = anyio.current_time() + again_after
        elif again_at is not None and anyio.current_time() >= again_at:
            await collect_and_log("once the spell's idle upstream connections had closed")
            again_at = None


class IdleForgetting(Protocol):
    """What :func:`forget_idle_sessions` needs of ``chatbot.webapp.sessions.SessionManager``."""

    def forget_idle(self, idle_seconds: float) -> int: ...


async def forget_idle_sessions(
    sessions: IdleForgetting, idle_seconds: float, *, every: float | None = None
) -> None:
    """Drop the cached browser sessions unseen for ``idle_seconds``; runs until cancelled.

    Args:
        every: seconds between two looks; by default a quarter of ``idle_seconds``
            (but at least a second and at most a minute), so a session goes at most
            that late.
    """
    if every is None:
        every = min(60.0, max(1.0, idle_seconds / 4))
    while True:
        await anyio.sleep(every)
        forgotten = sessions.forget_idle(idle_seconds)
        if forgotten:
            logger.debug("forgot %d browser session(s) idle for %g s", forgotten, idle_seconds)
