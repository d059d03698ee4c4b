"""The server's memory policy: one full collection once a busy spell is over, and idle
browser sessions leaving the cache."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import anyio
import pytest

from chatbot import Limits, ProviderConfig, Supervisor
from chatbot._housekeeping import (
    YOUNG_GENERATION_SIZE,
    collect_when_quiet,
    forget_idle_sessions,
    release_memory,
    settle_garbage_collector,
)
from chatbot._supervisor import SupervisorStatistics
from chatbot.store import MemoryStore
from chatbot.store.sqlite import SQLiteStore
from chatbot.webapp.security import BaseUrlPolicy
from chatbot.webapp.sessions import SessionManager
from tests._environment import make_run_allocator_env
from tests.fakes.scripted import ScriptedProvider

pytestmark = pytest.mark.anyio


class _Counters:
    """Stands in for the supervisor's statistics and for ``gc.collect``."""

    def __init__(self, spawned: int) -> None:
        self.spawned = spawned
        self.evicted = 0
        self.turns_started = 0
        self.turns_open = 0
        self.collections: list[tuple[int, int]] = []
        self.looks = 0

    async def looked(self, times: int = 3) -> None:
        """Return once the task has looked at the counters ``times`` more times."""
        target = self.looks + times
        with anyio.fail_after(5):
            while self.looks < target:
                await anyio.sleep(0.002)

    def statistics(self) -> SupervisorStatistics:
        self.looks += 1
        return SupervisorStatistics(
            live_actors=self.spawned - self.evicted, inbox_depth=0, spawned=self.spawned,
            evicted=self.evicted, restarts=0, running=True,
            turns_started=self.turns_started, turns_open=self.turns_open,
        )

    async def collect(self) -> int:
        self.collections.append((self.spawned, self.evicted))
        return 0


async def test_collects_once_per_spell_when_the_counters_stop_moving() -> None:
    counters = _Counters(spawned=10)  # what happened before the task started does not count

    async def look(*, spawned: int = 0, evicted: int = 0) -> None:
        counters.spawned += spawned
        counters.evicted += evicted
        await counters.looked()  # one sees the change, the next ones see nothing move

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: collect_when_quiet(
            counters.statistics, every=0.02, actors=5, collect=counters.collect
        ))
        await look()  # the task reads the starting counts
        await look(spawned=4)
        assert counters.collections == []  # a spell of 4 is not worth a collection
        await look(evicted=1)
        assert counters.collections == [(14, 1)]  # 5 came and went, then nothing moved
        await look()
        assert counters.collections == [(14, 1)]  # one collection per spell
        for _ in range(20):  # steady churn: the counters move at every look
            counters.spawned += 1
            await counters.looked(1)
        assert counters.collections == [(14, 1)]
        await look()
        assert counters.collections == [(14, 1), (34, 1)]
        tg.cancel_scope.cancel()


async def test_waits_while_a_turn_is_open_or_turns_keep_starting() -> None:
    counters = _Counters(spawned=0)

    async def look(**changes: int) -> None:
        for name, value in changes.items():
            setattr(counters, name, getattr(counters, name) + value)
        await counters.looked()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: collect_when_quiet(
            counters.statistics, every=0.02, actors=5, collect=counters.collect
        ))
        await look()
        await look(spawned=10, turns_started=10, turns_open=1)
        assert counters.collections == []  # a reply is still streaming
        for _ in range(20):  # turns come and go between two looks
            counters.turns_open -= 1
            counters.turns_started += 1
            await counters.looked(1)
            counters.turns_open += 1
            await counters.looked(1)
        assert counters.collections == []
        await look(turns_open=-1)
        assert counters.collections == [(10, 0)]
        tg.cancel_scope.cancel()


