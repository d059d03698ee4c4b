"""How a test scripts the fake upstream, and what the fake records.

:class:`Reply` (in ``_formats``) is a successful or cut-short reply; the others here
make a request fail before any reply: an error status, a hang, a reset, raw bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from ._formats import Reply

__all__ = ["Behaviour", "Exchange", "Fail", "Hang", "Raw", "RecordedRequest", "Reset"]


@attrs.frozen(kw_only=True)
class Fail:
    """Answer with an error status and the provider's error body.

    Args:
        status: the HTTP status.
        message: the provider's error message.
        error_type: Anthropic ``error.type`` / OpenAI ``error.code`` (status default).
        retry_after: value of the ``retry-after`` header, if any.
        headers: more response headers (``retry-after-ms``, ``x-should-retry``, ...).
        body: raw body bytes instead of the provider-shaped JSON.
    """

    status: int
    message: str = "Scripted failure"
    error_type: str | None = None
    retry_after: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes | None = None


@attrs.frozen(kw_only=True)
class Hang:
    """Stop answering until the client gives up: before the headers, or after them."""

    stage: Literal["headers", "body"] = "headers"


@attrs.frozen
class Reset:
    """Reset the connection (TCP RST) instead of answering."""


@attrs.frozen(kw_only=True)
class Raw:
    """Send exactly these bytes as the body, each item as its own HTTP chunk."""

    body: Sequence[bytes]
    status: int = 200
    content_type: str = "text/event-stream"


Behaviour = Reply | Fail | Hang | Reset | Raw


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """A request as the fake received it (header names lower-case).

    ``connection`` numbers the TCP connections the fake accepted, so a test can tell
    a reused (keep-alive) connection from a new one.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: Any
    connection: int = 0


@attrs.define(eq=False)
class Exchange:
    """One request and what became of its response."""

    request: RecordedRequest
    status: int = 0
    finished: threading.Event = attrs.field(factory=threading.Event)
    disconnected: threading.Event = attrs.field(factory=threading.Event)
