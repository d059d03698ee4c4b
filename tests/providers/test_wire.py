"""How one network read's worth of events becomes one text delta, and how the shared
client sends a request."""

from __future__ import annotations

import json

import httpx
import pytest

from chatbot import ProviderConfig
from chatbot._config import UpstreamPolicy
from chatbot._errors import UpstreamUnavailable
from chatbot._http_client import create_http_client
from chatbot._messages import Message
from chatbot.providers import ChatRequest, create_provider
from chatbot.providers._resilience import collect
from chatbot.providers._sse import SSEDecoder
from chatbot.providers._wire import Endpoint, _text_of
from chatbot.providers.openai_compat import _Parser
from tests.fakes import DEFAULT_API_KEY, Fail, FakeUpstream


def _chunk(text: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + "\n\n"


def test_pieces_that_arrive_together_become_one_delta() -> None:
    events = SSEDecoder().feed((_chunk("Hel") + _chunk("lo") + _chunk(", world")).encode())
    assert _text_of(events, _Parser("openai", None)) == ("Hello, world", None)


def test_a_read_without_text_yields_nothing() -> None:
    events = SSEDecoder().feed(b": keep-alive\n\ndata: {\"choices\": []}\n\n")
    assert _text_of(events, _Parser("openai", None)) == ("", None)


def test_text_before_an_error_event_is_kept_and_the_error_reported() -> None:
    error = 'data: {"error": {"message": "server fell over", "type": "server_error"}}\n\n'
    events = SSEDecoder().feed((_chunk("partial ") + _chunk("text") + error + _chunk("lost")).encode())
    text, failure = _text_of(events, _Parser("openai", None))
    assert text == "partial text"
    assert isinstance(failure, UpstreamUnavailable)
    assert "server fell over" in str(failure)


@pytest.mark.anyio
async def test_the_shared_client_keeps_no_upstream_cookies(fake_upstream: FakeUpstream) -> None:
    """One client serves every user: a cookie the upstream sets for one request must not
    travel with the next, at the httpx layer or in aiohttp's session underneath it."""
    fake_upstream.enqueue(Fail(status=429, headers={"set-cookie": "__cf_bm=abc; Path=/"}))
    client = create_http_client(UpstreamPolicy())
    # By name: aiohttp's default jar would ignore a cookie set by an IP address.
    url = f"{fake_upstream.url.replace('127.0.0.1', 'localhost')}/v1/chat/completions"
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    async with client:
        statuses = [
            (await client.post(url, json=body, headers={"authorization": f"Bearer {DEFAULT_API_KEY}"})).status_code
            for _ in range(2)
        ]
    assert statuses == [429, 200]
    first, second = fake_upstream.requests
    assert first.connection == second.connection  # the same pooled connection
    assert "cookie" not in second.headers
    assert not list(client.cookies.jar)


@pytest.mark.anyio
async def test_an_endpoint_request_carries_the_client_defaults_and_compact_json() -> None:
    client = create_http_client(UpstreamPolicy(connect_timeout=3.0))
    async with client:
        endpoint = Endpoint.prepare(client, "http://127.0.0.1:9/v1/messages", {"x-api-key": "sk-x"})
        request = endpoint.post({"text": "héllo", "n": 1})
    assert request.url == httpx.URL("http://127.0.0.1:9/v1/messages")
    assert request.headers["user-agent"] == client.headers["user-agent"]
    assert request.headers["x-api-key"] == "sk-x"
    assert request.headers["content-type"] == "application/json"
    assert request.content == '{"text":"héllo","n":1}'.encode()
    assert request.extensions["timeout"]["connect"] == 3.0
    assert "sk-x" not in repr(endpoint)


@pytest.mark.anyio
async def test_send_direct_speaks_the_same_http_and_keeps_no_cookies(fake_upstream: FakeUpstream) -> None:
    """The chat requests go straight to the transport: same request on the wire, a
    streaming response tied to its request, and still no cookie carried over."""
    fake_upstream.enqueue(Fail(status=429, headers={"set-cookie": "__cf_bm=abc; Path=/"}))
    client = create_http_client(UpstreamPolicy())
    url = f"{fake_upstream.url.replace('127.0.0.1', 'localhost')}/v1/chat/completions"
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"authorization": f"Bearer {DEFAULT_API_KEY}"}
    async with client:
        endpoint = Endpoint.prepare(client, url, headers)
        replies = []
        for _ in range(2):
            request = endpoint.post(body)
            response = await client.send_direct(request)
            try:
                replies.append((response.status_code, (await response.aread()).decode()))
                assert response.request is request
            finally:
                await response.aclose()
    assert replies[0][0] == 429
    assert replies[1][0] == 200 and replies[1][1].rstrip().endswith("data: [DONE]")
    first, second = fake_upstream.requests
    assert first.connection == second.connection
    assert second.headers["user-agent"] == client.headers["user-agent"]
    assert json.loads(second.body) == body
    assert "cookie" not in second.headers


@pytest.mark.anyio
async def test_a_provider_on_a_plain_httpx_client_streams_too(fake_upstream: FakeUpstream) -> None:
    """An embedder may hand an adapter any ``httpx.AsyncClient``: it goes through ``send``."""
    config = ProviderConfig(provider="openai", api_key=DEFAULT_API_KEY, base_url=fake_upstream.url)
    async with httpx.AsyncClient(trust_env=False) as client:
        provider = create_provider(config, client)
        request = ChatRequest(model="fake-model", system="", messages=(Message.user("hi"),), max_tokens=64)
        text, end = await collect(provider.stream(request))
    assert text == "You said: hi"
    assert end.stop_reason is not None
