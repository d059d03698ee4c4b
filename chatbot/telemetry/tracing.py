"""OpenTelemetry tracing: HTTP request → conversation turn → upstream model call.

Three spans per chat request, linked by W3C trace context:

* ``POST /api/chat`` (``SERVER``), continuing the caller's ``traceparent``;
* ``chat {model}`` (``INTERNAL``), the turn inside the conversation actor. The actor
  runs in another task, so the caller's context travels with the request
  (``Instrumentation.capture_context``) and is restored around the turn;
* ``upstream chat {model}`` (``CLIENT``), the call to the model API, retries
  included; its context goes out in the ``traceparent`` header of the upstream HTTP
  request (an httpx request hook on the supervisor's shared client).

Turn and upstream spans carry the OpenTelemetry GenAI semantic-convention attributes
(``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...).
Message contents are recorded only when ``record_content`` is set
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), and even then pass
through the same key redaction as the logs.

Tracing is off unless the standard variables ask for it: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) selects the OTLP/HTTP exporter, and
``OTEL_TRACES_EXPORTER`` may name ``otlp``, ``console`` or ``none``;
``OTEL_SDK_DISABLED=true`` wins over both. When off, the SDK is not even imported
and no span objects are created. The tracer provider is private to a
:class:`Tracing` (the global one is left alone), so tests can capture spans with an
in-memory exporter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from chatbot._errors import ChatbotError, ConfigError

from .logs import redact

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from chatbot._config import ProviderConfig
    from chatbot._messages import Usage
    from chatbot.providers import ChatRequest, StreamEnd

__all__ = ["Tracing", "TurnTrace", "gen_ai_system", "tracer_provider_from_env"]

_INSTRUMENTATION_NAME: Final = "chatbot"
_SUPPORTED_PROTOCOL: Final = "http/protobuf"


def _version() -> str:
    from chatbot import __version__

    return __version__


# -- configuration from OTEL_* ------------------------------------------------------


def _exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporter names the environment asks for; empty when tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = _endpoint(environ)
    if not raw:
        return ("otlp",) if endpoint else ()
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    unknown = [n for n in names if n not in ("otlp", "console", "none")]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER must be otlp, console or none, got {unknown[0]!r}.",
            variable="OTEL_TRACES_EXPORTER",
        )
    return () if "none" in names else names


def _endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL: the signal-specific variable as is, else base + /v1/traces."""
    specific = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else None


def tracer_provider_from_env(environ: Mapping[str, str]) -> SdkTracerProvider | None:
    """An SDK tracer provider with the exporters ``environ`` asks for, or None (tracing off).

    The resource comes from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
    (``service.name`` defaults to ``chatbot``); sampling from ``OTEL_TRACES_SAMPLER``;
    batching from ``OTEL_BSP_*``; exporter headers and timeouts from
    ``OTEL_EXPORTER_OTLP_*``, all as the SDK reads them.

    Raises:
        ConfigError: an unknown exporter, or an OTLP protocol other than http/protobuf.
    """
    exporters = _exporters(environ)
    if not exporters:
        return None
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or _SUPPORTED_PROTOCOL
    ).strip()
    if "otlp" in exporters and protocol != _SUPPORTED_PROTOCOL:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: chatbot exports "
            "traces over OTLP/HTTP, use http/protobuf (the default).",
            variable="OTEL_EXPORTER_OTLP_PROTOCOL",
        )

    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({SERVICE_VERSION: _version()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "chatbot"}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=_endpoint(environ)))
            )
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


# -- GenAI semantic conventions -------------------------------------------------------


def gen_ai_system(config: ProviderConfig) -> str:
    """The ``gen_ai.system`` value for a provider, as its registry entry declares it."""
    return config.spec.gen_ai_system


def _request_attributes(config: ProviderConfig) -> dict[str, Any]:
    system = gen_ai_system(config)
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": config.model,
        "gen_ai.request.max_tokens": config.max_tokens,
    }


def _error_type(error: BaseException) -> str:
    return type(error).__name__


def _messages_json(messages: Iterable[tuple[str, str]]) -> str:
    return json.dumps(
        [
            {"role": role, "parts": [{"type": "text", "content": redact(text)}]}
            for role, text in messages
        ],
        ensure_ascii=False,
    )


def _now_ns() -> int:
    return time.time_ns()


# -- spans --------------------------------------------------------------------------------


