"""The OpenAI-compatible adapter (OpenAI, OpenRouter) against the fake upstream."""

from __future__ import annotations

import pytest

from chatbot._errors import (
    AuthenticationFailed,
    BadUpstreamResponse,
    RateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from chatbot._messages import Usage
from chatbot.providers import StreamEnd, TextDelta, collect
from chatbot.providers.openai_compat import OpenAICompatProvider
from tests.fakes import DEFAULT_API_KEY, Fail, FakeUpstream, Flavour, Raw, Reply
from tests.fakes._formats import split_text
from tests.providers.conftest import MakeProvider, chat_request

pytestmark = pytest.mark.anyio

UNICODE = "naïve café — 東京 🚀 done"


@pytest.fixture(params=["openai", "openrouter"])
def flavour(request: pytest.FixtureRequest, fake_upstream: FakeUpstream) -> Flavour:
    """Run the test against the plain OpenAI format and OpenRouter's variant of it."""
    fake_upstream.flavour = request.param
    return fake_upstream.flavour


async def test_request_follows_chat_completions(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, flavour: Flavour
) -> None:
    provider = make_provider(flavour)
    await collect(provider.stream(chat_request("first", "an answer", "second", system="Be terse.")))
    [request] = fake_upstream.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert "x-api-key" not in request.headers
    assert request.json == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second"},
        ],
        "max_tokens": 256,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_empty_system_prompt_sends_no_system_message(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    await collect(make_provider("openai").stream(chat_request("hi", system="")))
    assert fake_upstream.requests[0].json["messages"] == [{"role": "user", "content": "hi"}]


async def test_streamed_reply_with_usage(make_provider: MakeProvider, flavour: Flavour) -> None:
    events = [event async for event in make_provider(flavour).stream(chat_request("ping me"))]
    *deltas, end = events
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "You said: ping me"
    assert end == StreamEnd(usage=Usage(4, 5), stop_reason="stop", model="fake-model")


@pytest.mark.parametrize("split", [1, 3, (2, 1, 11, 5)])
@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
async def test_awkward_chunk_boundaries(
    make_provider: MakeProvider,
    fake_upstream: FakeUpstream,
    flavour: Flavour,
    split: int | tuple[int, ...],
    line_ending: str,
) -> None:
    fake_upstream.enqueue(Reply(text=UNICODE, chunks=7, split=split, line_ending=line_ending))
    text, end = await collect(make_provider(flavour).stream(chat_request("x")))
    assert text == UNICODE
    assert end.usage.output_tokens == 7


async def test_whole_json_reply_is_accepted(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Reply(json_body=True, stop_reason="length"))
    text, end = await collect(make_provider("openai").stream(chat_request("whole")))
    assert (text, end.stop_reason, end.usage) == ("You said: whole", "length", Usage(3, 5))


async def test_wrong_key(make_provider: MakeProvider, flavour: Flavour) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await collect(make_provider(flavour, api_key="sk-wrong-key-0000").stream(chat_request()))
    assert caught.value.status == 401
    assert "sk-wrong-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        (Fail(status=403), AuthenticationFailed),
        (Fail(status=429, retry_after="2"), RateLimited),
        (Fail(status=429), RateLimited),
        (Fail(status=402, message="Insufficient credits"), UpstreamRejected),
        (Fail(status=500), UpstreamUnavailable),
        (Fail(status=502), UpstreamUnavailable),
        (Fail(status=503, retry_after="1"), UpstreamUnavailable),
        (Fail(status=400), UpstreamRejected),
        (Fail(status=404), UpstreamRejected),
    ],
)
async def test_error_statuses(
    make_provider: MakeProvider,
    fake_upstream: FakeUpstream,
    flavour: Flavour,
    fail: Fail,
    expected: type[Exception],
) -> None:
    fake_upstream.enqueue(fail)
    with pytest.raises(expected) as caught:
        await collect(make_provider(flavour).stream(chat_request()))
    error = caught.value
    assert isinstance(error, expected)
    assert getattr(error, "status", None) == fail.status
    assert fail.message in str(error)


