"""Conversation stores: in-memory, SQLite and PostgreSQL behind one protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._errors import ConfigError
from ._base import ConversationInfo, SessionRecord, Store, StoreConflict, derive_title
from .memory import MemoryStore

__all__ = [
    "ConversationInfo",
    "MemoryStore",
    "SessionRecord",
    "Store",
    "StoreConflict",
    "derive_title",
    "open_store",
]


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    """Open the store named by ``url`` and apply pending migrations once.

    ``memory:`` keeps everything in this process; ``sqlite:///path/to/chatbot.db``
    creates the file (and its folder) on first use; ``postgresql://…`` connects a
    pool. The store is closed when the block exits.

    Raises:
        ConfigError: the URL's scheme is not one of those.
        StoreError: the database cannot be opened or migrated.
    """
    store: Store
    if url.startswith("memory:"):
        store = MemoryStore()
    elif url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        store = await SQLiteStore.open(url)
    elif url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        store = await PostgresStore.open(url)
    else:
        raise ConfigError(
            "DATABASE_URL must start with postgresql://, sqlite:/// or memory:.",
            variable="DATABASE_URL",
        )
    try:
        yield store
    finally:
        await store.aclose()
