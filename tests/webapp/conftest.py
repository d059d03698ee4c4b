"""Fixtures for the web API: an app over a running supervisor, with a scripted provider.

Quart is asyncio-only, so every test here runs on asyncio. ``open_web`` builds an
app with any settings; the ``web`` fixture is the common case (no server-configured
provider, so a browser must connect first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from chatbot import Limits, ProviderConfig, Settings, Supervisor, UpstreamPolicy
from chatbot.store import MemoryStore, Store
from chatbot.webapp import create_app
from tests.fakes.scripted import ScriptedProvider

CANARY_KEY = "sk-canary-XYZ"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@attrs.define
class Web:
    """A running app and what it is built on."""

    app: Quart
    supervisor: Supervisor
    provider: ScriptedProvider
    store: Store
    settings: Settings

    def client(self) -> TestClientProtocol:
        """A new browser: its own cookie jar."""
        return self.app.test_client()

    async def connected_client(self, **connect: Any) -> TestClientProtocol:
        """A browser that connected to the (scripted) OpenAI provider with the canary key."""
        client = self.client()
        body = {"provider": "openai", "model": "gpt-test", "api_key": CANARY_KEY, **connect}
        response = await client.post("/api/connect", json=body)
        assert response.status_code == 200, await response.get_data(as_text=True)
        return client


@asynccontextmanager
async def open_web(
    *,
    settings: Settings | None = None,
    provider: ScriptedProvider | None = None,
    store: Store | None = None,
    **supervisor_options: Any,
) -> AsyncIterator[Web]:
    settings = settings or Settings()
    provider = provider or ScriptedProvider()
    store = store if store is not None else MemoryStore()
    options: dict[str, Any] = {
        "policy": UpstreamPolicy(max_attempts=1, backoff_initial=0.01),
        "shutdown_grace": 1.0,
        "provider_factory": provider.factory,
        **supervisor_options,
    }
    # The scripted provider makes no HTTP calls; a mock transport also skips loading
    # the system's CA certificates for every test.
    async with httpx.AsyncClient(transport=httpx.MockTransport(_no_http)) as mock_client:
        options.setdefault("http_client", mock_client)
        async with Supervisor(
            store=store, default_config=settings.provider, limits=settings.limits, **options
        ) as supervisor:
            app = create_app(supervisor, settings)
            yield Web(app=app, supervisor=supervisor, provider=provider, store=store, settings=settings)


def _no_http(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected HTTP request to {request.url}")


@pytest.fixture
async def web() -> AsyncIterator[Web]:
    async with open_web() as opened:
        yield opened


@pytest.fixture
async def served() -> AsyncIterator[Web]:
    """An app whose server configures the provider: browsers start connected."""
    settings = Settings(provider=ProviderConfig(provider="ollama", model="llama-test"))
    async with open_web(settings=settings) as opened:
        yield opened


def settings_with(**changes: Any) -> Settings:
    """Default settings with some fields (or ``limits`` fields) changed."""
    limits = {k: changes.pop(k) for k in list(changes) if k in attrs.fields_dict(Limits)}
    return Settings(limits=Limits(**limits), **changes)
