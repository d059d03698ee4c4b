"""The Anthropic Messages adapter against the fake upstream, over real HTTP."""

from __future__ import annotations

import anyio
import httpx
import pytest

from chatbot import ProviderConfig
from chatbot._errors import (
    AuthenticationFailed,
    BadUpstreamResponse,
    RateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatbot._messages import Usage
from chatbot.providers import StreamEnd, TextDelta, collect, create_provider
from chatbot.providers.anthropic import AnthropicProvider
from tests.fakes import DEFAULT_API_KEY, Fail, FakeUpstream, Raw, Reply, Reset
from tests.fakes._formats import split_text
from tests.providers.conftest import MakeProvider, chat_request

pytestmark = pytest.mark.anyio

UNICODE = "héllo wörld — 世界 🎉"


async def test_request_follows_the_messages_api(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    provider = make_provider("claude")
    await collect(provider.stream(chat_request("first", "an answer", "second", system="Be terse.")))
    [request] = fake_upstream.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == DEFAULT_API_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.json == {
        "model": "fake-model",
        "max_tokens": 256,
        "system": "Be terse.",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second"},
        ],
        "stream": True,
    }


async def test_empty_system_prompt_is_left_out(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    await collect(make_provider("claude").stream(chat_request("hi", system="")))
    assert "system" not in fake_upstream.requests[0].json


async def test_streamed_reply_text_usage_and_stop_reason(make_provider: MakeProvider) -> None:
    events = [event async for event in make_provider("claude").stream(chat_request("ping me"))]
    *deltas, end = events
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    assert 1 <= len(deltas) <= 5  # pieces that arrive in one read are passed on as one
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "You said: ping me"
    # The fake counts words of system + messages in, text deltas out (cumulatively).
    assert end == StreamEnd(usage=Usage(4, 5), stop_reason="end_turn", model="fake-model")


@pytest.mark.parametrize("split", [1, 2, 7, (1, 4, 2, 9, 3)])
@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
async def test_awkward_chunk_boundaries(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, split: int | tuple[int, ...], line_ending: str
) -> None:
    """Splits inside lines, JSON, UTF-8 characters and between CR and LF change nothing."""
    fake_upstream.enqueue(Reply(text=UNICODE, chunks=6, split=split, line_ending=line_ending))
    text, end = await collect(make_provider("claude").stream(chat_request("x")))
    assert text == UNICODE
    assert end.stop_reason == "end_turn"


async def test_whole_json_reply_is_accepted(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    """An upstream that ignores ``stream: true`` still gives one reply."""
    fake_upstream.enqueue(Reply(json_body=True, stop_reason="max_tokens"))
    text, end = await collect(make_provider("claude").stream(chat_request("whole")))
    assert text == "You said: whole"
    assert end.stop_reason == "max_tokens"
    assert end.usage == Usage(3, 5)


async def test_wrong_key_is_authentication_failed(make_provider: MakeProvider) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await collect(make_provider("claude", api_key="sk-wrong-key-0000").stream(chat_request()))
    assert caught.value.status == 401
    assert "invalid x-api-key" in str(caught.value)
    assert "sk-wrong" not in str(caught.value)


@pytest.mark.parametrize(
    ("fail", "expected", "status"),
    [
        (Fail(status=403), AuthenticationFailed, 403),
        (Fail(status=429, retry_after="7"), RateLimited, 429),
        (Fail(status=429), UpstreamRejected, 429),  # spend cap: no retry-after
        (Fail(status=500), UpstreamUnavailable, 500),
        (Fail(status=502), UpstreamUnavailable, 502),
        (Fail(status=503), UpstreamUnavailable, 503),
        (Fail(status=529, message="Overloaded"), UpstreamUnavailable, 529),
        (Fail(status=400, message="messages: roles must alternate"), UpstreamRejected, 400),
        (Fail(status=404), UpstreamRejected, 404),
        (Fail(status=502, body=b"<html>bad gateway</html>"), UpstreamUnavailable, 502),
    ],
)
async def test_error_statuses(
    make_provider: MakeProvider,
    fake_upstream: FakeUpstream,
    fail: Fail,
    expected: type[Exception],
    status: int,
) -> None:
    fake_upstream.enqueue(fail)
    with pytest.raises(expected) as caught:
        await collect(make_provider("claude").stream(chat_request()))
    error = caught.value
    assert isinstance(error, expected)
    assert getattr(error, "status", None) == status
    if fail.body is None:
        assert fail.message in str(error)
    if isinstance(error, RateLimited):
        assert error.retry_after == 7.0


async def test_unknown_model_uses_the_providers_message(make_provider: MakeProvider) -> None:
    with pytest.raises(UpstreamRejected, match="model: no-such-model") as caught:
        await collect(make_provider("claude").stream(chat_request(model="no-such-model")))
    assert caught.value.status == 404


async def test_mid_stream_error_event(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(ending="error", end_after=2))
    seen: list[str] = []
    with pytest.raises(UpstreamUnavailable, match="Overloaded") as caught:
        async for event in make_provider("claude").stream(chat_request("abcdefghij")):
            assert isinstance(event, TextDelta)
            seen.append(event.text)
    assert "".join(seen) == "".join(split_text("You said: abcdefghij", 5)[:2])
    assert caught.value.status == 529


async def test_mid_stream_rate_limit_event(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(ending="error", error_type="rate_limit_error"))
    with pytest.raises(RateLimited):
        await collect(make_provider("claude").stream(chat_request()))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(ending="truncate", end_after=2), BadUpstreamResponse),
        (Reply(ending="malformed", end_after=1), BadUpstreamResponse),
        (Reply(ending="reset", end_after=1), UpstreamUnavailable),
    ],
)
async def test_broken_streams(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, reply: Reply, expected: type[Exception]
) -> None:
    fake_upstream.enqueue(reply)
    with pytest.raises(expected):
        await collect(make_provider("claude").stream(chat_request()))


