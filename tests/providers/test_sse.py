"""The SSE and NDJSON decoders against the WHATWG interpretation rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from chatbot.providers._sse import (
    NDJSONDecoder,
    ServerSentEvent,
    SSEDecoder,
    aiter_ndjson,
    aiter_sse,
)


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    decoder.close()
    return events


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_data_event_with_default_type() -> None:
    assert decode(b"data: hello\n\n") == [ServerSentEvent("message", "hello")]


def test_named_event_id_and_retry() -> None:
    stream = b"event: message_start\nid: 7\nretry: 1500\ndata: {}\n\n"
    assert decode(stream) == [ServerSentEvent("message_start", "{}", "7", 1500)]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b"data: one\ndata:two\ndata:  three\n\n") == [
        ServerSentEvent("message", "one\ntwo\n three")
    ]


def test_comments_are_ignored_anywhere() -> None:
    stream = b": OPENROUTER PROCESSING\n\ndata: a\n: keep-alive\ndata: b\n\n:\n\n"
    assert decode(stream) == [ServerSentEvent("message", "a\nb")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol: bytes) -> None:
    stream = b"event: x" + eol + b"data: 1" + eol + eol + b"data: 2" + eol + eol
    assert decode(stream) == [ServerSentEvent("x", "1"), ServerSentEvent("message", "2")]
    assert decode(*one_byte_at_a_time(stream)) == decode(stream)


def test_cr_and_lf_split_across_chunks_is_one_line_end() -> None:
    """A CR that ends one chunk and the LF that starts the next end one line, not two."""
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [
        ServerSentEvent("message", "a\nb")
    ]


def test_lone_cr_at_chunk_end_followed_by_text() -> None:
    assert decode(b"data: a\r", b"\r", b"data: b\r\r") == [
        ServerSentEvent("message", "a"),
        ServerSentEvent("message", "b"),
    ]


def test_multibyte_characters_split_between_chunks() -> None:
    stream = "data: héllo 世界 🎉\n\n".encode()
    assert decode(*one_byte_at_a_time(stream)) == [ServerSentEvent("message", "héllo 世界 🎉")]


def test_leading_bom_is_stripped_once() -> None:
    bom = "\ufeff".encode()
    assert decode(bom[:1], bom[1:] + b"data: x\n\n") == [ServerSentEvent("message", "x")]
    # A second BOM is data, not a marker; as a field name it is unknown and ignored.
    assert decode(bom + bom + b"data: y\n\n") == []


def test_event_without_data_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\nid: 3\n\nretry: 10\n\n") == []


def test_event_type_resets_after_dispatch() -> None:
    assert decode(b"event: a\ndata: 1\n\ndata: 2\n\n") == [
        ServerSentEvent("a", "1"),
        ServerSentEvent("message", "2"),
    ]


def test_field_without_colon_and_space_rules() -> None:
    # "data" alone appends an empty line; only one leading space is removed.
    assert decode(b"data\ndata:x\n\n") == [ServerSentEvent("message", "\nx")]
    assert decode(b"data:  two spaces\n\n") == [ServerSentEvent("message", " two spaces")]


def test_unknown_fields_and_case_sensitivity() -> None:
    assert decode(b"Data: no\nfoo: bar\ndata: yes\n\n") == [ServerSentEvent("message", "yes")]


def test_id_with_nul_and_bad_retry_are_ignored() -> None:
    assert decode(b"id: 1\ndata: a\n\nid: 2\x003\nretry: 1s\ndata: b\n\n") == [
        ServerSentEvent("message", "a", "1"),
        ServerSentEvent("message", "b", "1"),
    ]


def test_unterminated_final_event_is_dropped() -> None:
    assert decode(b"data: complete\n\ndata: cut") == [ServerSentEvent("message", "complete")]
    assert decode(b"data: cut\n") == []


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert decode(b"data: \xff\xfe ok\n\n") == [ServerSentEvent("message", "\ufffd\ufffd ok")]


def test_many_events_in_one_chunk() -> None:
    stream = b"".join(b"data: %d\n\n" % i for i in range(50))
    assert [event.data for event in decode(stream)] == [str(i) for i in range(50)]


def ndjson(*chunks: bytes) -> list[str]:
    decoder = NDJSONDecoder()
    lines = [line for chunk in chunks for line in decoder.feed(chunk)]
    return lines + decoder.close()


def test_ndjson_lines() -> None:
    stream = '{"a":1}\n{"b":"ü"}\r\n\n  \n{"done":true}'.encode()
    expected = ['{"a":1}', '{"b":"ü"}', '{"done":true}']
    assert ndjson(stream) == expected
    assert ndjson(*one_byte_at_a_time(stream)) == expected


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.anyio
async def test_aiter_sse_over_an_async_byte_stream() -> None:
    stream = b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"
    events = [event async for event in aiter_sse(_chunks(one_byte_at_a_time(stream)))]
    assert events == [ServerSentEvent("a", "1"), ServerSentEvent("message", "2")]


@pytest.mark.anyio
async def test_aiter_ndjson_over_an_async_byte_stream() -> None:
    lines = [line async for line in aiter_ndjson(_chunks([b'{"x":', b"1}\n{", b'"y":2}']))]
    assert lines == ['{"x":1}', '{"y":2}']
