"""OpenTelemetry spans: HTTP request → turn → upstream call, GenAI attributes, propagation."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chatbot import (
    ConfigError,
    Message,
    ProviderConfig,
    Settings,
    Supervisor,
    UpstreamPolicy,
    UpstreamUnavailable,
    Usage,
)
from chatbot.providers import ChatRequest, StreamEnd
from chatbot.telemetry import Telemetry
from chatbot.telemetry.tracing import tracer_provider_from_env
from tests.fakes.scripted import ScriptedProvider
from tests.fakes.upstream import DEFAULT_API_KEY, Fail, FakeUpstream

from .helpers import build_app, spans_by_name

pytestmark = pytest.mark.anyio

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"


def _openai(upstream: FakeUpstream) -> ProviderConfig:
    return ProviderConfig(
        provider="openai",
        model="gpt-4o",
        api_key=DEFAULT_API_KEY,
        base_url=upstream.url,
        max_tokens=256,
    )


async def test_http_turn_and_upstream_spans_share_the_callers_trace(
    fake_upstream: FakeUpstream, traced_telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    async with Supervisor(
        default_config=_openai(fake_upstream), instrumentation=traced_telemetry.instrumentation
    ) as sup:
        app = build_app(sup, traced_telemetry)
        response = await app.test_client().post(
            "/chat/conv-1", json={"message": "hello"}, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200, await response.get_data(as_text=True)

    spans = spans_by_name(span_exporter.get_finished_spans())
    assert set(spans) == {"POST /chat/<conversation_id>", "chat gpt-4o", "upstream chat gpt-4o"}
    server, turn, upstream = (
        spans["POST /chat/<conversation_id>"],
        spans["chat gpt-4o"],
        spans["upstream chat gpt-4o"],
    )
    assert (server.kind, turn.kind, upstream.kind) == (
        SpanKind.SERVER,
        SpanKind.INTERNAL,
        SpanKind.CLIENT,
    )
    for span in (server, turn, upstream):
        assert format(span.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert turn.parent is not None and turn.parent.span_id == server.context.span_id
    assert upstream.parent is not None and upstream.parent.span_id == turn.context.span_id

    assert server.attributes is not None
    assert server.attributes["http.route"] == "/chat/<conversation_id>"
    assert server.attributes["http.response.status_code"] == 200

    for span in (turn, upstream):
        attributes = span.attributes
        assert attributes is not None
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == "gpt-4o"
        assert attributes["gen_ai.request.max_tokens"] == 256
        assert attributes["gen_ai.usage.input_tokens"] > 0  # type: ignore[operator]
        assert attributes["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
        assert attributes["chatbot.turn.outcome"] == "ok"
        assert "error.type" not in attributes
        assert "gen_ai.input.messages" not in attributes  # content is off by default
    assert turn.attributes is not None and turn.attributes["gen_ai.conversation.id"] == "conv-1"
    assert upstream.end_time is not None and turn.end_time is not None
    assert upstream.end_time <= turn.end_time

    # The upstream request carried the upstream span's context.
    (sent,) = fake_upstream.chat_requests
    assert sent.headers["traceparent"] == f"00-{TRACE_ID}-{upstream.context.span_id:016x}-01"


async def test_streamed_reply_is_inside_the_request_span(
    fake_upstream: FakeUpstream, traced_telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    """The server span lasts until the last SSE byte, and the turn is its child."""
    from chatbot.webapp import create_app

    connect = {
        "provider": "openai",
        "api_key": DEFAULT_API_KEY,
        "model": "gpt-4o",
        "base_url": fake_upstream.url,
    }
    settings = Settings(allowed_base_urls=(fake_upstream.url,))
    async with Supervisor(instrumentation=traced_telemetry.instrumentation) as sup:
        client = create_app(sup, settings, telemetry=traced_telemetry).test_client()
        assert (await client.post("/api/connect", json=connect)).status_code == 200
        response = await client.post(
            "/api/chat/stream", json={"message": "hi"}, headers={"traceparent": TRACEPARENT}
        )
        assert "event: done" in await response.get_data(as_text=True)

    spans = {span.name: span for span in span_exporter.get_finished_spans()}
    server, turn = spans["POST /api/chat/stream"], spans["chat gpt-4o"]
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert turn.parent is not None and turn.parent.span_id == server.context.span_id
    assert server.end_time is not None and turn.end_time is not None
    assert server.end_time >= turn.end_time
    (sent,) = fake_upstream.chat_requests
    assert sent.headers["traceparent"].startswith(f"00-{TRACE_ID}-")


async def test_failed_upstream_marks_the_spans(
    fake_upstream: FakeUpstream, traced_telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    fake_upstream.enqueue(Fail(status=401, message="Incorrect API key provided."))
    async with Supervisor(
        default_config=_openai(fake_upstream), instrumentation=traced_telemetry.instrumentation
    ) as sup:
        response = (
            await build_app(sup, traced_telemetry)
            .test_client()
            .post("/chat/c", json={"message": "hi"})
        )
        assert response.status_code == 502

    spans = spans_by_name(span_exporter.get_finished_spans())
    for name in ("chat gpt-4o", "upstream chat gpt-4o"):
        span = spans[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description is not None
        assert span.status.description.startswith("upstream_auth_failed: ")
        assert span.attributes is not None
        assert span.attributes["error.type"] == "AuthenticationFailed"
        assert span.attributes["chatbot.turn.outcome"] == "upstream_auth_failed"
        assert "gen_ai.usage.input_tokens" not in span.attributes


async def test_no_trace_context_goes_upstream_when_tracing_is_off(
    fake_upstream: FakeUpstream,
) -> None:
    telemetry = Telemetry.from_settings(Settings(), environ={})
    async with Supervisor(
        default_config=_openai(fake_upstream), instrumentation=telemetry.instrumentation
    ) as sup:
        response = (
            await build_app(sup, telemetry)
            .test_client()
            .post("/chat/c", json={"message": "hi"}, headers={"traceparent": TRACEPARENT})
        )
        assert response.status_code == 200
    (sent,) = fake_upstream.chat_requests
    assert "traceparent" not in sent.headers


class TestOnEveryBackend:
    """The actor side of tracing is backend-neutral core code: check it on trio too."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    async def test_turn_continues_the_callers_span(
        self,
        traced_telemetry: Telemetry,
        tracer_provider: TracerProvider,
        span_exporter: InMemorySpanExporter,
    ) -> None:
        provider = ScriptedProvider()
        provider.enqueue(UpstreamUnavailable("overloaded", provider="ollama", status=529))
        provider.enqueue("Hi", StreamEnd(usage=Usage(5, 2), stop_reason="stop", model="m1-0613"))
        tracer = tracer_provider.get_tracer("test")
        async with Supervisor(
            provider_factory=provider.factory,
            default_config=ProviderConfig(provider="ollama", model="m1"),
            policy=UpstreamPolicy(backoff_initial=0.001, backoff_max=0.001),
            instrumentation=traced_telemetry.instrumentation,
        ) as sup:
            with tracer.start_as_current_span("caller") as caller:
                await sup.chat("c1", "hello")
            # Outside any span, a turn starts a trace of its own.
            await sup.chat("c2", "hello")

        spans = span_exporter.get_finished_spans()
        turns = [s for s in spans if s.name == "chat m1"]
        upstreams = [s for s in spans if s.name == "upstream chat m1"]
        assert len(turns) == len(upstreams) == 2
        first, second = turns
        assert (
            first.parent is not None and first.parent.span_id == caller.get_span_context().span_id
        )
        assert first.context.trace_id == caller.get_span_context().trace_id
        assert second.parent is None and second.context.trace_id != first.context.trace_id
        assert [u.parent.span_id for u in upstreams if u.parent] == [
            first.context.span_id,
            second.context.span_id,
        ]
        assert first.attributes is not None
        assert first.attributes["gen_ai.system"] == "ollama"
        assert first.attributes["gen_ai.usage.input_tokens"] == 5
        assert first.attributes["gen_ai.usage.output_tokens"] == 2
        retry_events = [e for e in upstreams[0].events if e.name == "retry"]
        assert len(retry_events) == 1
        assert retry_events[0].attributes is not None
        assert retry_events[0].attributes["error.type"] == "UpstreamUnavailable"
        assert [e.name for e in first.events] == ["first_token"]