async def test_openai_insufficient_quota_is_final(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(
        Fail(status=429, error_type="insufficient_quota", retry_after="1",
             message="You exceeded your current quota")
    )
    with pytest.raises(UpstreamRejected, match="exceeded your current quota") as caught:
        await collect(make_provider("openai").stream(chat_request()))
    assert caught.value.status == 429


async def test_unknown_model(make_provider: MakeProvider, flavour: Flavour) -> None:
    with pytest.raises(UpstreamRejected, match="gpt-x") as caught:
        await collect(make_provider(flavour).stream(chat_request(model="gpt-x")))
    assert caught.value.status == (400 if flavour == "openrouter" else 404)


async def test_mid_stream_error_chunk(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, flavour: Flavour
) -> None:
    """OpenAI sends ``{"error": ...}``; OpenRouter a chunk with a string ``code``."""
    fake_upstream.enqueue(Reply(ending="error", end_after=2))
    seen: list[str] = []
    with pytest.raises(UpstreamUnavailable) as caught:
        async for event in make_provider(flavour).stream(chat_request("abcdefghij")):
            assert isinstance(event, TextDelta)
            seen.append(event.text)
    assert "".join(seen) == "".join(split_text("You said: abcdefghij", 5)[:2])
    assert caught.value.status == 500
    assert "mid-stream" in str(caught.value)


async def test_mid_stream_rate_limit_chunk(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Reply(ending="error", error_type="rate_limit_exceeded"))
    with pytest.raises(RateLimited):
        await collect(make_provider("openai").stream(chat_request()))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(ending="truncate", end_after=3), BadUpstreamResponse),
        (Reply(ending="malformed", end_after=1), BadUpstreamResponse),
        (Reply(ending="reset", end_after=1), UpstreamUnavailable),
    ],
)
async def test_broken_streams(
    make_provider: MakeProvider,
    fake_upstream: FakeUpstream,
    flavour: Flavour,
    reply: Reply,
    expected: type[Exception],
) -> None:
    fake_upstream.enqueue(reply)
    with pytest.raises(expected):
        await collect(make_provider(flavour).stream(chat_request()))


async def test_missing_done_after_finish_reason_is_truncation(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    fake_upstream.enqueue(Raw(body=[stream]))
    with pytest.raises(BadUpstreamResponse, match="before the reply was complete"):
        await collect(make_provider("openai").stream(chat_request()))


async def test_tolerates_extras_nulls_and_comments(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    stream = (
        b": OPENROUTER PROCESSING\r\n\r\n"
        b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":null,'
        b'"refusal":null},"finish_reason":null}],"usage":null,"obfuscation":"abc"}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"ok","reasoning":"r"},"logprobs":null}],'
        b'"error":null,"model":"m1"}\r\n\r\n'
        b": keep-alive\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length",'
        b'"native_finish_reason":"max_tokens"}]}\r\n\r\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,'
        b'"cost":0.1}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    fake_upstream.enqueue(Raw(body=[stream]))
    text, end = await collect(make_provider("openai").stream(chat_request()))
    assert text == "ok"
    assert end == StreamEnd(usage=Usage(3, 1), stop_reason="length", model="m1")


async def test_list_models(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, flavour: Flavour
) -> None:
    fake_upstream.models = ("gpt-4o", "gpt-4o-mini")
    assert await make_provider(flavour).list_models() == ["gpt-4o", "gpt-4o-mini"]
    [request] = fake_upstream.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"


async def test_list_models_errors(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Fail(status=503))
    with pytest.raises(UpstreamUnavailable):
        await make_provider("openai").list_models()
    fake_upstream.enqueue(Raw(body=[b'{"data": [{"no_id": 1}]}'], content_type="application/json"))
    with pytest.raises(BadUpstreamResponse):
        await make_provider("openai").list_models()


async def test_provider_identity(make_provider: MakeProvider) -> None:
    provider = make_provider("openrouter")
    assert isinstance(provider, OpenAICompatProvider)
    assert provider.name == "openrouter"
    assert DEFAULT_API_KEY not in repr(provider)
