"""The store protocol: where conversations, their messages and browser sessions live.

Three backends implement it (``memory``, ``sqlite``, ``postgres``) and one contract
test suite runs against all of them. The invariants every backend keeps:

* a turn's user and assistant messages are committed together by
  :meth:`Store.append_turn`, in one transaction, or not at all;
* ``append_turn`` refuses to write when the stored message count is not the one the
  caller last saw (``expected_count``), so two instances can never interleave turns;
* deleting a conversation deletes its messages;
* API keys are never stored in plain text: sessions carry an already-encrypted
  ``connection`` blob, or none.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs

from .._errors import StoreError
from .._messages import Message

__all__ = [
    "ConversationInfo",
    "SessionRecord",
    "Store",
    "StoreConflict",
    "derive_title",
]

TITLE_LENGTH = 60


def derive_title(first_user_message: str) -> str:
    """A conversation's first title: the start of its first user message, on one line."""
    line = " ".join(first_user_message.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


class StoreConflict(StoreError):
    """Another writer changed the conversation since the caller last read it."""

    code = "store_conflict"


@attrs.frozen(kw_only=True)
class ConversationInfo:
    """A conversation's metadata (not its messages)."""

    id: str
    owner: str | None = None
    title: str = ""
    provider: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    created_at: float = attrs.field(factory=time.time)
    updated_at: float = attrs.field(factory=time.time)
    message_count: int = 0


@attrs.frozen(kw_only=True)
class SessionRecord:
    """A browser session: which conversation is current, and its encrypted connection."""

    id: str
    current_conversation: str | None = None
    connection: bytes | None = attrs.field(default=None, repr=False)
    created_at: float = attrs.field(factory=time.time)
    updated_at: float = attrs.field(factory=time.time)


class Store(Protocol):
    """Persistence for conversations and sessions. Every method may raise StoreError.

    ``shared`` says whether other processes may write the same conversations
    (PostgreSQL): only then must an actor check for changes before each turn.
    """

    shared: bool

    async def create_conversation(self, info: ConversationInfo) -> ConversationInfo:
        """Insert a new conversation and return it as stored (``info`` with no messages),
        so the caller need not read it back. Raises StoreConflict if the id exists."""
        ...

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        """The conversation's metadata with its current ``message_count``, or None."""
        ...

    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationInfo, tuple[Message, ...]] | None:
        """The conversation's metadata and every message, in one call, or None.

        What an actor needs to start, read in one go: one round trip (one worker-thread
        hop for SQLite) instead of two. ``message_count`` is ``len(messages)``.
        """
        ...

    async def list_conversations(
        self, owner: str | None, *, limit: int = 200
    ) -> list[ConversationInfo]:
        """The owner's conversations, most recently updated first."""
        ...

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        """Change the given metadata fields (None leaves a field as it is)."""
        ...

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation and its messages; False if it did not exist."""
        ...

    async def load_messages(self, conversation_id: str) -> tuple[Message, ...]:
        """Every message of the conversation, in order."""
        ...

    async def message_count(self, conversation_id: str) -> int:
        """How many messages the conversation has (0 if it does not exist)."""
        ...

    async def append_turn(
        self,
        conversation_id: str,
        user: Message,
        assistant: Message,
        *,
        expected_count: int,
    ) -> int:
        """Commit one turn atomically and return the new message count.

        Sets the title from ``user`` when the conversation has none yet.

        Raises:
            StoreConflict: the stored count is not ``expected_count``.
            StoreError: the write failed; nothing was written.
        """
        ...

    async def replace_messages(
        self, conversation_id: str, messages: tuple[Message, ...]
    ) -> None:
        """Replace the whole history (reset, import) in one transaction."""
        ...

    def lock_conversation(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """Serialize turns of one conversation across processes (no-op in one process)."""
        ...

    async def get_session(self, session_id: str) -> SessionRecord | None:
        ...

    async def save_session(self, record: SessionRecord) -> None:
        """Insert or update a session."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the store answers (readiness probe)."""
        ...

    async def aclose(self) -> None:
        ...
