"""Fixtures for the fault tests: a fake upstream with a clock, and the whole web stack over it.

Everything between the browser and the upstream is real: the Quart app, the
supervisor and its actors, the provider adapters with their retry and deadline
layer, the pooled HTTP client, and the fake upstream speaking each wire format over
HTTP on 127.0.0.1. The upstream policy is scaled down (deadlines of half a second,
backoff of a few milliseconds) so that every fault plays out in well under a second,
except a ``retry-after`` that must be waited out.

Quart's test client is asyncio-only, so these tests run on asyncio.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from werkzeug.datastructures import Headers

from chatbot import Settings, Supervisor, UpstreamPolicy
from chatbot.store import MemoryStore
from chatbot.webapp import create_app
from tests.fakes._http11 import Connection, HTTPRequest
from tests.fakes.upstream import Exchange, FakeUpstream, Flavour, RecordedRequest

__all__ = [
    "PATIENT",
    "POLICY",
    "PROVIDERS",
    "SECRET_KEY",
    "Browser",
    "Stack",
    "TimedUpstream",
    "Timing",
    "message_texts",
    "open_stack",
]

#: Short deadlines and backoff, so a fault costs a fraction of a second, not minutes.
POLICY: Final = UpstreamPolicy(
    first_token_timeout=0.5,
    idle_timeout=0.5,
    total_timeout=5,
    max_attempts=3,
    backoff_initial=0.01,
    backoff_max=0.05,
    retry_after_max=2,
)

#: The same, with deadlines that only a wedged upstream reaches: for the faults that are
#: not about deadlines, so that a busy test machine cannot turn them into timeouts.
PATIENT: Final = attrs.evolve(POLICY, first_token_timeout=10, idle_timeout=10, total_timeout=30)

#: The key every browser connects with; no response, header or message may contain it.
SECRET_KEY: Final = "sk-fault-secret-0123456789abcdef"

#: The fake's flavour and a model it knows, per provider name.
PROVIDERS: Final[dict[str, tuple[Flavour, str]]] = {
    "claude": ("openai", "claude-sonnet-4-20250514"),
    "openai": ("openai", "gpt-4o"),
    "openrouter": ("openrouter", "anthropic/claude-sonnet-4"),
    "ollama": ("ollama", "llama3.2"),
}
_CHAT_PATHS: Final = frozenset({"/v1/messages", "/v1/chat/completions"})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- a fake upstream that notes the time -----------------------------------------------


@attrs.define(eq=False)
class Timing:
    """When a request arrived at the fake and when its response ended (``time.monotonic()``)."""

    arrived: float
    finished: float | None = None


@attrs.define(eq=False)
class TimedUpstream(FakeUpstream):
    """The fake upstream, also noting when each request arrived and when it was done.

    Waits such as ``retry-after`` are then measured on the upstream's side, between
    the attempts it actually received, rather than by the test around the whole turn.
    """

    _timings: list[Timing] = attrs.field(factory=list)

    def reset(self) -> None:
        super().reset()
        self._timings.clear()

    async def _handle(self, connection: Connection, request: HTTPRequest) -> None:
        # The base class records the exchange in the same synchronous step (before
        # its first await), so timings and exchanges stay index-aligned.
        timing = Timing(time.monotonic())
        self._timings.append(timing)
        try:
            await super()._handle(connection, request)
        finally:
            timing.finished = time.monotonic()

    def chat_log(self, message: str) -> list[tuple[Exchange, Timing]]:
        """The chat exchanges whose last user message is ``message``, with their timings."""
        exchanges = self.exchanges
        timings = list(self._timings)
        assert len(exchanges) == len(timings)
        return [
            (exchange, timing)
            for exchange, timing in zip(exchanges, timings, strict=True)
            if exchange.request.path in _CHAT_PATHS and last_user_text(exchange.request) == message
        ]


def _text(content: Any) -> str:
    if isinstance(content, list):  # Anthropic content blocks
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return content if isinstance(content, str) else ""


def message_texts(request: RecordedRequest) -> list[str]:
    """The text of each user and assistant message of a chat request, in order."""
    return [
        _text(item.get("content"))
        for item in request.json.get("messages") or []
        if item.get("role") in ("user", "assistant")
    ]


def last_user_text(request: RecordedRequest) -> str | None:
    """The last user message of a chat request."""
    users = [
        _text(item.get("content"))
        for item in request.json.get("messages") or []
        if item.get("role") == "user"
    ]
    return users[-1] if users else None


@pytest.fixture(scope="session")
def timed_upstream_server() -> Iterator[TimedUpstream]:
    """One fake for the session; any key is accepted (a 401 is scripted when wanted)."""
    server = TimedUpstream(api_key=None)
    with server:
        yield server


@pytest.fixture
def upstream(timed_upstream_server: TimedUpstream) -> Iterator[TimedUpstream]:
    """The session's fake, reset for this test; it checks that the script was used up."""
    timed_upstream_server.reset()
    yield timed_upstream_server
    leftover = timed_upstream_server.pending
    timed_upstream_server.reset()
    assert leftover == 0, f"{leftover} scripted upstream behaviour(s) were never used"


