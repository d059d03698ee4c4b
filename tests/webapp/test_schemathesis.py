"""schemathesis against ``/openapi.json``: every check, no 5xx, every response as documented.

The app runs under Hypercorn on a thread of its own (the supervisor's loop), with a
scripted provider configured by the server, so chats succeed and their responses
are checked too. Every generated request carries one browser session's cookie, so
what a request creates, the next ones can find (``use_after_free`` and friends).

Two operations validate more than a JSON Schema can say, and may refuse
schema-valid input with 400/422: ``/api/connect`` (whether a key is needed depends
on the provider; the base URL must be on the allow-list) and the import (messages
must alternate between user and assistant). Only for those is 400/422 accepted as
an answer to valid data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from chatbot import ProviderConfig, Settings, Supervisor, UpstreamPolicy
from chatbot.server import open_listener, run_app
from chatbot.store import MemoryStore
from chatbot.webapp import create_app
from tests.fakes.scripted import ScriptedProvider

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 15

CONFIG = """
[generation]
max-examples = {max_examples}

[[operations]]
include-path = "/api/connect"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409", "422"]

[[operations]]
include-path = "/api/conversations/import"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
"""


class LiveServer:
    """The app on 127.0.0.1 in a background thread, until :meth:`stop`."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stop: anyio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="schemathesis-server", daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError("the server did not start") from self._error
        return self

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            anyio.from_thread.run_sync(self._stop.set, token=self._token)
        self._thread.join(15)

    def _run(self) -> None:
        try:
            anyio.run(self._serve, backend="asyncio")
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._stop = anyio.Event()
        settings = Settings(provider=ProviderConfig(provider="ollama", model="llama-test"))
        provider = ScriptedProvider()
        listener = open_listener("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with Supervisor(
            store=MemoryStore(),
            default_config=settings.provider,
            provider_factory=provider.factory,
            policy=UpstreamPolicy(max_attempts=1),
            shutdown_grace=1.0,
        ) as supervisor:
            app = create_app(supervisor, settings)
            self._ready.set()
            await run_app(app, listener, stop=self._stop)


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def session_cookie(live_server: LiveServer) -> str:
    response = httpx.get(f"{live_server.url}/api/status", timeout=10)
    return f"chatbot_session={response.cookies['chatbot_session']}"


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without serving (the same one it serves)."""
    app = create_app(Supervisor(), Settings())
    document: dict[str, Any] = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    return document


schema = schemathesis.openapi.from_dict(
    _document(), config=schemathesis.Config.from_str(CONFIG.format(max_examples=MAX_EXAMPLES))
)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api(case: Any, live_server: LiveServer, session_cookie: str) -> None:
    case.call_and_validate(base_url=live_server.url, headers={"Cookie": session_cookie}, timeout=10)


def test_every_operation_is_documented(live_server: LiveServer) -> None:
    document = httpx.get(f"{live_server.url}/openapi.json", timeout=10).json()
    operations = {
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
    }
    assert operations == {
        ("GET", "/api/status"),
        ("GET", "/api/providers"),
        ("POST", "/api/connect"),
        ("GET", "/api/models"),
        ("POST", "/api/login"),
        ("POST", "/api/chat"),
        ("POST", "/api/chat/stream"),
        ("POST", "/api/stop"),
        ("GET", "/api/conversations"),
        ("POST", "/api/conversations"),
        ("POST", "/api/conversations/import"),
        ("GET", "/api/conversations/{conversation_id}"),
        ("PATCH", "/api/conversations/{conversation_id}"),
        ("DELETE", "/api/conversations/{conversation_id}"),
        ("GET", "/api/conversations/{conversation_id}/export"),
    }
    chat = document["paths"]["/api/chat"]["post"]
    assert chat["requestBody"]["required"] is True
    assert {"400", "401", "403", "404", "409", "413", "415", "422", "429", "502", "504"} <= set(
        map(str, chat["responses"])
    )
    stream = document["paths"]["/api/chat/stream"]["post"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    export = document["paths"]["/api/conversations/{conversation_id}/export"]["get"]
    assert set(export["responses"]["200"]["content"]) == {"application/json", "text/markdown"}
