"""Store benchmark: do listing and loading stay flat as the store grows?

Fills a SQLite file and a PostgreSQL schema with conversations (default: up to
100,000 conversations of 10 messages each, i.e. 1,000,000 messages), and at each
size (1k, 10k, 100k conversations) times the two queries a user waits for, through
the real :class:`~chatbot.store.Store` API:

* *list*: one session's conversations, newest first (every session owns 20);
* *load*: one conversation's messages (10 each).

Rows are bulk-loaded (``executemany`` in large transactions for SQLite, ``COPY``
for PostgreSQL) straight into the schema the store's migrations created, so the
fill takes a minute or two rather than hours; the timed calls then go through the
store exactly as the server would. Prints a Markdown table.

    python -m bench.store                        # both backends, default sizes
    python -m bench.store --backends sqlite --sizes 1000,10000
    CHATBOT_TEST_POSTGRES_URL=postgresql://... python -m bench.store

PostgreSQL comes from ``--postgres-url``, else ``CHATBOT_TEST_POSTGRES_URL``, else
the test database ``.ci/run`` creates; the benchmark works in its own schema and
drops it at the end (``--keep`` keeps it, and the SQLite file).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import psycopg
from psycopg import sql

from chatbot.store import Store
from chatbot.store.postgres import PostgresStore, describe
from chatbot.store.sqlite import SQLiteStore

DEFAULT_POSTGRES_URL = "postgresql://chatbot:chatbot@127.0.0.1:5432/chatbot_test"
CONVERSATION_COLUMNS = (
    "id",
    "owner",
    "title",
    "provider",
    "model",
    "system_prompt",
    "created_at",
    "updated_at",
    "message_count",
)
MESSAGE_COLUMNS = (
    "conversation_id",
    "seq",
    "role",
    "content",
    "input_tokens",
    "output_tokens",
    "stopped",
    "created_at",
)
CHUNK = 5_000  # conversations per bulk-load batch

VOCABULARY = (
    "the model answered with a long and careful explanation of how streaming works "
    "between the browser the server and the upstream provider while the user waited "
    "patiently for tokens to arrive one after another across the network"
)
WORDS = VOCABULARY.split()


@attrs.frozen(kw_only=True)
class Shape:
    """What the synthetic data looks like."""

    messages_per_conversation: int
    conversations_per_owner: int
    seed: int = 1


@attrs.frozen(kw_only=True)
class Row:
    backend: str
    conversations: int
    messages: int
    list_p50: float
    list_p99: float
    load_p50: float
    load_p99: float


class Dataset:
    """Deterministic conversations and messages; conversation ``i`` is always the same."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        rng = random.Random(shape.seed)
        self._texts = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(512)
        ]
        self._ids: list[str] = []
        self._rng = rng
        self.base_time = 1_700_000_000.0

    def conversation_id(self, index: int) -> str:
        while len(self._ids) <= index:
            self._ids.append(uuid.UUID(int=self._rng.getrandbits(128), version=4).hex)
        return self._ids[index]

    def owner(self, index: int) -> str:
        return f"session-{index // self.shape.conversations_per_owner:06d}"

    def conversations(self, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        per = self.shape.messages_per_conversation
        for i in range(start, stop):
            created = self.base_time + i
            yield (
                self.conversation_id(i),
                self.owner(i),
                self._texts[i % len(self._texts)][:60],
                "openai",
                "gpt-4o",
                None,
                created,
                created + 0.5,
                per,
            )

    def messages(self, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        texts = self._texts
        for i in range(start, stop):
            conversation_id = self.conversation_id(i)
            created = self.base_time + i
            for seq in range(self.shape.messages_per_conversation):
                user = seq % 2 == 0
                yield (
                    conversation_id,
                    seq,
                    "user" if user else "assistant",
                    texts[(i * 7 + seq) % len(texts)],
                    None if user else 120 + seq,
                    None if user else 40 + seq,
                    False,
                    created + seq * 0.01,
                )


def chunks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    for low in range(start, stop, CHUNK):
        yield low, min(low + CHUNK, stop)


def fill_sqlite(path: str, data: Dataset, start: int, stop: int) -> None:
    conversations = (
        f"INSERT INTO conversations ({', '.join(CONVERSATION_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(CONVERSATION_COLUMNS))})"
    )
    messages = (
        f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})"
    )
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous = OFF")  # the fill is not what we measure
        for low, high in chunks(start, stop):
            conn.execute("BEGIN")
            conn.executemany(conversations, data.conversations(low, high))
            conn.executemany(messages, data.messages(low, high))
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")


def fill_postgres(url: str, data: Dataset, start: int, stop: int) -> None:
    copy_conversations = sql.SQL("COPY conversations ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, CONVERSATION_COLUMNS))
    )
    copy_messages = sql.SQL("COPY messages ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, MESSAGE_COLUMNS))
    )
    with psycopg.connect(url) as conn:
        for low, high in chunks(start, stop):
            with conn.cursor() as cursor:
                with cursor.copy(copy_conversations) as copy:
                    for row in data.conversations(low, high):
                        copy.write_row(row)
                with cursor.copy(copy_messages) as copy:
                    for row in data.messages(low, high):
                        copy.write_row(row)
            conn.commit()
        conn.execute("ANALYZE conversations")
        conn.execute("ANALYZE messages")
        conn.commit()


