"""Property tests: any chunking of a valid stream decodes the same; wire types round-trip."""

from __future__ import annotations

import itertools
import json
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.providers import anthropic, openai_compat
from chatbot.providers._http import ErrorInfo, error_info
from chatbot.providers._sse import NDJSONDecoder, ServerSentEvent, SSEDecoder
from chatbot.providers._wire import StreamParser
from tests.fakes._formats import Reply, anthropic_stream, openai_stream

#: Enough examples to find chunking bugs, few enough to keep the suite quick.
quick = settings(deadline=None, max_examples=60)

# Text without line breaks: what a single SSE line can carry.
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)
event_names = st.none() | st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
line_endings = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """A valid event stream (mixed line endings, comments, maybe a BOM) and its events."""
    events: list[ServerSentEvent] = []
    text = "\ufeff" if draw(st.booleans()) else ""
    for _ in range(draw(st.integers(0, 6))):
        eol = draw(line_endings)  # one per event, so a CR never pairs with the next LF
        if draw(st.booleans()):
            text += f":{draw(line_text)}{eol}"
        name = draw(event_names)
        lines = draw(st.lists(line_text, min_size=1, max_size=4))
        if name is not None:
            text += f"event: {name}{eol}"
        text += "".join(f"data: {line}{eol}" for line in lines) + eol
        events.append(ServerSentEvent(name or "message", "\n".join(lines)))
    return text.encode(), events


def chunked(data: st.DataObject, blob: bytes) -> list[bytes]:
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(blob)), max_size=30))))
    bounds = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


def decode_sse(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    decoder.close()
    return events


@quick
@given(sse_streams(), st.data())
def test_any_chunking_of_an_sse_stream_gives_the_same_events(
    stream: tuple[bytes, list[ServerSentEvent]], data: st.DataObject
) -> None:
    blob, expected = stream
    assert decode_sse([blob]) == expected
    assert decode_sse(chunked(data, blob)) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@quick
@given(st.lists(json_values, max_size=8), st.sampled_from(["\n", "\r\n"]), st.data())
def test_any_chunking_of_ndjson_gives_the_same_documents(
    documents: list[Any], eol: str, data: st.DataObject
) -> None:
    blob = "".join(json.dumps(doc, ensure_ascii=False) + eol for doc in documents).encode()
    decoder = NDJSONDecoder()
    lines = [line for chunk in chunked(data, blob) for line in decoder.feed(chunk)]
    lines += decoder.close()
    assert [json.loads(line) for line in lines] == documents


# -- whole provider streams, decoded through the adapters' parsers ---------------------

pieces_strategy = st.lists(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=12), min_size=1, max_size=8
)


def run_parser(parser: StreamParser, chunks: list[bytes]) -> tuple[str, Any]:
    decoder = SSEDecoder()
    text = ""
    for chunk in chunks:
        for event in decoder.feed(chunk):
            text += parser.feed(event) or ""
    decoder.close()
    return text, parser.finish()


REQUEST_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi there"}],
                "stream_options": {"include_usage": True}}


@quick
@given(pieces_strategy, line_endings, st.data())
def test_anthropic_stream_decodes_the_same_whatever_the_chunking(
    pieces: list[str], eol: str, data: st.DataObject
) -> None:
    frames = anthropic_stream(REQUEST_BODY, pieces, Reply(line_ending=eol), 0.0, 0.0)
    blob = b"".join(frame.data for frame in frames)
    text, end = run_parser(anthropic._Parser("claude", None), chunked(data, blob))
    assert text == "".join(pieces)
    assert (end.usage.input_tokens, end.usage.output_tokens) == (2, len(pieces))
    assert end.stop_reason == "end_turn"


@quick
@given(pieces_strategy, line_endings, st.sampled_from(["openai", "openrouter", "ollama"]), st.data())
def test_openai_stream_decodes_the_same_whatever_the_chunking(
    pieces: list[str], eol: str, flavour: Any, data: st.DataObject
) -> None:
    frames = openai_stream(flavour, REQUEST_BODY, pieces, Reply(line_ending=eol), 0.0, 0.0)
    blob = b"".join(frame.data for frame in frames)
    text, end = run_parser(openai_compat._Parser(flavour, None), chunked(data, blob))
    assert text == "".join(pieces)
    assert (end.usage.input_tokens, end.usage.output_tokens) == (2, len(pieces))


