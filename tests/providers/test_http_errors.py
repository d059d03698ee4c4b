"""Translating httpx failures and upstream error replies into the ProviderError tree."""

from __future__ import annotations

import email.utils
import json
import socket
from typing import Any

import aiohttp
import httpx
import pytest

from chatbot._errors import (
    AuthenticationFailed,
    BadUpstreamResponse,
    ProviderError,
    RateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatbot.providers import collect
from chatbot.providers._http import (
    ErrorInfo,
    error_from_response,
    error_from_status,
    error_info,
    map_http_errors,
    parse_retry_after,
)
from tests.providers.conftest import MakeProvider, chat_request

ANTHROPIC_BODY = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
    "request_id": "req_1",
}


def from_reply(
    status: int, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any
) -> ProviderError:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return error_from_response("openai", status, httpx.Headers(headers or {}), raw, **kwargs)


class TestRetryAfter:
    def test_seconds(self) -> None:
        assert parse_retry_after({"retry-after": "7"}) == 7.0
        assert parse_retry_after({"retry-after": " 1.5 "}) == 1.5

    def test_milliseconds_win(self) -> None:
        assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25

    def test_http_date(self) -> None:
        now = 1_800_000_000.0
        later = email.utils.formatdate(now + 30, usegmt=True)
        earlier = email.utils.formatdate(now - 30, usegmt=True)
        assert parse_retry_after({"retry-after": later}, now=now) == pytest.approx(30.0)
        assert parse_retry_after({"retry-after": earlier}, now=now) == 0.0

    @pytest.mark.parametrize("value", ["", "soon", "-3", "nan", "inf", "Mon, 99 Foo 2020"])
    def test_garbage_is_ignored(self, value: str) -> None:
        assert parse_retry_after({"retry-after": value}) is None

    def test_bad_milliseconds_fall_back_to_seconds(self) -> None:
        assert parse_retry_after({"retry-after-ms": "x", "retry-after": "2"}) == 2.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, UpstreamRejected),
        (401, AuthenticationFailed),
        (402, UpstreamRejected),
        (403, AuthenticationFailed),
        (404, UpstreamRejected),
        (408, UpstreamTimeout),
        (409, UpstreamRejected),
        (413, UpstreamRejected),
        (422, UpstreamRejected),
        (429, RateLimited),
        (500, UpstreamUnavailable),
        (502, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (504, UpstreamUnavailable),
        (529, UpstreamUnavailable),
        (302, BadUpstreamResponse),
    ],
)
def test_status_maps_to_the_most_specific_error(status: int, expected: type[ProviderError]) -> None:
    error = from_reply(status, {"error": {"message": "upstream says no"}})
    assert type(error) is expected
    assert error.provider == "openai"
    assert "upstream says no" in str(error) or status == 302
    assert "\n" not in str(error)


def test_rate_limit_carries_retry_after_and_says_when() -> None:
    error = from_reply(429, {"error": {"message": "slow down"}}, {"retry-after": "12"})
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12.0
    assert error.status == 429
    assert str(error) == "OpenAI is rate-limiting requests (HTTP 429): slow down (retry in 12 s)"


def test_unavailable_carries_retry_after() -> None:
    error = from_reply(503, {}, {"retry-after": "3"})
    assert isinstance(error, UpstreamUnavailable)
    assert error.retry_after == 3.0
    assert "Service Unavailable" in str(error)


class TestFinal429:
    """A 429 that waiting cannot fix is reported as UpstreamRejected (not retryable)."""

    def test_openai_insufficient_quota(self) -> None:
        body = {"error": {"message": "You exceeded your quota.", "type": "insufficient_quota",
                          "param": None, "code": "insufficient_quota"}}
        error = from_reply(429, body, {"retry-after": "1"})
        assert type(error) is UpstreamRejected
        assert error.status == 429
        assert not error.retryable
        assert "quota" in str(error)

    def test_should_retry_false(self) -> None:
        error = from_reply(429, {}, {"retry-after": "1", "x-should-retry": "false"})
        assert type(error) is UpstreamRejected

    def test_anthropic_spend_cap_without_retry_after(self) -> None:
        assert type(from_reply(429, {}, bare_429_is_final=True)) is UpstreamRejected
        limited = from_reply(429, {}, {"retry-after": "4"}, bare_429_is_final=True)
        assert type(limited) is RateLimited

    def test_other_providers_keep_retrying_without_retry_after(self) -> None:
        error = from_reply(429, {})
        assert type(error) is RateLimited
        assert error.retry_after is None


class TestErrorInfo:
    def test_anthropic_shape(self) -> None:
        assert error_info(ANTHROPIC_BODY) == ErrorInfo("Overloaded", "overloaded_error", "")

    def test_openai_shape(self) -> None:
        body = {"error": {"message": "m", "type": "invalid_request_error", "param": None,
                          "code": "model_not_found"}}
        assert error_info(body) == ErrorInfo("m", "invalid_request_error", "model_not_found")

    def test_openrouter_integer_code(self) -> None:
        body = {"error": {"code": 402, "message": "Insufficient credits", "metadata": {}}}
        assert error_info(body) == ErrorInfo("Insufficient credits", "", "402")

    def test_ollama_string(self) -> None:
        assert error_info({"error": 'model "x" not found'}) == ErrorInfo('model "x" not found')

    @pytest.mark.parametrize("payload", [None, [], "text", {"error": 3}, {"error": None}, {}])
    def test_unknown_shapes(self, payload: Any) -> None:
        assert error_info(payload).message == ""