async def test_collects_again_once_the_spells_idle_connections_have_closed() -> None:
    counters = _Counters(spawned=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: collect_when_quiet(
            counters.statistics, every=0.01, actors=5, again_after=0.3, collect=counters.collect
        ))
        await anyio.sleep(0.05)
        counters.spawned += 10
        with anyio.fail_after(5):
            while not counters.collections:
                await anyio.sleep(0.01)
        spell_collected = anyio.current_time()
        counters.turns_open = 1  # a turn is streaming when the time comes: no collection
        await anyio.sleep(0.4)
        assert counters.collections == [(10, 0)]
        counters.turns_open = 0
        with anyio.fail_after(5):
            while len(counters.collections) < 2:
                await anyio.sleep(0.01)
        assert anyio.current_time() - spell_collected >= 0.3
        await anyio.sleep(0.5)
        assert counters.collections == [(10, 0), (10, 0)]  # once per spell, not every 0.3 s
        tg.cancel_scope.cancel()


async def test_a_real_supervisors_spell_of_turns_and_evictions_ends_in_a_collection() -> None:
    provider = ScriptedProvider()
    collections: list[int] = []
    config = ProviderConfig(provider="openai", model="gpt-test", api_key="sk-test")
    limits = Limits(idle_evict_after=0.02)
    async with (
        Supervisor(provider_factory=provider.factory, default_config=config, limits=limits) as sup,
        anyio.create_task_group() as tg,
    ):
        async def collect() -> int:
            collections.append(sup.statistics().evicted)
            return 0

        tg.start_soon(lambda: collect_when_quiet(sup.statistics, every=0.05, actors=6, collect=collect))
        for i in range(3):
            await sup.chat(f"c{i}", "hello")
        with anyio.fail_after(5):
            while not collections:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert collections[0] == 3  # three spawns and three evictions, then quiet


async def test_idle_browser_sessions_are_forgotten_while_the_server_runs() -> None:
    sessions = SessionManager(MemoryStore(), cipher=None, base_urls=BaseUrlPolicy(None))
    sessions._new()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: forget_idle_sessions(sessions, 0.05, every=0.01))
        with anyio.fail_after(5):
            while len(sessions):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only a full collection frees it


async def test_release_memory_collects_cycles_even_when_the_store_cannot_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'chatbot.db'}")
    await store.aclose()  # its cache cannot be released now
    node = _Node()
    gone = weakref.ref(node)
    del node
    gc.disable()  # no automatic collection can get there first
    try:
        with caplog.at_level(logging.WARNING, logger="chatbot.server"):
            freed = await release_memory(store)
    finally:
        gc.enable()
    assert gone() is None and freed >= 2  # the node and its __dict__
    assert "could not release SQLite's page cache: The SQLite store is closed." in caplog.text


def test_release_memory_flushes_jemallocs_thread_cache() -> None:
    """Run where ``make run`` runs the server: on jemalloc, when it is installed."""
    allocator = make_run_allocator_env()
    script = textwrap.dedent("""
        import ctypes
        import anyio
        from chatbot._housekeeping import release_memory
        from chatbot.store import MemoryStore

        mallctl = ctypes.CDLL(None).mallctl
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]

        def cached_bytes() -> int:
            epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
            assert mallctl(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), 8) == 0
            value, size = ctypes.c_size_t(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
            assert mallctl(b"stats.arenas.4096.tcache_bytes", ctypes.byref(value), ctypes.byref(size), None, 0) == 0
            return value.value

        async def main() -> None:
            garbage = [(str(i), [i] * (i % 40)) for i in range(100_000)]
            del garbage  # freed blocks of many sizes, cached by this thread
            before = cached_bytes()
            await release_memory(MemoryStore())
            print(before, cached_bytes())

        anyio.run(main)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **allocator},
        capture_output=True, text=True, timeout=60, check=True,
    )
    before, after = map(int, result.stdout.split())
    assert before > 20_000 and after < before / 4, (before, after)


def test_settling_freezes_the_start_up_heap_and_widens_the_young_generation() -> None:
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 1000  # modules, classes, functions
        assert gc.get_threshold() == (YOUNG_GENERATION_SIZE, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