# -- wire types ----------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=30)
roles = st.sampled_from(["user", "assistant"])
token_counts = st.none() | st.integers(0, 10**9)


def json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@quick
@given(
    st.builds(
        anthropic._MessagesRequest,
        model=texts,
        max_tokens=st.integers(1, 10**6),
        messages=st.lists(st.builds(anthropic._WireMessage, roles, texts), max_size=5),
        system=st.none() | texts.filter(bool),
    )
)
def test_anthropic_request_round_trips(request: anthropic._MessagesRequest) -> None:
    converter = anthropic._converter
    wire = json_round_trip(converter.unstructure(request))
    assert ("system" in wire) == (request.system is not None)
    assert wire["stream"] is True
    assert converter.structure(wire, anthropic._MessagesRequest) == request


@quick
@given(
    st.builds(
        openai_compat._CompletionRequest,
        model=texts,
        max_tokens=st.integers(1, 10**6),
        messages=st.lists(st.builds(openai_compat._WireMessage, roles, texts), max_size=5),
    )
)
def test_openai_request_round_trips(request: openai_compat._CompletionRequest) -> None:
    converter = openai_compat._converter
    wire = json_round_trip(converter.unstructure(request))
    assert wire["stream_options"] == {"include_usage": True}
    assert converter.structure(wire, openai_compat._CompletionRequest) == request


extra_keys = st.dictionaries(
    st.text("xyz_", min_size=1, max_size=6).map(lambda key: "extra_" + key), json_values, max_size=3
)
anthropic_usage = st.builds(
    anthropic._Usage,
    input_tokens=token_counts,
    output_tokens=token_counts,
    cache_creation_input_tokens=token_counts,
    cache_read_input_tokens=token_counts,
)
reply_values = st.one_of(
    st.builds(anthropic._ContentBlockDelta,
              delta=st.builds(anthropic._BlockDelta, type=texts, text=st.none() | texts),
              index=st.integers(0, 100)),
    st.builds(anthropic._MessageDelta,
              delta=st.builds(anthropic._StopInfo, stop_reason=st.none() | texts),
              usage=st.none() | anthropic_usage),
    st.builds(anthropic._MessageStart,
              st.builds(anthropic._MessageInfo, model=texts, usage=anthropic_usage)),
    st.builds(openai_compat._Chunk,
              choices=st.none() | st.lists(st.builds(
                  openai_compat._Choice,
                  delta=st.none() | st.builds(openai_compat._Delta, content=st.none() | texts),
                  finish_reason=st.none() | texts), max_size=2),
              usage=st.none() | st.builds(openai_compat._Usage, prompt_tokens=token_counts,
                                          completion_tokens=token_counts),
              model=st.none() | texts),
)


@quick
@given(reply_values, extra_keys)
def test_reply_types_round_trip_and_tolerate_extra_keys(value: Any, extras: dict[str, Any]) -> None:
    converter = anthropic._converter if type(value).__module__ == anthropic.__name__ else openai_compat._converter
    wire = json_round_trip(converter.unstructure(value))
    assert converter.structure(wire, type(value)) == value
    assert converter.structure({**wire, **extras}, type(value)) == value


@quick
@given(
    st.builds(ErrorInfo, message=texts, type=texts, code=texts),
    st.sampled_from(["anthropic", "openai", "openrouter"]),
)
def test_error_bodies_of_every_provider_are_understood(info: ErrorInfo, shape: str) -> None:
    if shape == "anthropic":
        body = {"type": "error", "error": {"type": info.type, "message": info.message}}
        expected = attrs.evolve(info, code="")
    elif shape == "openai":
        body = {"error": {"message": info.message, "type": info.type, "param": None, "code": info.code}}
        expected = info
    else:
        code: Any = int(info.code) if info.code.isdigit() and len(info.code) < 10 else info.code
        body = {"error": {"code": code, "message": info.message, "metadata": {}}}
        expected = attrs.evolve(info, type="", code=str(code))
    assert error_info(json_round_trip(body)) == expected