class TestMessages:
    def test_provider_message_is_used(self) -> None:
        error = error_from_response(
            "claude", 529, {}, json.dumps(ANTHROPIC_BODY).encode()
        )
        assert str(error) == "Claude (Anthropic) is overloaded (HTTP 529): Overloaded"

    def test_echoed_key_is_redacted(self) -> None:
        body = {"error": {"message": "Incorrect API key provided: sk-proj-abcdef123456. See docs.",
                          "code": "invalid_api_key"}}
        error = from_reply(401, body)
        assert "sk-proj" not in str(error)
        assert "[redacted]" in str(error)

    def test_configured_key_is_redacted_whatever_its_shape(self) -> None:
        error = from_reply(400, {"error": {"message": "bad key hunter2xyz"}}, secret="hunter2xyz")
        assert "hunter2xyz" not in str(error)

    def test_html_body_gives_the_reason_phrase(self) -> None:
        error = from_reply(502, b"<html><body>Bad gateway from nginx</body></html>")
        assert str(error) == "OpenAI is unavailable (HTTP 502): Bad Gateway"

    def test_long_multi_line_message_is_one_bounded_line(self) -> None:
        error = from_reply(400, {"error": {"message": "x\n" * 1000}})
        assert "\n" not in str(error)
        assert len(str(error)) < 400


@pytest.mark.parametrize(
    ("kind", "expected", "status"),
    [
        ("overloaded_error", UpstreamUnavailable, 529),
        ("api_error", UpstreamUnavailable, 500),
        ("rate_limit_error", RateLimited, 429),
        ("authentication_error", AuthenticationFailed, 401),
        ("invalid_request_error", UpstreamRejected, 400),
        ("server_error", UpstreamUnavailable, 500),
        ("something_new", UpstreamUnavailable, None),
    ],
)
def test_mid_stream_errors_infer_their_status(
    kind: str, expected: type[ProviderError], status: int | None
) -> None:
    error = error_from_status("claude", None, ErrorInfo("boom", kind))
    assert type(error) is expected
    assert error.status == status
    assert "mid-stream: boom" in str(error)


def test_mid_stream_numeric_code() -> None:
    error = error_from_status("openrouter", None, ErrorInfo("down", "", "502"))
    assert type(error) is UpstreamUnavailable
    assert error.status == 502


def _raise(exc: BaseException) -> None:
    with map_http_errors("openai"):
        raise exc


@pytest.mark.parametrize(
    ("exc", "expected", "phase"),
    [
        (httpx.ConnectTimeout("t"), UpstreamTimeout, "connect"),
        (httpx.ReadTimeout("t"), UpstreamTimeout, "read"),
        (httpx.WriteTimeout("t"), UpstreamTimeout, "write"),
        (httpx.PoolTimeout("t"), UpstreamTimeout, "pool"),
        (httpx.ConnectError("refused"), UpstreamUnavailable, None),
        (httpx.ReadError("reset"), UpstreamUnavailable, None),
        (httpx.RemoteProtocolError("incomplete chunked read"), UpstreamUnavailable, None),
        (httpx.DecodingError("bad gzip"), BadUpstreamResponse, None),
        (httpx.TooManyRedirects("loop"), BadUpstreamResponse, None),
        (httpx.UnsupportedProtocol("ftp"), UpstreamRejected, None),
        (httpx.InvalidURL("bad"), UpstreamRejected, None),
    ],
)
def test_httpx_exceptions_are_translated(
    exc: Exception, expected: type[ProviderError], phase: str | None
) -> None:
    with pytest.raises(expected) as caught:
        _raise(exc)
    assert caught.value.__cause__ is exc
    assert caught.value.provider == "openai"
    if phase is not None:
        assert isinstance(caught.value, UpstreamTimeout)
        assert caught.value.phase == phase


def test_aiohttp_disconnect_reported_as_connect_timeout_is_not_a_timeout() -> None:
    """httpx-aiohttp maps every aiohttp connection error to ConnectTimeout."""
    try:
        raise httpx.ConnectTimeout("Server disconnected") from aiohttp.ServerDisconnectedError()
    except httpx.ConnectTimeout as exc:
        with pytest.raises(UpstreamUnavailable):
            _raise(exc)
    try:
        raise httpx.ConnectTimeout("timeout") from aiohttp.ServerTimeoutError()
    except httpx.ConnectTimeout as exc:
        with pytest.raises(UpstreamTimeout):
            _raise(exc)


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError):
        _raise(KeyError("ours"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["claude", "openai", "ollama"])
async def test_connection_refused_becomes_upstream_unavailable(
    make_provider: MakeProvider, provider: str
) -> None:
    adapter = make_provider(provider, base_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UpstreamUnavailable) as caught:
        await collect(adapter.stream(chat_request("hi")))
    assert caught.value.status is None
    with pytest.raises(UpstreamUnavailable):
        await adapter.list_models()
