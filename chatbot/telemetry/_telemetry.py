"""Telemetry: the metrics, tracing and turn log of one server, behind the core's seam.

The core reports each turn to an :class:`~chatbot._instrumentation.Instrumentation`;
:class:`Telemetry` provides the implementation that feeds Prometheus metrics,
OpenTelemetry spans and the per-turn log line from the same events, and the HTTP
side (health checks, ``/metrics``, request metrics and server spans) for a Quart app.

Timing: a turn's duration and its time to first token are measured from the moment
the caller sent the message (``capture_context`` runs in the caller's task), so they
include any wait behind an earlier turn of the same conversation: what a user feels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import attrs

from chatbot._errors import ChatbotError

from .logs import log_turn, redact
from .metrics import Metrics
from .tracing import Tracing, TurnTrace

if TYPE_CHECKING:
    from opentelemetry import context as otel_context
    from opentelemetry.trace import TracerProvider
    from quart import Quart

    from chatbot._config import ProviderConfig, Settings
    from chatbot._messages import Usage
    from chatbot._supervisor import Supervisor
    from chatbot.providers import ChatRequest, StreamEnd

__all__ = ["Telemetry"]


@attrs.frozen
class _Captured:
    """What follows a message from the caller's task into the actor."""

    sent_at: float
    context: otel_context.Context | None


@final
class _Recorder:
    """One turn's :class:`~chatbot._instrumentation.TurnRecorder`: metrics, spans, log line."""

    __slots__ = (
        "_conversation_id",
        "_finished",
        "_first_token_at",
        "_metrics",
        "_model",
        "_provider",
        "_retries",
        "_sent_at",
        "_trace",
        "_upstream_seconds",
        "_upstream_started",
    )

    def __init__(
        self,
        metrics: Metrics,
        trace: TurnTrace | None,
        conversation_id: str,
        config: ProviderConfig,
        sent_at: float,
    ) -> None:
        self._metrics = metrics
        self._trace = trace
        self._conversation_id = conversation_id
        self._provider = config.provider
        self._model = metrics.model_label(config.provider, config.model)
        self._sent_at = sent_at
        self._first_token_at: float | None = None
        self._upstream_started: float | None = None
        self._upstream_seconds: float | None = None
        self._retries = 0
        self._finished = False

    def upstream_attempt(self) -> _UpstreamTimer:
        return _UpstreamTimer(self)

    def retried(self, attempt: int, error: Exception, delay: float) -> None:
        self._retries += 1
        self._metrics.count_retry(self._provider, self._model)
        if self._trace is not None:
            self._trace.retried(attempt, error, delay)

    def first_token(self) -> None:
        now = time.perf_counter()
        self._first_token_at = now
        self._metrics.observe_first_token(self._provider, self._model, now - self._sent_at)
        if self._trace is not None:
            self._trace.first_token()

    def request(self, request: ChatRequest) -> None:
        """The request about to go upstream (for content recording in traces)."""
        if self._trace is not None:
            self._trace.request(request)

    def response(self, end: StreamEnd, text: str) -> None:
        """How the upstream ended its reply (response model, finish reason)."""
        if self._trace is not None:
            self._trace.response(end, text)

    def finished(self, outcome: str, usage: Usage | None, error: Exception | None) -> None:
        if self._finished:
            return
        self._finished = True
        seconds = time.perf_counter() - self._sent_at
        error_code = _error_code(error) if error is not None else None
        self._metrics.observe_turn(
            provider=self._provider,
            model=self._model,
            outcome=outcome,
            seconds=seconds,
            upstream_seconds=self._upstream_seconds,
            usage=usage,
            error_code=error_code,
        )
        fields: dict[str, object] = {
            "conversation_id": self._conversation_id,
            "provider": self._provider,
            "model": self._model,
            "outcome": outcome,
            "latency_s": round(seconds, 3),
        }
        if self._first_token_at is not None:
            fields["ttft_s"] = round(self._first_token_at - self._sent_at, 3)
        if usage is not None:
            fields["input_tokens"] = usage.input_tokens
            fields["output_tokens"] = usage.output_tokens
        if self._retries:
            fields["retries"] = self._retries
        if error is not None:
            fields["error"] = (
                redact(str(error)) if isinstance(error, ChatbotError) else type(error).__name__
            )
        if self._trace is not None:
            self._trace.finish(outcome, usage, error)
            trace_id = self._trace.trace_id
            if trace_id is not None:
                fields["trace_id"] = trace_id
        log_turn(fields, failed=error is not None)

    def _close(self, exc: BaseException | None) -> None:
        if not self._finished:
            if isinstance(exc, Exception):
                self.finished("actor_crashed", None, exc)
            elif exc is not None:  # cancelled before the actor could say how it ended
                self.finished("stopped", None, None)
        if self._trace is not None:
            self._trace.close(exc)