async def test_reset_before_any_answer(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reset())
    with pytest.raises(UpstreamUnavailable):
        await collect(make_provider("claude").stream(chat_request()))


@pytest.mark.parametrize(
    "body",
    [
        [b"this is not an event stream\n"],
        [b"event: message_start\ndata: {\"message\": 42}\n\n"],
        [b"event: content_block_delta\ndata: [1, 2]\n\n"],
    ],
)
async def test_malformed_bodies(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, body: list[bytes]
) -> None:
    fake_upstream.enqueue(Raw(body=body))
    with pytest.raises(BadUpstreamResponse):
        await collect(make_provider("claude").stream(chat_request()))


async def test_malformed_json_body_on_a_200(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Raw(body=[b'{"content": '], content_type="application/json"))
    with pytest.raises(BadUpstreamResponse, match="malformed JSON"):
        await collect(make_provider("claude").stream(chat_request()))


async def test_unknown_events_and_pings_are_skipped(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    stream = (
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\","
        b"\"usage\":{\"input_tokens\":2,\"output_tokens\":1,\"cache_read_input_tokens\":3}}}\n\n"
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n"
        b"event: brand_new\ndata: {\"type\":\"brand_new\"}\n\n"
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        b"\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n"
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,"
        b"\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"},\"extra\":true}\n\n"
        b"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},"
        b"\"usage\":{\"output_tokens\":9}}\n\n"
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    )
    fake_upstream.enqueue(Raw(body=[stream]))
    text, end = await collect(make_provider("claude").stream(chat_request()))
    assert text == "ok"
    assert end == StreamEnd(usage=Usage(5, 9), stop_reason="max_tokens", model="m")


async def test_hung_upstream_times_out_on_the_client_read_deadline(
    fake_upstream: FakeUpstream,
) -> None:
    """Without the resilience layer, httpx's read timeout still bounds a hang."""
    config = ProviderConfig(provider="claude", api_key=DEFAULT_API_KEY, base_url=fake_upstream.url)
    fake_upstream.enqueue(Reply(ending="hang", end_after=1))
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(create_provider(config, client).stream(chat_request()))
    assert caught.value.phase == "read"
    assert await fake_upstream.wait_for_disconnect(5.0)


async def test_closing_the_stream_closes_the_upstream_connection(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Reply(chunks=20, token_delay=0.05))
    stream = make_provider("claude").stream(chat_request("a long answer, please"))
    assert isinstance(await stream.__anext__(), TextDelta)
    await stream.aclose()
    assert await fake_upstream.wait_for_disconnect(5.0)


async def test_cancelling_the_reader_closes_the_upstream_connection(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Reply(chunks=20, token_delay=0.05))
    received: list[str] = []
    with anyio.CancelScope() as scope:
        async for event in make_provider("claude").stream(chat_request("a long answer")):
            assert isinstance(event, TextDelta)
            received.append(event.text)
            scope.cancel()
    assert scope.cancelled_caught
    assert len(received) == 1
    assert await fake_upstream.wait_for_disconnect(5.0)


async def test_list_models_follows_pages(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.models = tuple(f"claude-{i:04d}" for i in range(1500))
    models = await make_provider("claude").list_models()
    assert models == list(fake_upstream.models)
    pages = fake_upstream.requests
    assert [page.query.get("after_id") for page in pages] == [None, "claude-0999"]
    assert all(page.headers["x-api-key"] == DEFAULT_API_KEY for page in pages)
    assert all(page.headers["anthropic-version"] == "2023-06-01" for page in pages)


async def test_list_models_error(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    with pytest.raises(AuthenticationFailed):
        await make_provider("claude", api_key="sk-wrong-key-0000").list_models()
    fake_upstream.enqueue(Raw(body=[b"not json"], content_type="application/json"))
    with pytest.raises(BadUpstreamResponse):
        await make_provider("claude").list_models()


async def test_key_never_in_repr(make_provider: MakeProvider) -> None:
    provider = make_provider("claude")
    assert isinstance(provider, AnthropicProvider)
    assert provider.name == "claude"
    assert DEFAULT_API_KEY not in repr(provider)
