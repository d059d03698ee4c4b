"""Request bodies: what parsing them leaves behind."""

from __future__ import annotations

import json

from chatbot.webapp.schemas import ChatBody


def test_parsing_keeps_no_copy_of_what_a_browser_sent() -> None:
    """pydantic's JSON string cache would keep each short message and id for good: parsed
    twice, the same text would come back as the very same (cached) string object."""
    raw = json.dumps({"message": "a short, private message", "conversation_id": "c-123"})
    first, second = ChatBody.model_validate_json(raw), ChatBody.model_validate_json(raw)
    assert first == second
    assert first.message is not second.message
    assert first.conversation_id is not second.conversation_id
