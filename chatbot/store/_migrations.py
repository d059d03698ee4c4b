"""Schema migrations: ordered, named SQL files applied once when a store opens.

Each dialect has a folder of ``NNNN_name.sql`` files under ``chatbot/store/migrations``
(read with :mod:`importlib.resources`, so they ship in the wheel). The version is the
number; a ``schema_migrations`` table records which versions a database has, with
their names and when they were applied.

Opening a store runs :func:`migrate_sqlite` or :func:`migrate_postgres` once. Both
hold the database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory
lock) while they read what is applied and apply the rest, in one transaction: two
processes opening the same database at once apply each migration exactly once, and
a failing migration leaves the database as it was. Running them again is a no-op.

A database that records a version this code does not know was migrated by a newer
release; opening it raises :class:`~chatbot.StoreError` rather than guess.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import attrs

from chatbot._errors import StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Migration",
    "load_migrations",
    "migrate_postgres",
    "migrate_sqlite",
    "plan",
]

Dialect = Literal["sqlite", "postgres"]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Both dialects accept this DDL; SQLite gives "double precision" REAL affinity.
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at double precision NOT NULL
)
"""

# The first key of the two-key advisory lock that serializes migrations ("chtm").
_PG_MIGRATION_LOCK = 0x6368746D


@attrs.frozen
class Migration:
    """One schema change: ``version`` orders it, ``name`` tells people what it does."""

    version: int
    name: str
    sql: str = attrs.field(repr=False)


def load_migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """The dialect's migrations, in version order.

    Raises:
        RuntimeError: the packaged files are misnamed or their versions are not
            1, 2, 3, ... without gaps (a packaging bug, not a user error).
    """
    folder = resources.files("chatbot.store").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise RuntimeError(f"Migration file {entry.name!r} is not named NNNN_name.sql.")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations must be numbered 1, 2, 3...: got {versions}.")
    return tuple(found)


def plan(migrations: Iterable[Migration], applied: Mapping[int, str]) -> tuple[Migration, ...]:
    """The migrations still to apply to a database that has ``applied`` (version → name).

    Raises:
        StoreError: the database has a version these migrations do not know, so a
            newer release created it.
    """
    ordered = sorted(migrations, key=lambda migration: migration.version)
    known = {migration.version for migration in ordered}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise StoreError(
            f"The database schema is at version {max(applied)}, newer than this release "
            f"knows ({max(known, default=0)}): upgrade chatbot."
        )
    return tuple(migration for migration in ordered if migration.version not in applied)


def _sqlite_statements(script: str) -> Iterator[str]:
    """Split a script into statements, so they run inside our own transaction.

    ``executescript`` would commit first, so it cannot be part of one.
    """
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer


def _applied_sqlite(conn: sqlite3.Connection) -> dict[int, str]:
    """The versions a SQLite database records (empty before the first migration)."""
    conn.execute(_CREATE_TABLE)
    rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    return {version: name for version, name in rows}


def migrate_sqlite(
    conn: sqlite3.Connection, migrations: Iterable[Migration] | None = None
) -> tuple[Migration, ...]:
    """Apply pending migrations to an autocommit (``isolation_level=None``) connection.

    Blocking: call it from a worker thread. Returns the migrations it applied.

    Raises:
        StoreError: the schema is newer than this release.
        sqlite3.Error: a migration failed; the transaction was rolled back.
    """
    migrations = load_migrations("sqlite") if migrations is None else migrations
    conn.execute("BEGIN IMMEDIATE")
    try:
        pending = plan(migrations, _applied_sqlite(conn))
        for migration in pending:
            for statement in _sqlite_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return pending


async def migrate_postgres(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], migrations: Iterable[Migration]
) -> tuple[Migration, ...]:
    """Apply pending migrations in one transaction on ``conn`` (autocommit mode).

    ``migrations`` comes from :func:`load_migrations`, which reads files: call it
    off the event loop. Returns the migrations it applied.

    Raises:
        StoreError: the schema is newer than this release.
        psycopg.Error: a migration failed; the transaction was rolled back.
    """
    async with conn.transaction():
        # Held until commit: a second instance starting now waits, then finds
        # everything applied.
        await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_PG_MIGRATION_LOCK,))
        await conn.execute(_CREATE_TABLE)
        cursor = await conn.execute("SELECT version, name FROM schema_migrations")
        applied = {version: name for version, name in await cursor.fetchall()}
        pending = plan(migrations, applied)
        for migration in pending:
            # No parameters, so psycopg sends the whole file as one simple query.
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )
    return pending
