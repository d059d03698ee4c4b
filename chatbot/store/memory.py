"""MemoryStore: conversations in this process only; the default when embedding.

It keeps the same invariants as the durable backends (atomic turns, count checks),
so the contract test suite can run against it and code written for it behaves the
same on SQLite or PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import attrs

from .._messages import Message
from ._base import ConversationInfo, SessionRecord, StoreConflict, derive_title

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """A :class:`~chatbot.store.Store` held in dictionaries.

    Safe without locks because every method body runs without an ``await``: on one
    event loop, each call is atomic.
    """

    shared = False  # one process: every write goes through this instance's actors

    def __init__(self) -> None:
        self._conversations: dict[str, ConversationInfo] = {}
        self._messages: dict[str, list[Message]] = {}
        self._sessions: dict[str, SessionRecord] = {}

    async def create_conversation(self, info: ConversationInfo) -> ConversationInfo:
        if info.id in self._conversations:
            raise StoreConflict(f"Conversation {info.id!r} already exists.")
        stored = attrs.evolve(info, message_count=0)
        self._conversations[info.id] = stored
        self._messages[info.id] = []
        return stored

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        info = self._conversations.get(conversation_id)
        if info is None:
            return None
        return attrs.evolve(info, message_count=len(self._messages[conversation_id]))

    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationInfo, tuple[Message, ...]] | None:
        info = self._conversations.get(conversation_id)
        if info is None:
            return None
        messages = tuple(self._messages[conversation_id])
        return attrs.evolve(info, message_count=len(messages)), messages

    async def list_conversations(
        self, owner: str | None, *, limit: int = 200
    ) -> list[ConversationInfo]:
        mine = [
            attrs.evolve(info, message_count=len(self._messages[info.id]))
            for info in self._conversations.values()
            if info.owner == owner
        ]
        mine.sort(key=lambda info: (info.updated_at, info.created_at), reverse=True)
        return mine[:limit]

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        info = self._conversations.get(conversation_id)
        if info is None:
            return
        self._conversations[conversation_id] = attrs.evolve(
            info,
            title=info.title if title is None else title,
            provider=info.provider if provider is None else provider,
            model=info.model if model is None else model,
            system_prompt=info.system_prompt if system_prompt is None else system_prompt,
            updated_at=time.time(),
        )

    async def delete_conversation(self, conversation_id: str) -> bool:
        self._messages.pop(conversation_id, None)
        return self._conversations.pop(conversation_id, None) is not None

    async def load_messages(self, conversation_id: str) -> tuple[Message, ...]:
        return tuple(self._messages.get(conversation_id, ()))

    async def message_count(self, conversation_id: str) -> int:
        return len(self._messages.get(conversation_id, ()))

    async def append_turn(
        self,
        conversation_id: str,
        user: Message,
        assistant: Message,
        *,
        expected_count: int,
    ) -> int:
        info = self._conversations.get(conversation_id)
        if info is None:
            raise StoreConflict(f"Conversation {conversation_id!r} no longer exists.")
        messages = self._messages[conversation_id]
        if len(messages) != expected_count:
            raise StoreConflict(
                f"Conversation {conversation_id!r} changed elsewhere; reload and retry."
            )
        messages.extend((user, assistant))
        self._conversations[conversation_id] = attrs.evolve(
            info,
            title=info.title or derive_title(user.content),
            updated_at=time.time(),
        )
        return len(messages)

    async def replace_messages(
        self, conversation_id: str, messages: tuple[Message, ...]
    ) -> None:
        info = self._conversations.get(conversation_id)
        if info is None:
            raise StoreConflict(f"Conversation {conversation_id!r} no longer exists.")
        self._messages[conversation_id] = list(messages)
        self._conversations[conversation_id] = attrs.evolve(info, updated_at=time.time())

    @asynccontextmanager
    async def lock_conversation(self, conversation_id: str) -> AsyncIterator[None]:
        yield

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return self._sessions.get(session_id)

    async def save_session(self, record: SessionRecord) -> None:
        self._sessions[record.id] = attrs.evolve(record, updated_at=time.time())

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
