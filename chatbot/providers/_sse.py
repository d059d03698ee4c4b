"""Incremental decoders for the two streaming framings upstreams use.

Server-sent events (``text/event-stream``) follow the WHATWG interpretation rules:
UTF-8 is decoded incrementally (a network chunk may end inside a multi-byte
character), one leading BOM is dropped, lines end in CR, LF or CRLF (and a CR may end
one chunk while its LF starts the next), ``:`` lines are comments, several ``data:``
lines join with ``\\n``, a blank line dispatches the event, and an event whose data
buffer is empty is not dispatched. An event still pending when the stream ends is
dropped, as the spec says: telling a truncated reply from a complete one is the
adapter's job, by its provider's terminator (``message_stop``, ``[DONE]``).

NDJSON (``application/x-ndjson``) is one JSON document per ``\\n``-terminated line.

Both decoders are plain objects fed with ``bytes`` (:meth:`SSEDecoder.feed`), so an
adapter can drive them from ``httpx.Response.aiter_bytes()`` without wrapping that
iterator in another generator; :func:`aiter_sse` and :func:`aiter_ndjson` are the
convenience wrappers for everyone else. Neither raises on bad input: undecodable
bytes become U+FFFD, as the spec requires, and JSON errors surface when the adapter
parses ``data``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Final, final

import attrs

__all__ = ["NDJSONDecoder", "SSEDecoder", "ServerSentEvent", "aiter_ndjson", "aiter_sse"]

_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_NO_EVENTS: Final[tuple[()]] = ()


@attrs.frozen(slots=True)
class ServerSentEvent:
    """One dispatched event: its type (``message`` unless named), data, id and retry."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


@final
class SSEDecoder:
    """Turns a ``text/event-stream`` byte stream, in chunks of any size, into events.

    The decoder keeps only the unterminated tail of the current line and the fields of
    the pending event, so memory stays bounded by the longest line.
    """

    __slots__ = ("_data", "_decoder", "_event", "_last_id", "_retry", "_skip_lf", "_started", "_tail")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF is its pair
        self._started = False  # the BOM check happens once, on the first decoded text
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> Sequence[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completes (often none)."""
        text = self._decoder.decode(chunk)
        if not text:
            return _NO_EVENTS
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if self._tail:
            text = self._tail + text
        if "\r" in text:
            lines = _LINE_BREAK.split(text)
            self._skip_lf = text[-1] == "\r"
        else:
            lines = text.split("\n")
        self._tail = lines.pop()
        if not lines:
            return _NO_EVENTS
        events: list[ServerSentEvent] = []
        for line in lines:
            self._process_line(line, events)
        return events

    def close(self) -> None:
        """Signal the end of the stream: flush the UTF-8 decoder and drop any pending event.

        Per the spec, an event not followed by a blank line is never dispatched.
        """
        self._decoder.decode(b"", final=True)
        self._tail = ""
        self._data.clear()
        self._event = ""

    def _process_line(self, line: str, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data:
                events.append(
                    ServerSentEvent(
                        self._event or "message", "\n".join(self._data), self._last_id, self._retry
                    )
                )
                self._data = []
            self._event = ""
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)


@final
class NDJSONDecoder:
    """Splits an NDJSON byte stream into lines (without terminators, blank lines skipped).

    Splitting happens on the ``\\n`` byte before decoding, which is safe because that
    byte never occurs inside a multi-byte UTF-8 sequence. A trailing ``\\r`` is dropped.
    """

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Return the complete lines ``chunk`` finishes, decoded as UTF-8."""
        if b"\n" not in chunk:
            self._tail += chunk
            return []
        parts = (self._tail + chunk).split(b"\n")
        self._tail = parts.pop()
        return [_decode_line(part) for part in parts if part.strip()]

    def close(self) -> list[str]:
        """End of stream: an unterminated last line is returned if it holds anything."""
        tail, self._tail = self._tail, b""
        return [_decode_line(tail)] if tail.strip() else []


def _decode_line(line: bytes) -> str:
    if line[-1:] == b"\r":
        line = line[:-1]
    return line.decode("utf-8", errors="replace")


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """Yield the events of an SSE byte stream, whatever its chunking."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    decoder.close()


async def aiter_ndjson(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Yield the non-blank lines of an NDJSON byte stream, whatever its chunking."""
    decoder = NDJSONDecoder()
    async for chunk in chunks:
        for line in decoder.feed(chunk):
            yield line
    for line in decoder.close():
        yield line