@final
class TurnTrace:
    """The spans of one turn: the turn span, and the upstream span within it.

    The upstream span ends (at the time its block exited) only when the turn's outcome
    is known, so it carries the usage and the outcome too.
    """

    __slots__ = (
        "_config",
        "_content",
        "_record_content",
        "_token",
        "_tracer",
        "_upstream",
        "_upstream_end",
        "_upstream_failed",
        "span",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        conversation_id: str,
        config: ProviderConfig,
        parent: otel_context.Context | None,
        record_content: bool,
    ) -> None:
        self._tracer = tracer
        self._config = config
        self._record_content = record_content
        attributes = _request_attributes(config)
        attributes["gen_ai.conversation.id"] = conversation_id
        self.span = tracer.start_span(
            f"chat {config.model}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        self._upstream: trace.Span | None = None
        self._upstream_end: int | None = None
        self._upstream_failed: BaseException | None = None
        self._content: dict[str, str] = {}

    @property
    def trace_id(self) -> str | None:
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else None

    @contextmanager
    def upstream(self) -> Iterator[trace.Span]:
        span = self._tracer.start_span(
            f"upstream chat {self._config.model}",
            kind=SpanKind.CLIENT,
            attributes={
                **_request_attributes(self._config),
                **self._content,
                "server.address": _host(self._config),
            },
        )
        self._upstream = span
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except Exception as exc:
            self._upstream_failed = exc
            raise
        finally:
            otel_context.detach(token)
            self._upstream_end = _now_ns()

    def retried(self, attempt: int, error: Exception, delay: float) -> None:
        target = self._upstream or self.span
        target.add_event(
            "retry",
            {"attempt": attempt, "error.type": _error_type(error), "delay_seconds": delay},
        )

    def first_token(self) -> None:
        self.span.add_event("first_token")

    def request(self, request: ChatRequest) -> None:
        """Record the prompt (on this span and the upstream span), when content recording is on."""
        if not self._record_content or not self.span.is_recording():
            return
        self._content = {
            "gen_ai.system_instructions": redact(request.system),
            "gen_ai.input.messages": _messages_json(
                (str(m.role), m.content) for m in request.messages
            ),
        }
        self.span.set_attributes(self._content)
        if self._upstream is not None:
            self._upstream.set_attributes(self._content)

    def response(self, end: StreamEnd, text: str) -> None:
        """Record what the upstream said about its reply (and the reply, if enabled)."""
        attributes: dict[str, Any] = {}
        if end.model:
            attributes["gen_ai.response.model"] = end.model
        if end.stop_reason:
            attributes["gen_ai.response.finish_reasons"] = (end.stop_reason,)
        if self._record_content:
            attributes["gen_ai.output.messages"] = _messages_json((("assistant", text),))
        self.span.set_attributes(attributes)
        if self._upstream is not None:
            self._upstream.set_attributes(attributes)

    def finish(self, outcome: str, usage: Usage | None, error: Exception | None) -> None:
        """Set the outcome on both spans and end the upstream span."""
        attributes: dict[str, Any] = {"chatbot.turn.outcome": outcome}
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        if error is not None:
            attributes["error.type"] = _error_type(error)
        for span in (self.span, self._upstream):
            if span is None:
                continue
            span.set_attributes(attributes)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, _describe(error)))
        self._end_upstream()

    def close(self, exc: BaseException | None) -> None:
        """End the turn span (and the upstream span, if :meth:`finish` never ran)."""
        if isinstance(exc, Exception):
            self.span.set_attribute("error.type", _error_type(exc))
            self.span.set_status(Status(StatusCode.ERROR, _describe(exc)))
        self._end_upstream()
        otel_context.detach(self._token)
        self.span.end()

    def _end_upstream(self) -> None:
        span, self._upstream = self._upstream, None
        if span is None:
            return
        failed = self._upstream_failed
        if failed is not None and not isinstance(failed, ChatbotError):
            span.set_attribute("error.type", _error_type(failed))
            span.set_status(Status(StatusCode.ERROR, _describe(failed)))
        span.end(end_time=self._upstream_end)


def _describe(error: BaseException) -> str:
    if isinstance(error, ChatbotError):
        return f"{error.code}: {redact(str(error))}"
    return _error_type(error)


def _host(config: ProviderConfig) -> str:
    return config.base_url.partition("://")[2].partition("/")[0]


@final
class Tracing:
    """A tracer over a private provider, and the hooks that carry trace context."""

    def __init__(self, provider: trace.TracerProvider, *, record_content: bool = False) -> None:
        self.provider = provider
        self.record_content = record_content
        self.tracer = provider.get_tracer(_INSTRUMENTATION_NAME, _version())

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, record_content: bool = False
    ) -> Tracing | None:
        """Tracing as the ``OTEL_*`` variables configure it, or None when it is off.

        Raises:
            ConfigError: see :func:`tracer_provider_from_env`.
        """
        provider = tracer_provider_from_env(environ)
        return None if provider is None else cls(provider, record_content=record_content)

    def current_context(self) -> otel_context.Context:
        return otel_context.get_current()

    def turn(
        self, conversation_id: str, config: ProviderConfig, parent: otel_context.Context | None
    ) -> TurnTrace:
        """Start a turn span under ``parent`` and make it current; end it with ``close``."""
        return TurnTrace(self.tracer, conversation_id, config, parent, self.record_content)

    # -- HTTP server side --------------------------------------------------------------

    def start_server_span(
        self, method: str, path: str, scheme: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[trace.Span, object]:
        """Continue the caller's trace (``traceparent``) with a SERVER span, made current.

        Returns:
            The span and a token for :meth:`end_server_span`.
        """
        carrier: dict[str, str] = {}
        for name, value in headers:
            carrier[name.decode("latin-1").lower()] = value.decode("latin-1")
        parent = propagate.extract(carrier)
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path, "url.scheme": scheme},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def name_server_span(span: trace.Span, method: str, route: str) -> None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)

    @staticmethod
    def end_server_span(span: trace.Span, token: object, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status))
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()

    # -- upstream client side -------------------------------------------------------

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        """Add a request hook that sends the current trace context upstream (idempotent)."""
        hooks = client.event_hooks["request"]
        if _inject_trace_context not in hooks:
            hooks.append(_inject_trace_context)

    def shutdown(self) -> None:
        """Flush and stop the exporters (the SDK also does this at interpreter exit)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


async def _inject_trace_context(request: httpx.Request) -> None:
    """httpx request hook: ``traceparent``/``tracestate`` of the current span, if any."""
    propagate.inject(request.headers)
