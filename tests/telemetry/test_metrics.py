"""Prometheus metrics: what moves after turns, labels, health and readiness endpoints."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatbot import (
    AuthenticationFailed,
    ProviderConfig,
    Settings,
    StoreError,
    Supervisor,
    UpstreamPolicy,
    UpstreamUnavailable,
    Usage,
)
from chatbot.providers import StreamEnd
from chatbot.store import MemoryStore
from chatbot.telemetry import Telemetry
from chatbot.telemetry.metrics import MAX_MODELS, Metrics
from chatbot.telemetry.tracing import Tracing
from tests.fakes.scripted import ScriptedProvider

from .helpers import build_app, sample, scrape

pytestmark = pytest.mark.anyio

LOCAL = ProviderConfig(provider="ollama", model="m1")
FAST_RETRY = UpstreamPolicy(backoff_initial=0.001, backoff_max=0.001)


def _telemetry() -> Telemetry:
    return Telemetry.from_settings(Settings(), environ={})


async def test_counters_move_after_a_turn() -> None:
    telemetry = _telemetry()
    provider = ScriptedProvider()
    provider.enqueue("Hel", "lo", StreamEnd(usage=Usage(11, 7), stop_reason="end_turn"))
    async with Supervisor(
        provider_factory=provider.factory,
        default_config=LOCAL,
        instrumentation=telemetry.instrumentation,
    ) as sup:
        app = build_app(sup, telemetry)
        before = await scrape(app)
        assert (
            sample(
                before,
                "chatbot_turn_duration_seconds_count",
                provider="ollama",
                model="m1",
                outcome="ok",
            )
            is None
        )
        assert sample(before, "chatbot_live_actors") == 0

        response = await app.test_client().post("/chat/c1", json={"message": "hi"})
        assert (await response.get_json())["text"] == "Hello"
        after = await scrape(app)

    labels = {"provider": "ollama", "model": "m1"}
    assert sample(after, "chatbot_turn_duration_seconds_count", outcome="ok", **labels) == 1
    assert sample(after, "chatbot_time_to_first_token_seconds_count", **labels) == 1
    assert (
        sample(after, "chatbot_upstream_request_duration_seconds_count", outcome="ok", **labels)
        == 1
    )
    assert sample(after, "chatbot_tokens_total", direction="input", **labels) == 11
    assert sample(after, "chatbot_tokens_total", direction="output", **labels) == 7
    assert sample(after, "chatbot_live_actors") == 1
    assert sample(after, "chatbot_inbox_depth") == 0
    assert sample(after, "chatbot_actors_spawned_total") == 1
    assert sample(after, "chatbot_actor_restarts_total") == 0
    assert (
        sample(
            after,
            "chatbot_http_requests_total",
            route="/chat/<conversation_id>",
            method="POST",
            status="200",
        )
        == 1
    )
    # The scrape before the turn is counted too, under its own route.
    assert (
        sample(after, "chatbot_http_requests_total", route="/metrics", method="GET", status="200")
        == 1
    )
    assert (
        sample(
            after,
            "chatbot_http_request_duration_seconds_count",
            route="/chat/<conversation_id>",
            method="POST",
        )
        == 1
    )


async def test_failed_turn_is_counted_by_error_code() -> None:
    telemetry = _telemetry()
    provider = ScriptedProvider()
    provider.enqueue(
        AuthenticationFailed(
            "OpenAI refused the API key (HTTP 401).", provider="ollama", status=401
        )
    )
    async with Supervisor(
        provider_factory=provider.factory,
        default_config=LOCAL,
        instrumentation=telemetry.instrumentation,
    ) as sup:
        app = build_app(sup, telemetry)
        response = await app.test_client().post("/chat/c1", json={"message": "hi"})
        assert response.status_code == 502
        samples = await scrape(app)

    assert sample(samples, "chatbot_errors_total", code="upstream_auth_failed") == 1
    assert (
        sample(
            samples,
            "chatbot_turn_duration_seconds_count",
            provider="ollama",
            model="m1",
            outcome="upstream_auth_failed",
        )
        == 1
    )
    assert (
        sample(
            samples,
            "chatbot_upstream_request_duration_seconds_count",
            provider="ollama",
            model="m1",
            outcome="upstream_auth_failed",
        )
        == 1
    )
    assert (
        sample(samples, "chatbot_time_to_first_token_seconds_count", provider="ollama", model="m1")
        is None
    )


async def test_retries_are_counted() -> None:
    telemetry = _telemetry()
    provider = ScriptedProvider()
    provider.enqueue(UpstreamUnavailable("down", provider="ollama", status=503))
    provider.enqueue("ok", StreamEnd())
    async with Supervisor(
        provider_factory=provider.factory,
        default_config=LOCAL,
        policy=FAST_RETRY,
        instrumentation=telemetry.instrumentation,
    ) as sup:
        reply = await sup.chat("c1", "hi")
        assert reply.text == "ok"
        samples = await scrape(build_app(sup, telemetry))

    assert sample(samples, "chatbot_upstream_retries_total", provider="ollama", model="m1") == 1
    assert (
        sample(
            samples,
            "chatbot_turn_duration_seconds_count",
            provider="ollama",
            model="m1",
            outcome="ok",
        )
        == 1
    )


async def test_actor_crash_is_counted_and_restart_reported() -> None:
    """A bug in a provider crashes the actor: the turn is recorded, the restart shows."""
    telemetry = _telemetry()
    provider = ScriptedProvider()
    provider.enqueue(RuntimeError("a bug"))
    async with Supervisor(
        provider_factory=provider.factory,
        default_config=LOCAL,
        instrumentation=telemetry.instrumentation,
    ) as sup:
        app = build_app(sup, telemetry)
        response = await app.test_client().post("/chat/c1", json={"message": "hi"})
        assert (await response.get_json())["code"] == "actor_crashed"
        samples = await scrape(app)

    assert sample(samples, "chatbot_errors_total", code="actor_crashed") == 1
    assert sample(samples, "chatbot_actor_restarts_total") == 1


async def test_route_label_is_the_template_not_the_path() -> None:
    telemetry = _telemetry()
    async with Supervisor(
        provider_factory=ScriptedProvider().factory,
        default_config=LOCAL,
        instrumentation=telemetry.instrumentation,
    ) as sup:
        app = build_app(sup, telemetry)
        client = app.test_client()
        for conversation in ("a", "b", "c"):
            assert (
                await client.post(f"/chat/{conversation}", json={"message": "x"})
            ).status_code == 200
        assert (await client.get("/no/such/page/12345")).status_code == 404
        brewed = await client.open("/healthz", method="BREW")  # type: ignore[call-arg]
        assert brewed.status_code == 405
        samples = await scrape(app)

    routes = {
        dict(labels).get("route")
        for name, labels in samples
        if name == "chatbot_http_requests_total"
    }
    assert routes == {"/chat/<conversation_id>", "unmatched"}
    assert (
        sample(
            samples,
            "chatbot_http_requests_total",
            route="/chat/<conversation_id>",
            method="POST",
            status="200",
        )
        == 3
    )
    assert (
        sample(
            samples, "chatbot_http_requests_total", route="unmatched", method="GET", status="404"
        )
        == 1
    )
    # An unknown method is one label value, whatever the client sent.
    assert (
        sample(
            samples, "chatbot_http_requests_total", route="unmatched", method="_OTHER", status="405"
        )
        == 1
    )


async def test_two_apps_keep_separate_counts() -> None:
    first, second = _telemetry(), _telemetry()
    async with Supervisor(
        provider_factory=ScriptedProvider().factory,
        default_config=LOCAL,
        instrumentation=first.instrumentation,
    ) as sup:
        app_one, app_two = build_app(sup, first), build_app(sup, second)
        await app_one.test_client().post("/chat/a", json={"message": "x"})
        one, two = await scrape(app_one), await scrape(app_two)

    route = {"route": "/chat/<conversation_id>", "method": "POST", "status": "200"}
    assert sample(one, "chatbot_http_requests_total", **route) == 1
    assert sample(two, "chatbot_http_requests_total", **route) is None


def test_model_label_values_are_bounded() -> None:
    metrics = Metrics()
    labels = [metrics.model_label("openai", f"model-{i}") for i in range(MAX_MODELS + 5)]
    assert labels[:MAX_MODELS] == [f"model-{i}" for i in range(MAX_MODELS)]
    assert set(labels[MAX_MODELS:]) == {"other"}
    assert metrics.model_label("openai", "model-0") == "model-0"
    assert metrics.model_label("claude", "model-999") == "model-999"  # bounded per provider


async def test_metrics_speak_openmetrics_when_asked() -> None:
    telemetry = _telemetry()
    async with Supervisor(instrumentation=telemetry.instrumentation) as sup:
        app = build_app(sup, telemetry)
        response = await app.test_client().get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.content_type.startswith("application/openmetrics-text")
    text = await response.get_data(as_text=True)
    assert text.rstrip().endswith("# EOF")
    families = {family.name: family for family in text_string_to_metric_families(text.replace("# EOF", ""))}
    assert "chatbot_live_actors" in families
    (blocks,) = families["chatbot_python_allocated_blocks"].samples
    assert blocks.value > 10_000  # the interpreter's own objects, at the least


async def test_healthz_and_readyz() -> None:
    telemetry = _telemetry()
    sup = Supervisor(instrumentation=telemetry.instrumentation)
    async with sup:
        app = build_app(sup, telemetry)
        client = app.test_client()
        health = await client.get("/healthz")
        assert (health.status_code, await health.get_json()) == (200, {"ok": True})
        ready = await client.get("/readyz")
        assert (ready.status_code, await ready.get_json()) == (200, {"ok": True})
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    body = await not_ready.get_json()
    assert body["ok"] is False and body["code"] == "shutting_down"
    assert (await client.get("/healthz")).status_code == 200


async def test_readyz_fails_when_the_store_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = _telemetry()
    store = MemoryStore()

    async def unreachable() -> None:
        raise StoreError("The database is unreachable.")

    monkeypatch.setattr(store, "ping", unreachable)
    async with Supervisor(store=store, instrumentation=telemetry.instrumentation) as sup:
        response = await build_app(sup, telemetry).test_client().get("/readyz")
    assert response.status_code == 503
    assert await response.get_json() == {
        "ok": False,
        "error": "The database is unreachable.",
        "code": "store_error",
    }


def test_tracing_is_off_by_default() -> None:
    telemetry = Telemetry.from_settings(Settings(), environ={})
    assert telemetry.tracing is None
    assert isinstance(Telemetry.from_settings(Settings(), environ={}).metrics, Metrics)
    assert Tracing.from_env({}) is None


async def test_web_app_counts_turns_and_routes() -> None:
    """The full web app: connect, chat, stream; then /metrics shows all of it."""
    from chatbot.webapp import create_app

    telemetry = _telemetry()
    provider = ScriptedProvider()
    provider.enqueue("Hi", StreamEnd(usage=Usage(3, 1)))
    provider.enqueue("A", "gain", StreamEnd(usage=Usage(6, 2)))
    settings = Settings()
    async with Supervisor(
        provider_factory=provider.factory, instrumentation=telemetry.instrumentation
    ) as sup:
        app = create_app(sup, settings, telemetry=telemetry)
        client = app.test_client()
        connected = await client.post("/api/connect", json={"provider": "ollama", "model": "m2"})
        assert connected.status_code == 200, await connected.get_data(as_text=True)
        assert (await client.post("/api/chat", json={"message": "hello"})).status_code == 200
        streamed = await client.post("/api/chat/stream", json={"message": "again"})
        assert "event: done" in await streamed.get_data(as_text=True)
        samples = await scrape(app)

    labels = {"provider": "ollama", "model": "m2"}
    assert sample(samples, "chatbot_turn_duration_seconds_count", outcome="ok", **labels) == 2
    assert sample(samples, "chatbot_tokens_total", direction="input", **labels) == 9
    assert sample(samples, "chatbot_tokens_total", direction="output", **labels) == 3
    for route in ("/api/connect", "/api/chat", "/api/chat/stream"):
        assert (
            sample(samples, "chatbot_http_requests_total", route=route, method="POST", status="200")
            == 1
        )
    assert sample(samples, "chatbot_live_actors") == 1