# -- the web stack ----------------------------------------------------------------------


@attrs.define
class Browser:
    """One browser session, connected to a provider, with its current conversation."""

    client: TestClientProtocol
    conversation_id: str
    seen: list[str] = attrs.field(factory=list)

    async def chat(self, message: str) -> tuple[int, dict[str, Any], Headers]:
        """``POST /api/chat``: status, JSON body and headers."""
        response = await self.client.post(
            "/api/chat", json={"message": message, "conversation_id": self.conversation_id}
        )
        text = await response.get_data(as_text=True)
        self.seen.append(text + str(response.headers))
        return response.status_code, json.loads(text), response.headers

    async def stream(self, message: str) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """``POST /api/chat/stream``: status and the events (a JSON error counts as one)."""
        response = await self.client.post(
            "/api/chat/stream", json={"message": message, "conversation_id": self.conversation_id}
        )
        text = await response.get_data(as_text=True)
        self.seen.append(text + str(response.headers))
        if response.content_type != "text/event-stream":
            return response.status_code, [("json", json.loads(text))]
        events = []
        for block in text.split("\n\n"):
            if not block.strip():
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields["event"], json.loads(fields["data"])))
        return response.status_code, events

    async def history(self) -> list[tuple[str, str]]:
        """The stored messages of the conversation, as (role, content)."""
        response = await self.client.get(f"/api/conversations/{self.conversation_id}")
        assert response.status_code == 200
        text = await response.get_data(as_text=True)
        self.seen.append(text)
        return [(m["role"], m["content"]) for m in json.loads(text)["messages"]]


@attrs.define
class Stack:
    app: Quart
    supervisor: Supervisor
    upstream: TimedUpstream

    async def browser(self, provider: str) -> Browser:
        """A new browser session, connected to ``provider`` at the fake."""
        flavour, model = PROVIDERS[provider]
        self.upstream.flavour = flavour
        client = self.app.test_client()
        response = await client.post(
            "/api/connect",
            json={
                "provider": provider,
                "model": model,
                "api_key": SECRET_KEY,
                "base_url": self.upstream.url,
            },
        )
        body = await response.get_data(as_text=True)
        assert response.status_code == 200, body
        return Browser(client, json.loads(body)["conversation_id"])


@asynccontextmanager
async def open_stack(upstream: TimedUpstream, policy: UpstreamPolicy) -> AsyncIterator[Stack]:
    """The app over a running supervisor with the real adapters and HTTP client."""
    settings = Settings(policy=policy)
    async with Supervisor(
        store=MemoryStore(), policy=policy, limits=settings.limits, shutdown_grace=1.0
    ) as supervisor:
        yield Stack(create_app(supervisor, settings), supervisor, upstream)
