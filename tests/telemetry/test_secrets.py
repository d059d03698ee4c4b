"""A canary API key, used everywhere a key goes, must never come out anywhere else.

The key is used to connect, list models, chat, chat against an upstream that
rejects it and echoes it back (as OpenAI does: "Incorrect API key provided: sk-..."),
all with DEBUG logging on and tracing enabled. Then every log line (as formatted for
operators, and every raw record), the ``/metrics`` exposition, every span's name,
attributes, events and status, and every HTTP response are searched for it.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable, Iterable

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from quart.typing import TestClientProtocol as Client

from chatbot import AuthenticationFailed, ProviderConfig, Settings, Supervisor
from chatbot.telemetry import Telemetry
from tests.fakes.upstream import Fail, FakeUpstream

from .helpers import build_app

pytestmark = pytest.mark.anyio

CANARY = "sk-proj-canary" + secrets.token_hex(16)
# The part of the key a partial echo would still show.
CANARY_TAIL = CANARY[-20:]


def _assert_clean(where: str, texts: Iterable[str]) -> None:
    for text in texts:
        assert CANARY_TAIL not in text, f"the API key leaked into {where}: {text[:500]!r}"


def _span_texts(exporter: InMemorySpanExporter) -> list[str]:
    texts: list[str] = []
    for span in exporter.get_finished_spans():
        texts.append(span.name)
        texts.append(span.status.description or "")
        texts.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
        texts.extend(f"{k}={v!r}" for k, v in span.resource.attributes.items())
    return texts


def _raw_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(str(vars(record)))
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    return texts


async def _texts_of(client: Client, method: str, path: str, **kwargs: object) -> list[str]:
    response = await client.open(path, method=method, **kwargs)  # type: ignore[arg-type]
    body = await response.get_data(as_text=True)
    return [body, str(list(response.headers.items()))]


async def test_canary_key_never_leaks_through_the_core(
    fake_upstream: FakeUpstream,
    traced_telemetry: Telemetry,
    span_exporter: InMemorySpanExporter,
    log_output: Callable[..., io.StringIO],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    logs = log_output(Settings(log_level="DEBUG", log_format="json"))
    fake_upstream.api_key = CANARY
    config = ProviderConfig(
        provider="openai", model="gpt-4o", api_key=CANARY, base_url=fake_upstream.url
    )
    responses: list[str] = []
    errors: list[str] = [repr(config)]

    async with Supervisor(instrumentation=traced_telemetry.instrumentation) as sup:
        app = build_app(sup, traced_telemetry)
        client = app.test_client()
        await sup.connect("c1", config)
        assert "gpt-4o" in await sup.list_models(config)
        responses += await _texts_of(client, "POST", "/chat/c1", json={"message": "hello"})
        async for _ in sup.stream("c1", "and again"):
            pass

        fake_upstream.enqueue(Fail(status=401, message=f"Incorrect API key provided: {CANARY}"))
        with pytest.raises(AuthenticationFailed) as caught:
            await sup.chat("c1", "once more")
        errors += [str(caught.value), repr(caught.value), str(caught.value.args)]
        fake_upstream.enqueue(Fail(status=401, message=f"Incorrect API key provided: {CANARY}"))
        responses += await _texts_of(client, "POST", "/chat/c1", json={"message": "via http"})

        for path in ("/metrics", "/healthz", "/readyz"):
            responses += await _texts_of(client, "GET", path)
        errors.append(repr(await sup.history("c1")))

    # The canary really went upstream and came back in the error bodies.
    assert [r.headers.get("authorization") for r in fake_upstream.chat_requests] == [
        f"Bearer {CANARY}"
    ] * 4
    assert "[redacted]" in errors[1]
    _assert_clean("an error message", errors)
    _assert_clean("an HTTP response", responses)
    _assert_clean("a span", _span_texts(span_exporter))
    _assert_clean("the formatted log", logs.getvalue().splitlines())
    _assert_clean("a log record", _raw_records(caplog))
    assert len(logs.getvalue().splitlines()) >= 4  # DEBUG was on and turns were logged


async def test_canary_key_never_leaks_through_the_web_app(
    fake_upstream: FakeUpstream,
    traced_telemetry: Telemetry,
    span_exporter: InMemorySpanExporter,
    log_output: Callable[..., io.StringIO],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from chatbot.webapp import create_app

    caplog.set_level(logging.DEBUG)
    settings = Settings(
        log_level="DEBUG", log_format="json", allowed_base_urls=(fake_upstream.url,)
    )
    logs = log_output(settings)
    fake_upstream.api_key = CANARY
    connect = {
        "provider": "openai",
        "api_key": CANARY,
        "model": "gpt-4o",
        "base_url": fake_upstream.url,
    }
    responses: list[str] = []

    rejection = Fail(status=401, message=f"Incorrect API key provided: {CANARY}")
    async with Supervisor(instrumentation=traced_telemetry.instrumentation) as sup:
        app = create_app(sup, settings, telemetry=traced_telemetry)
        client = app.test_client()

        async def call(method: str, path: str, status: int, **kwargs: object) -> None:
            response = await client.open(path, method=method, **kwargs)  # type: ignore[arg-type]
            body = await response.get_data(as_text=True)
            assert response.status_code == status, (path, body)
            responses.extend([body, str(list(response.headers.items()))])

        await call("POST", "/api/connect", 200, json=connect)
        await call("GET", "/api/models", 200)
        await call("POST", "/api/chat", 200, json={"message": "hello"})
        await call("POST", "/api/chat/stream", 200, json={"message": "and again"})
        fake_upstream.enqueue(rejection)
        await call("POST", "/api/chat", 502, json={"message": "rejected"})
        fake_upstream.enqueue(rejection)
        await call("POST", "/api/chat/stream", 502, json={"message": "rejected, streaming"})
        fake_upstream.enqueue(rejection)
        await call("GET", "/api/models", 502)
        for path in ("/api/status", "/api/conversations", "/metrics", "/healthz", "/readyz", "/"):
            await call("GET", path, 200)

    assert [r.headers.get("authorization") for r in fake_upstream.requests] == [
        f"Bearer {CANARY}"
    ] * 6
    _assert_clean("an HTTP response", responses)
    _assert_clean("a span", _span_texts(span_exporter))
    _assert_clean("the formatted log", logs.getvalue().splitlines())
    _assert_clean("a log record", _raw_records(caplog))
