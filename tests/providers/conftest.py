"""Fixtures for the provider tests: a real HTTP client and adapters aimed at the fake."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from chatbot import ProviderConfig
from chatbot._config import UpstreamPolicy
from chatbot._http_client import UpstreamClient
from chatbot._messages import Message
from chatbot.providers import ChatRequest, Provider, create_provider
from tests.fakes import DEFAULT_API_KEY, FakeUpstream

#: Deadlines small enough to keep the suite fast, large enough for a loaded CI box.
FAST_POLICY = UpstreamPolicy(
    connect_timeout=2.0,
    first_token_timeout=0.2,
    idle_timeout=0.2,
    max_attempts=3,
    backoff_initial=0.01,
    backoff_max=0.05,
    retry_after_max=1.0,
)

MakeProvider = Callable[..., Provider]


def chat_request(*turns: str, system: str = "Be brief.", model: str = "fake-model") -> ChatRequest:
    """A request whose messages alternate user/assistant, starting (and ending) with user."""
    messages = tuple(
        Message.user(text) if index % 2 == 0 else Message.assistant(text)
        for index, text in enumerate(turns or ("hello",))
    )
    return ChatRequest(model=model, system=system, messages=messages, max_tokens=256)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s per client; the fake is plain HTTP anyway.
    return httpx.create_ssl_context()


@pytest.fixture
async def http_client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client like the supervisor's (``create_http_client``): an ``UpstreamClient``,
    aiohttp-backed on asyncio.

    Same transports and timeout shape, but one shared SSL context for the session.
    """
    timeout = httpx.Timeout(connect=FAST_POLICY.connect_timeout, read=5.0, write=5.0, pool=5.0)
    transport: httpx.AsyncBaseTransport
    if anyio_backend == "asyncio":
        transport = AiohttpTransport(verify=_ssl_context(), trust_env=False)
    else:
        transport = httpx.AsyncHTTPTransport(verify=_ssl_context(), trust_env=False)
    async with UpstreamClient(transport=transport, timeout=timeout) as client:
        yield client


@pytest.fixture
def make_provider(fake_upstream: FakeUpstream, http_client: httpx.AsyncClient) -> MakeProvider:
    """Build an adapter for ``provider`` aimed at the fake, with its default test key."""

    def make(provider: str, *, api_key: str | None = DEFAULT_API_KEY, **changes: object) -> Provider:
        settings: dict[str, object] = {"base_url": fake_upstream.url, **changes}
        config = ProviderConfig(provider=provider, api_key=api_key, **settings)  # type: ignore[arg-type]
        return create_provider(config, http_client)

    return make
