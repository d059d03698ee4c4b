"""The conversation export format: Markdown to read, JSON to move a conversation.

The JSON document is the one the web API exports (``GET
/api/conversations/{id}/export?format=json``) and imports (``POST
/api/conversations/import``), so a conversation moves between the browser, the
terminal and another instance unchanged::

    {"version": 1,
     "conversation": {"title": "Hello", "provider": "ollama", "model": "llama3.2",
                      "system_prompt": "You are…", "created_at": 1733340000.0},
     "messages": [
       {"role": "user", "content": "Hello", "usage": null, "stopped": false,
        "created_at": 1733340000.0},
       {"role": "assistant", "content": "Hi!", "stopped": false, "created_at": 1733340001.5,
        "usage": {"input_tokens": 12, "output_tokens": 3}}]}

A document carries no id: whoever imports it gives the conversation a new one.
Reading is strict, as the web API's schema is: unknown keys, wrong JSON types, out
of range numbers and messages that do not alternate user/assistant are refused with
:class:`ExportFormatError`. The Markdown is the web export's Markdown, line for line.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import attrs
import cattrs

from chatbot._messages import Message, Role, Usage
from chatbot.store import ConversationInfo, derive_title

__all__ = ["ConversationExport", "ExportFormatError", "from_json", "to_json", "to_markdown"]

_MAX_TIMESTAMP = 1e11
_MAX_COUNT = 10**12


class ExportFormatError(ValueError):
    """The document is not a conversation export this version can read."""


@attrs.frozen(kw_only=True)
class ConversationExport:
    """A conversation as it travels: its metadata (without an id) and its messages."""

    title: str = ""
    provider: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    created_at: float | None = None
    messages: tuple[Message, ...] = ()

    @classmethod
    def of(cls, info: ConversationInfo, messages: tuple[Message, ...]) -> ConversationExport:
        return cls(
            title=info.title,
            provider=info.provider,
            model=info.model,
            system_prompt=info.system_prompt,
            created_at=info.created_at,
            messages=messages,
        )

    def info(self, conversation_id: str, *, owner: str | None = None) -> ConversationInfo:
        """The metadata of the conversation this export becomes under ``conversation_id``."""
        title = self.title.strip()
        if not title and self.messages:
            title = derive_title(self.messages[0].content)
        now = time.time()
        return ConversationInfo(
            id=conversation_id,
            owner=owner,
            title=title,
            provider=self.provider,
            model=self.model,
            system_prompt=self.system_prompt,
            created_at=self.created_at if self.created_at is not None else now,
            updated_at=now,
        )


# -- wire types (field order is the document's key order) ------------------------------


@attrs.frozen
class _WireUsage:
    input_tokens: int
    output_tokens: int


@attrs.frozen(kw_only=True)
class _WireMessage:
    role: Literal["user", "assistant"]
    content: str
    usage: _WireUsage | None = None
    stopped: bool = False
    created_at: float | None = None


@attrs.frozen(kw_only=True)
class _WireConversation:
    title: str = ""
    provider: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    created_at: float | None = None


@attrs.frozen(kw_only=True)
class _WireDocument:
    version: Literal[1]
    conversation: _WireConversation
    messages: list[_WireMessage]


def _exactly(kind: type) -> Any:
    """A structure hook accepting only this JSON type (no "12" for 12, no 1 for True)."""

    def structure(value: object, _: object) -> object:
        if type(value) is not kind:
            raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _count(value: object, _: object) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        raise ValueError(f"expected a whole number from 0 to {_MAX_COUNT}, got {value!r}")
    return value


def _timestamp(value: object, _: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= _MAX_TIMESTAMP  # also refuses NaN
    ):
        raise ValueError(f"expected a Unix time in seconds, got {value!r}")
    return float(value)


def _configure_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _exactly(str))
    converter.register_structure_hook(bool, _exactly(bool))
    converter.register_structure_hook(int, _count)
    converter.register_structure_hook(float, _timestamp)
    return converter


_converter = _configure_converter()


def to_json(export: ConversationExport) -> str:
    """The export document, indented, non-ASCII characters kept readable."""
    wire = _WireDocument(
        version=1,
        conversation=_WireConversation(
            title=export.title,
            provider=export.provider,
            model=export.model,
            system_prompt=export.system_prompt,
            created_at=export.created_at,
        ),
        messages=[
            _WireMessage(
                role="user" if m.role is Role.USER else "assistant",
                content=m.content,
                usage=_WireUsage(m.usage.input_tokens, m.usage.output_tokens) if m.usage else None,
                stopped=m.stopped,
                created_at=m.created_at,
            )
            for m in export.messages
        ],
    )
    return json.dumps(_converter.unstructure(wire), ensure_ascii=False, indent=2) + "\n"


def from_json(text: str | bytes) -> ConversationExport:
    """Read an export document.

    Raises:
        ExportFormatError: not JSON, not this format or version, or not a valid history.
    """
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ExportFormatError(f"not JSON ({exc})") from None
    if not isinstance(raw, dict) or not {"version", "conversation", "messages"} <= raw.keys():
        raise ExportFormatError(
            'not a conversation export (expected "version", "conversation" and "messages")'
        )
    if raw["version"] != 1:
        raise ExportFormatError(f"export version {raw['version']!r} is not supported (expected 1)")
    try:
        wire = _converter.structure(raw, _WireDocument)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        details = (
            cattrs.transform_error(exc)
            if isinstance(exc, cattrs.BaseValidationError)
            else [str(exc)]
        )
        raise ExportFormatError(details[0] if details else "invalid document") from None
    for index, message in enumerate(wire.messages):
        if message.role != ("user" if index % 2 == 0 else "assistant"):
            raise ExportFormatError(
                "the messages must alternate between user and assistant, starting with user "
                f"(message {index} is from the {message.role})"
            )
    now = time.time()
    meta = wire.conversation
    return ConversationExport(
        title=meta.title,
        provider=meta.provider,
        model=meta.model,
        system_prompt=meta.system_prompt,
        created_at=meta.created_at,
        messages=tuple(
            Message(
                role=Role(m.role),
                content=m.content,
                usage=Usage(m.usage.input_tokens, m.usage.output_tokens) if m.usage else None,
                stopped=m.stopped,
                created_at=m.created_at if m.created_at is not None else now,
            )
            for m in wire.messages
        ),
    )


def to_markdown(info: ConversationInfo, messages: tuple[Message, ...]) -> str:
    """The conversation as Markdown for people to read (not an import format)."""
    lines = [f"# {info.title or 'Conversation'}", ""]
    source = " · ".join(part for part in (info.provider, info.model) if part)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.created_at))
    lines += [f"_{source + ' · ' if source else ''}{when}_", ""]
    for message in messages:
        lines += ["## You" if message.role is Role.USER else "## Assistant", ""]
        lines += [message.content, ""]
        if message.stopped:
            lines += ["_(stopped)_", ""]
    return "\n".join(lines)
