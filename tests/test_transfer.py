"""The export format: the web API's JSON document, round-tripped exactly and read strictly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatbot import Message, Usage
from chatbot._transfer import (
    ConversationExport,
    ExportFormatError,
    from_json,
    to_json,
    to_markdown,
)
from chatbot.store import ConversationInfo

INFO = ConversationInfo(
    id="c0ffee",
    title="Greetings",
    provider="ollama",
    model="llama3.2",
    system_prompt="Be brief.",
    created_at=1_733_340_000.0,
    updated_at=1_733_340_060.5,
    message_count=4,
)
MESSAGES = (
    Message(role="user", content="Hello — ✓", created_at=1.0),
    Message(role="assistant", content="Hi!", usage=Usage(12, 3), created_at=2.5),
    Message(role="user", content="Tell me more", created_at=3.0),
    Message(role="assistant", content="Once upon", stopped=True, created_at=4.0),
)
EXPORT = ConversationExport.of(INFO, MESSAGES)


def _document() -> dict[str, Any]:
    return dict(json.loads(to_json(EXPORT)))


def test_json_round_trip_keeps_everything() -> None:
    assert from_json(to_json(EXPORT)) == EXPORT


def test_the_document_is_the_web_apis() -> None:
    """Same keys, same order as ``GET /api/conversations/{id}/export?format=json``."""
    document = _document()
    assert list(document) == ["version", "conversation", "messages"]
    assert document["version"] == 1
    assert document["conversation"] == {
        "title": "Greetings",
        "provider": "ollama",
        "model": "llama3.2",
        "system_prompt": "Be brief.",
        "created_at": 1_733_340_000.0,
    }
    assert document["messages"][0] == {
        "role": "user",
        "content": "Hello — ✓",
        "usage": None,
        "stopped": False,
        "created_at": 1.0,
    }
    assert document["messages"][1]["usage"] == {"input_tokens": 12, "output_tokens": 3}
    assert "Hello — ✓" in to_json(EXPORT)  # readable, not \\u-escaped


def test_optional_fields_may_be_left_out() -> None:
    minimal = {
        "version": 1,
        "conversation": {},
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    }
    export = from_json(json.dumps(minimal))
    assert [m.content for m in export.messages] == ["hi", "yo"]
    assert export.messages[0].created_at > 0
    info = export.info("new-id")
    assert (info.id, info.title, info.provider) == ("new-id", "hi", None)


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["conversation"].update(id="c0ffee"), "extra"),
        (lambda d: d.pop("conversation"), "not a conversation export"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d["messages"][1]["usage"].update(input_tokens="12"), "input_tokens"),
        (lambda d: d["messages"][1]["usage"].update(output_tokens=-1), "output_tokens"),
        (lambda d: d["messages"][0].update(stopped=1), "stopped"),
        (lambda d: d["messages"][0].update(created_at=True), "created_at"),
        (lambda d: d["messages"][0].update(created_at=1e12), "created_at"),
        (lambda d: d["messages"][0].update(role="system"), "role"),
        (lambda d: d["messages"][0].pop("content"), "content"),
        (lambda d: d["messages"].reverse(), "alternate"),
    ],
)
def test_reading_is_strict(mutate: Any, complaint: str) -> None:
    document = _document()
    mutate(document)
    with pytest.raises(ExportFormatError, match=complaint):
        from_json(json.dumps(document))


def test_not_json_is_refused() -> None:
    with pytest.raises(ExportFormatError, match="not JSON"):
        from_json("{nope")


def test_integers_are_accepted_as_timestamps() -> None:
    document = _document()
    document["conversation"]["created_at"] = 1_733_340_000
    assert from_json(json.dumps(document)).created_at == 1_733_340_000.0


def test_markdown_export() -> None:
    assert to_markdown(INFO, MESSAGES) == (
        "# Greetings\n\n"
        "_ollama · llama3.2 · 2024-12-04 19:20 UTC_\n\n"
        "## You\n\nHello — ✓\n\n"
        "## Assistant\n\nHi!\n\n"
        "## You\n\nTell me more\n\n"
        "## Assistant\n\nOnce upon\n\n_(stopped)_\n"
    )


def test_the_web_api_accepts_the_document_and_vice_versa() -> None:
    """Guards against the two sides drifting apart: the web's schema validates ours."""
    from chatbot.webapp.schemas import ExportDocument

    parsed = ExportDocument.model_validate_json(to_json(EXPORT))
    assert from_json(parsed.model_dump_json()) == EXPORT
