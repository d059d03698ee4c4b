"""Rows ↔ domain values, shared by the SQLite and PostgreSQL stores.

Both schemas have the same columns, so the column lists below are the single
source of their order: every ``SELECT`` names one of them and every row goes
through the matching ``*_from_row`` named constructor. Usage is stored as two
nullable integers; both NULL means the message carried no usage, which is not the
same as a reported zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatbot._messages import Message, Usage

from ._base import ConversationInfo, SessionRecord

__all__ = [
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "SESSION_COLUMNS",
    "conversation_from_row",
    "conversation_row",
    "message_from_row",
    "message_row",
    "session_from_row",
    "session_row",
]

CONVERSATION_COLUMNS = (
    "id, owner, title, provider, model, system_prompt, created_at, updated_at, message_count"
)
"""``conversations`` columns in the order :func:`conversation_from_row` reads."""

MESSAGE_COLUMNS = (
    "conversation_id, seq, role, content, input_tokens, output_tokens, stopped, created_at"
)
"""``messages`` columns in the order :func:`message_row` writes and ``message_from_row`` reads."""

SESSION_COLUMNS = "id, current_conversation, connection, created_at, updated_at"
"""``sessions`` columns in the order :func:`session_row` writes and ``session_from_row`` reads."""

Row = Sequence[Any]


def conversation_from_row(row: Row) -> ConversationInfo:
    """A :class:`ConversationInfo` from a row in ``CONVERSATION_COLUMNS`` order."""
    id_, owner, title, provider, model, system_prompt, created_at, updated_at, count = row
    return ConversationInfo(
        id=id_,
        owner=owner,
        title=title,
        provider=provider,
        model=model,
        system_prompt=system_prompt,
        created_at=float(created_at),
        updated_at=float(updated_at),
        message_count=int(count),
    )


def conversation_row(info: ConversationInfo) -> tuple[Any, ...]:
    """The row that stores ``info``; a new conversation always starts with no messages."""
    return (
        info.id,
        info.owner,
        info.title,
        info.provider,
        info.model,
        info.system_prompt,
        info.created_at,
        info.updated_at,
        0,
    )


def message_from_row(row: Row) -> Message:
    """A :class:`Message` from a row in ``MESSAGE_COLUMNS`` order."""
    _conversation_id, _seq, role, content, input_tokens, output_tokens, stopped, created_at = row
    usage = (
        None
        if input_tokens is None and output_tokens is None
        else Usage(input_tokens or 0, output_tokens or 0)
    )
    return Message(
        role=role,
        content=content,
        usage=usage,
        stopped=bool(stopped),
        created_at=float(created_at),
    )


def message_row(conversation_id: str, seq: int, message: Message) -> tuple[Any, ...]:
    """The row that stores ``message`` at position ``seq`` of its conversation."""
    usage = message.usage
    return (
        conversation_id,
        seq,
        message.role.value,
        message.content,
        None if usage is None else usage.input_tokens,
        None if usage is None else usage.output_tokens,
        message.stopped,
        message.created_at,
    )


def session_from_row(row: Row) -> SessionRecord:
    """A :class:`SessionRecord` from a row in ``SESSION_COLUMNS`` order."""
    id_, current_conversation, connection, created_at, updated_at = row
    return SessionRecord(
        id=id_,
        current_conversation=current_conversation,
        connection=None if connection is None else bytes(connection),
        created_at=float(created_at),
        updated_at=float(updated_at),
    )


def session_row(record: SessionRecord, *, updated_at: float) -> tuple[Any, ...]:
    """The row that stores ``record``, stamped with ``updated_at``."""
    return (
        record.id,
        record.current_conversation,
        record.connection,
        record.created_at,
        updated_at,
    )
