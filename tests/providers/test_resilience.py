"""Retries, first-token and idle deadlines, and collecting, against the fake upstream."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncGenerator

import attrs
import pytest

from chatbot._config import UpstreamPolicy
from chatbot._errors import (
    AuthenticationFailed,
    BadUpstreamResponse,
    ProviderError,
    RateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatbot.providers import (
    ChatRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    collect,
    resilient_stream,
)
from chatbot.providers._resilience import _backoff, is_retryable
from tests.fakes import Fail, FakeUpstream, Hang, Reply
from tests.fakes._formats import split_text
from tests.providers.conftest import FAST_POLICY, MakeProvider, chat_request

pytestmark = pytest.mark.anyio

PROVIDERS = ["claude", "openai"]

#: For tests about retries and replies, not deadlines: a loaded CI box may be slow.
PATIENT = attrs.evolve(FAST_POLICY, first_token_timeout=5.0, idle_timeout=5.0)


@attrs.define
class Retries:
    """Records ``on_retry`` calls."""

    calls: list[tuple[int, ProviderError, float]] = attrs.Factory(list)

    def __call__(self, attempt: int, error: ProviderError, delay: float) -> None:
        self.calls.append((attempt, error, delay))


async def run(
    make_provider: MakeProvider,
    provider: str = "claude",
    policy: UpstreamPolicy = PATIENT,
    retries: Retries | None = None,
    request: ChatRequest | None = None,
) -> tuple[str, StreamEnd]:
    adapter = make_provider(provider)
    return await collect(
        resilient_stream(adapter, request or chat_request("hello"), policy, on_retry=retries)
    )


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_server_errors_are_retried(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, provider: str, status: int
) -> None:
    fake_upstream.enqueue(Fail(status=status))
    retries = Retries()
    text, _ = await run(make_provider, provider, retries=retries)
    assert text == "You said: hello"
    assert len(fake_upstream.chat_requests) == 2
    [(attempt, error, delay)] = retries.calls
    assert attempt == 1
    assert isinstance(error, UpstreamUnavailable)
    assert error.status == status
    assert 0 <= delay <= FAST_POLICY.backoff_initial


async def test_retried_request_is_the_same(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Fail(status=503))
    await run(make_provider, request=chat_request("one", "two", "three"))
    first, second = fake_upstream.chat_requests
    assert first.json == second.json
    assert len(first.json["messages"]) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limit_waits_for_retry_after(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, provider: str
) -> None:
    fake_upstream.enqueue(Fail(status=429, retry_after="0.05"))
    retries = Retries()
    await run(make_provider, provider, retries=retries)
    [(_, error, delay)] = retries.calls
    assert isinstance(error, RateLimited)
    assert delay == 0.05
    assert len(fake_upstream.chat_requests) == 2


async def test_retry_after_ms_is_honoured(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Fail(status=529, headers={"retry-after-ms": "20"}))
    retries = Retries()
    await run(make_provider, retries=retries)
    assert [delay for _, _, delay in retries.calls] == [0.02]


async def test_retry_after_beyond_the_cap_is_not_waited_out(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Fail(status=429, retry_after="120"))
    retries = Retries()
    with pytest.raises(RateLimited) as caught:
        await run(make_provider, retries=retries)
    assert caught.value.retry_after == 120.0
    assert retries.calls == []
    assert len(fake_upstream.chat_requests) == 1


async def test_attempts_are_bounded(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(*[Fail(status=503)] * FAST_POLICY.max_attempts)
    retries = Retries()
    with pytest.raises(UpstreamUnavailable):
        await run(make_provider, retries=retries)
    assert len(fake_upstream.chat_requests) == FAST_POLICY.max_attempts
    assert [attempt for attempt, _, _ in retries.calls] == [1, 2]


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        (Fail(status=400), UpstreamRejected),
        (Fail(status=401), AuthenticationFailed),
        (Fail(status=404), UpstreamRejected),
        (Fail(status=429), UpstreamRejected),  # Anthropic spend cap
        (Fail(status=504), UpstreamUnavailable),
    ],
)
async def test_final_errors_are_not_retried(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, fail: Fail, expected: type[Exception]
) -> None:
    fake_upstream.enqueue(fail)
    with pytest.raises(expected):
        await run(make_provider)
    assert len(fake_upstream.chat_requests) == 1


async def test_insufficient_quota_is_not_retried(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Fail(status=429, error_type="insufficient_quota", retry_after="0.01"))
    with pytest.raises(UpstreamRejected):
        await run(make_provider, "openai")
    assert len(fake_upstream.chat_requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("ending", ["error", "reset"])
async def test_failure_before_the_first_token_is_retried(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, provider: str, ending: str
) -> None:
    fake_upstream.enqueue(Reply(ending=ending, end_after=0))  # type: ignore[arg-type]
    text, _ = await run(make_provider, provider)
    assert text == "You said: hello"
    assert len(fake_upstream.chat_requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("ending", "expected"),
    [("error", UpstreamUnavailable), ("reset", UpstreamUnavailable), ("truncate", BadUpstreamResponse)],
)
async def test_no_retry_after_the_first_token(
    make_provider: MakeProvider,
    fake_upstream: FakeUpstream,
    provider: str,
    ending: str,
    expected: type[Exception],
) -> None:
    """Text already reached the caller: retrying would show it twice."""
    fake_upstream.enqueue(Reply(ending=ending, end_after=2))  # type: ignore[arg-type]
    received: list[str] = []
    stream = resilient_stream(make_provider(provider), chat_request("hello"), PATIENT)
    with pytest.raises(expected):
        async for event in stream:
            if isinstance(event, TextDelta):
                received.append(event.text)
    assert "".join(received) == "".join(split_text("You said: hello", 5)[:2])
    assert len(fake_upstream.chat_requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("hang", [Hang(stage="headers"), Hang(stage="body")])
async def test_hang_before_the_first_byte_times_out(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, provider: str, hang: Hang
) -> None:
    fake_upstream.enqueue(hang)
    with pytest.raises(UpstreamTimeout) as caught:
        await run(make_provider, provider, policy=FAST_POLICY)
    assert caught.value.phase == "first_token"
    assert "did not start answering within 0.2 s" in str(caught.value)
    assert len(fake_upstream.chat_requests) == 1  # a slow upstream is not asked twice
    assert await fake_upstream.wait_for_disconnect(5.0)


async def test_slow_first_token_after_message_start_times_out(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    """``message_start`` arrives at once; the deadline is for the first *text*."""
    fake_upstream.enqueue(Reply(first_token_delay=5.0))
    with pytest.raises(UpstreamTimeout) as caught:
        await run(make_provider, policy=FAST_POLICY)
    assert caught.value.phase == "first_token"
    assert await fake_upstream.wait_for_disconnect(5.0)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_hang_mid_stream_times_out_as_idle(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, provider: str
) -> None:
    fake_upstream.enqueue(Reply(ending="hang", end_after=2))
    received: list[StreamEvent] = []
    policy = attrs.evolve(FAST_POLICY, first_token_timeout=5.0)
    with pytest.raises(UpstreamTimeout) as caught:
        async for event in resilient_stream(make_provider(provider), chat_request(), policy):
            received.append(event)
    assert caught.value.phase == "idle"
    assert "".join(e.text for e in received if isinstance(e, TextDelta)) == "".join(
        split_text("You said: hello", 5)[:2]
    )
    assert len(fake_upstream.chat_requests) == 1
    assert await fake_upstream.wait_for_disconnect(5.0)


async def test_gaps_shorter_than_the_idle_deadline_are_fine(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    """The idle deadline bounds each gap, not the whole reply (20 x 0.1 s > 1 s)."""
    fake_upstream.enqueue(Reply(token_delay=0.1, chunks=20))
    policy = attrs.evolve(FAST_POLICY, first_token_timeout=2.0, idle_timeout=1.0)
    text, end = await run(make_provider, policy=policy)
    assert text == "You said: hello"
    assert end.stop_reason == "end_turn"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_five_megabyte_reply(
    make_provider: MakeProvider, fake_upstream: FakeUpstream, provider: str
) -> None:
    big = ("lorem ipsum dolor sit amet, ünïcode ✓ " * 140_000)[: 5 * 1024 * 1024]
    fake_upstream.enqueue(Reply(text=big, chunks=2_500))
    text, end = await run(make_provider, provider)
    assert text == big
    assert end.usage.output_tokens == 2_500


async def test_closing_the_stream_mid_reply_closes_the_upstream(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Reply(chunks=20, token_delay=0.05))
    stream = resilient_stream(make_provider("openai"), chat_request(), PATIENT)
    assert isinstance(await stream.__anext__(), TextDelta)
    await stream.aclose()
    assert await fake_upstream.wait_for_disconnect(5.0)


async def test_connection_refused_is_retried_then_raised(make_provider: MakeProvider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = make_provider("claude", base_url=f"http://127.0.0.1:{port}")
    retries = Retries()
    with pytest.raises(UpstreamUnavailable):
        await collect(resilient_stream(adapter, chat_request(), FAST_POLICY, on_retry=retries))
    assert len(retries.calls) == FAST_POLICY.max_attempts - 1


class TestPolicy:
    def test_backoff_is_full_jitter_under_an_exponential_ceiling(self) -> None:
        policy = UpstreamPolicy(backoff_initial=0.5, backoff_max=4.0)
        error = UpstreamUnavailable("x", provider="claude", status=503)
        random.seed(1)
        for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
            delays = [_backoff(policy, attempt, error) for _ in range(200)]
            assert all(d is not None and 0 <= d <= ceiling for d in delays)
            assert max(d for d in delays if d is not None) > ceiling / 2

    def test_retry_after_replaces_backoff_up_to_the_cap(self) -> None:
        policy = UpstreamPolicy(retry_after_max=30.0)
        assert _backoff(policy, 1, RateLimited("x", provider="p", retry_after=12.0)) == 12.0
        assert _backoff(policy, 1, RateLimited("x", provider="p", retry_after=31.0)) is None

    @pytest.mark.parametrize(
        ("error", "retryable"),
        [
            (RateLimited("x", provider="p"), True),
            (UpstreamUnavailable("x", provider="p"), True),
            (UpstreamUnavailable("x", provider="p", status=529), True),
            (UpstreamUnavailable("x", provider="p", status=501), False),
            (UpstreamTimeout("x", provider="p", phase="connect"), True),
            (UpstreamTimeout("x", provider="p", phase="first_token"), False),
            (UpstreamRejected("x", provider="p", status=429), False),
            (BadUpstreamResponse("x", provider="p"), False),
        ],
    )
    def test_is_retryable(self, error: ProviderError, retryable: bool) -> None:
        assert is_retryable(error) is retryable


async def test_collect_requires_a_stream_end() -> None:
    closed: list[bool] = []

    async def no_end() -> AsyncGenerator[StreamEvent, None]:
        try:
            yield TextDelta("partial")
        finally:
            closed.append(True)

    with pytest.raises(RuntimeError, match="without a StreamEnd"):
        await collect(no_end())
    assert closed == [True]


async def test_collect_joins_text() -> None:
    async def events() -> AsyncGenerator[StreamEvent, None]:
        yield TextDelta("a")
        yield TextDelta("b")
        yield StreamEnd(stop_reason="end_turn")

    assert await collect(events()) == ("ab", StreamEnd(stop_reason="end_turn"))