async def timed(samples: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """p50 and p99 of ``samples`` calls, in milliseconds, after a short warm-up."""
    for i in range(min(50, samples)):
        await call(i)
    durations = []
    for i in range(samples):
        started = time.perf_counter()
        await call(i)
        durations.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(durations, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def measure(
    backend: str,
    store: Store,
    data: Dataset,
    size: int,
    samples: int,
) -> Row:
    rng = random.Random(size)
    owners = [data.owner(rng.randrange(size)) for _ in range(samples + 50)]
    ids = [data.conversation_id(rng.randrange(size)) for _ in range(samples + 50)]
    per_owner = data.shape.conversations_per_owner
    per_conversation = data.shape.messages_per_conversation

    async def list_one(i: int) -> None:
        listed = await store.list_conversations(owners[i])
        assert len(listed) == per_owner, (owners[i], len(listed))

    async def load_one(i: int) -> None:
        loaded = await store.load_messages(ids[i])
        assert len(loaded) == per_conversation, (ids[i], len(loaded))

    list_p50, list_p99 = await timed(samples, list_one)
    load_p50, load_p99 = await timed(samples, load_one)
    return Row(
        backend=backend,
        conversations=size,
        messages=size * per_conversation,
        list_p50=list_p50,
        list_p99=list_p99,
        load_p50=load_p50,
        load_p99=load_p99,
    )


async def run_backend(
    backend: str,
    *,
    fill: Callable[[Dataset, int, int], None],
    open_store: Callable[[], Awaitable[Store]],
    sizes: Sequence[int],
    shape: Shape,
    samples: int,
) -> list[Row]:
    rows: list[Row] = []
    data = Dataset(shape)
    store = await open_store()  # creates the schema through the migrations
    try:
        filled = 0
        for size in sizes:
            started = time.perf_counter()
            await anyio.to_thread.run_sync(fill, data, filled, size)
            elapsed = time.perf_counter() - started
            filled = size
            print(
                f"  {backend}: {size:>9,} conversations loaded in {elapsed:6.1f} s",
                file=sys.stderr,
            )
            rows.append(await measure(backend, store, data, size, samples))
    finally:
        await store.aclose()
    return rows


def markdown(rows: Sequence[Row], shape: Shape, samples: int) -> str:
    lines = [
        f"Each session owns {shape.conversations_per_owner} conversations of "
        f"{shape.messages_per_conversation} messages; {samples} timed calls per cell "
        "(milliseconds, through the Store API). Load average at the end: "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
        + f" on {os.cpu_count()} CPUs.",
        "",
        "| backend | conversations | messages | list p50 | list p99 | load p50 | load p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.backend} | {row.conversations:,} | {row.messages:,} "
            f"| {row.list_p50:.2f} | {row.list_p99:.2f} "
            f"| {row.load_p50:.2f} | {row.load_p99:.2f} |"
        )
    return "\n".join(lines)


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


async def main(args: argparse.Namespace) -> None:
    shape = Shape(
        messages_per_conversation=args.messages_per_conversation,
        conversations_per_owner=args.conversations_per_owner,
    )
    sizes = sorted(int(size) for size in args.sizes.split(","))
    rows: list[Row] = []

    if "sqlite" in args.backends:
        folder = Path(tempfile.mkdtemp(prefix="chatbot-bench-"))
        path = str(folder / "chatbot.db")
        try:
            rows += await run_backend(
                "SQLite",
                fill=lambda data, low, high: fill_sqlite(path, data, low, high),
                open_store=lambda: SQLiteStore.open(f"sqlite:///{path}"),
                sizes=sizes,
                shape=shape,
                samples=args.samples,
            )
        finally:
            if args.keep:
                print(f"  kept {path}", file=sys.stderr)
            else:
                shutil.rmtree(folder, ignore_errors=True)

    if "postgres" in args.backends:
        base = (
            args.postgres_url or os.environ.get("CHATBOT_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
        )
        schema = f"bench_store_{os.getpid()}"
        url = with_search_path(base, schema)
        print(f"  PostgreSQL at {describe(base)}, schema {schema}", file=sys.stderr)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            rows += await run_backend(
                "PostgreSQL",
                fill=lambda data, low, high: fill_postgres(url, data, low, high),
                open_store=lambda: PostgresStore.open(url),
                sizes=sizes,
                shape=shape,
                samples=args.samples,
            )
        finally:
            if args.keep:
                print(f"  kept schema {schema}", file=sys.stderr)
            else:
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    print(markdown(rows, shape, args.samples))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite,postgres"
    )
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="conversation counts to measure at"
    )
    parser.add_argument("--messages-per-conversation", type=int, default=10)
    parser.add_argument("--conversations-per-owner", type=int, default=20)
    parser.add_argument("--samples", type=int, default=500, help="timed calls per measurement")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file and the schema")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse_args(), backend="asyncio")