def _error_code(error: Exception) -> str:
    return error.code if isinstance(error, ChatbotError) else "actor_crashed"


@final
class _UpstreamTimer:
    """Times the upstream call and, when tracing, makes its CLIENT span current."""

    __slots__ = ("_recorder", "_span_cm")

    def __init__(self, recorder: _Recorder) -> None:
        self._recorder = recorder
        self._span_cm: Any = None

    def __enter__(self) -> object:
        recorder = self._recorder
        recorder._upstream_started = time.perf_counter()
        if recorder._trace is not None:
            self._span_cm = recorder._trace.upstream()
            return self._span_cm.__enter__()
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        recorder = self._recorder
        if recorder._upstream_started is not None:
            recorder._upstream_seconds = time.perf_counter() - recorder._upstream_started
        if self._span_cm is not None:
            self._span_cm.__exit__(exc_type, exc, tb)


@final
class _TurnScope:
    """The context manager ``Instrumentation.turn`` returns; the turn starts on entry."""

    __slots__ = ("_args", "_recorder")

    def __init__(
        self,
        metrics: Metrics,
        tracing: Tracing | None,
        conversation_id: str,
        config: ProviderConfig,
        captured: _Captured,
    ) -> None:
        self._args = (metrics, tracing, conversation_id, config, captured)
        self._recorder: _Recorder | None = None

    def __enter__(self) -> _Recorder:
        metrics, tracing, conversation_id, config, captured = self._args
        # The turn span becomes the current span here, and stops being it in __exit__.
        trace = (
            tracing.turn(conversation_id, config, captured.context) if tracing is not None else None
        )
        self._recorder = _Recorder(metrics, trace, conversation_id, config, captured.sent_at)
        return self._recorder

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._recorder is not None:
            self._recorder._close(exc)


@final
class _Instrumentation:
    """The :class:`~chatbot._instrumentation.Instrumentation` a :class:`Telemetry` hands out."""

    __slots__ = ("_metrics", "_tracing")

    def __init__(self, metrics: Metrics, tracing: Tracing | None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    def capture_context(self) -> object:
        context = self._tracing.current_context() if self._tracing is not None else None
        return _Captured(time.perf_counter(), context)

    def turn(self, conversation_id: str, config: ProviderConfig, captured: object) -> _TurnScope:
        if not isinstance(captured, _Captured):
            captured = _Captured(time.perf_counter(), None)
        return _TurnScope(self._metrics, self._tracing, conversation_id, config, captured)


@final
class Telemetry:
    """Metrics, tracing and turn logs for one server.

    Build it with :meth:`from_settings`, pass :attr:`instrumentation` to the
    :class:`~chatbot.Supervisor`, and :meth:`install` it on the Quart app.
    """

    def __init__(self, *, metrics: Metrics | None = None, tracing: Tracing | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.tracing = tracing
        self.instrumentation = _Instrumentation(self.metrics, tracing)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> Telemetry:
        """Telemetry as the settings and the ``OTEL_*`` variables configure it.

        Args:
            environ: where ``OTEL_*`` is read (default ``os.environ``).
            tracer_provider: trace with this provider instead of one built from
                ``OTEL_*`` (tests pass one with an in-memory exporter).

        Raises:
            ConfigError: an ``OTEL_*`` variable has a value chatbot cannot honour.
        """
        record = settings.record_content_in_traces
        if tracer_provider is not None:
            tracing: Tracing | None = Tracing(tracer_provider, record_content=record)
        else:
            tracing = Tracing.from_env(
                os.environ if environ is None else environ, record_content=record
            )
        return cls(tracing=tracing)

    def install(self, app: Quart, supervisor: Supervisor) -> None:
        """Add ``/healthz``, ``/readyz``, ``/metrics`` and per-request metrics and spans to ``app``.

        When tracing is on, upstream requests made through the supervisor's HTTP
        client carry the trace context; the hook is added now if the supervisor is
        running, else when the app starts serving.
        """
        from ._http import install

        install(self, app, supervisor)

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporters."""
        if self.tracing is not None:
            self.tracing.shutdown()