def _recorded_turn(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> Mapping[str, object]:
    """Drive a recorder through a whole turn by hand and return the turn span's attributes."""
    config = ProviderConfig(provider="openai", model="gpt-4o", api_key="sk-test-000000000000")
    request = ChatRequest(
        model="gpt-4o", system="Be brief.", messages=(Message.user("What is 2+2?"),), max_tokens=64
    )
    instrumentation = telemetry.instrumentation
    with instrumentation.turn("c1", config, instrumentation.capture_context()) as recorder:
        recorder.request(request)  # type: ignore[attr-defined]
        with recorder.upstream_attempt():
            recorder.first_token()
        recorder.response(StreamEnd(model="gpt-4o-2024-08-06", stop_reason="stop"), "4")  # type: ignore[attr-defined]
        recorder.finished("ok", Usage(9, 1), None)
    spans = spans_by_name(span_exporter.get_finished_spans())
    upstream = spans["upstream chat gpt-4o"]
    turn = spans["chat gpt-4o"]
    assert upstream.attributes is not None and turn.attributes is not None
    assert upstream.attributes.get("gen_ai.input.messages") == turn.attributes.get(
        "gen_ai.input.messages"
    )
    return turn.attributes


def test_response_attributes_and_no_content_by_default(
    traced_telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    attributes = _recorded_turn(traced_telemetry, span_exporter)
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert not {k for k in attributes if k.endswith(("messages", "instructions"))}


def test_content_is_recorded_only_when_enabled(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = Telemetry.from_settings(
        Settings(record_content_in_traces=True), environ={}, tracer_provider=tracer_provider
    )
    attributes = _recorded_turn(telemetry, span_exporter)
    assert attributes["gen_ai.system_instructions"] == "Be brief."
    assert "What is 2+2?" in str(attributes["gen_ai.input.messages"])
    assert '"content": "4"' in str(attributes["gen_ai.output.messages"])


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "chatbot"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_tracing_stays_off(environ: dict[str, str]) -> None:
    assert tracer_provider_from_env(environ) is None
    telemetry = Telemetry.from_settings(Settings(), environ=environ)
    assert telemetry.tracing is None
    # Nothing follows a message into the actor but a timestamp.
    assert getattr(telemetry.instrumentation.capture_context(), "context", "missing") is None


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "OTLPSpanExporter"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
            "OTLPSpanExporter",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "OTLPSpanExporter"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "ConsoleSpanExporter"),
    ],
)
def test_tracing_turns_on_from_otel_variables(environ: dict[str, str], exporter: str) -> None:
    provider = tracer_provider_from_env(environ)
    assert provider is not None
    try:
        processors = provider._active_span_processor._span_processors
        assert [type(p.span_exporter).__name__ for p in processors] == [exporter]  # type: ignore[attr-defined]
        assert provider.resource.attributes["service.name"] == "chatbot"
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in environ:
            assert processors[0].span_exporter._endpoint == "http://127.0.0.1:4318/v1/traces"  # type: ignore[attr-defined]
    finally:
        provider.shutdown()
    # The process-wide provider is left alone.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_unsupported_otel_settings_are_config_errors(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Telemetry.from_settings(Settings(), environ=environ)
    assert caught.value.variable == variable
