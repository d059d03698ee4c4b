"""Prometheus metrics for one server: HTTP, turns, upstream calls, tokens and actors.

Each :class:`Metrics` has its own ``CollectorRegistry`` (never prometheus-client's
global one), so two apps in one process, as in tests, keep separate counts.

Names follow the Prometheus conventions: a ``chatbot_`` prefix, base units
(seconds), ``_total`` on counters, and labels whose values come from small sets.
Label values that users choose are bounded: the route is the URL *template*
(``/api/conversations/<id>``, never the raw path), unknown HTTP methods become
``_OTHER``, and after :data:`MAX_MODELS` distinct model names further ones are
counted as ``other``, so a client inventing model names cannot grow the series
without limit.

``chatbot_live_actors``, ``chatbot_inbox_depth`` and the actor counters are read from
``Supervisor.statistics()`` when ``/metrics`` is scraped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Protocol, final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from chatbot._messages import Usage
    from chatbot._supervisor import SupervisorStatistics

__all__ = ["MAX_MODELS", "Metrics", "StatisticsSource"]

#: Distinct model label values per provider before the rest are counted as ``other``.
MAX_MODELS: Final = 64
_LABEL_LENGTH: Final = 120

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_HTTP_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
_TURN_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TTFT_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class StatisticsSource(Protocol):
    """What the actor gauges are read from (a :class:`~chatbot.Supervisor`)."""

    def statistics(self) -> SupervisorStatistics: ...


class _SupervisorCollector:
    """Yields the actor gauges and counters from the last statistics snapshot.

    The ``/metrics`` handler takes the snapshot on the event loop (the supervisor's
    tables are not thread-safe) and then renders in a worker thread.
    """

    def __init__(self) -> None:
        self.snapshot: SupervisorStatistics | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self.snapshot
        if stats is None:
            return
        yield GaugeMetricFamily(
            "chatbot_live_actors", "Conversation actors currently running.", value=stats.live_actors
        )
        yield GaugeMetricFamily(
            "chatbot_inbox_depth",
            "Requests waiting in conversation inboxes, summed over all actors.",
            value=stats.inbox_depth,
        )
        yield GaugeMetricFamily(
            "chatbot_supervisor_running",
            "1 while the supervisor accepts requests, 0 while it shuts down.",
            value=1 if stats.running else 0,
        )
        yield CounterMetricFamily(
            "chatbot_actor_restarts_total",
            "Conversation actors restarted after a crash.",
            value=stats.restarts,
        )
        yield CounterMetricFamily(
            "chatbot_actors_spawned_total", "Conversation actors started.", value=stats.spawned
        )
        yield CounterMetricFamily(
            "chatbot_actors_evicted_total",
            "Conversation actors stopped because they idled or the actor limit was reached.",
            value=stats.evicted,
        )


class _HeapCollector:
    """How many memory blocks the Python allocator has handed out and not taken back.

    Unlike the resident size, this falls back once objects are freed: CPython keeps
    the memory of a busy hour for reuse, so after idle actors are evicted the RSS
    stays up while this returns to where it was. It tells a leak from a high-water mark.
    Only CPython's own allocator counts blocks: under ``PYTHONMALLOC=malloc`` (with
    jemalloc, say) there is no such figure, and the gauge is left out.
    """

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "chatbot_python_allocated_blocks",
            "Memory blocks currently allocated by the Python interpreter (live objects).",
            value=sys.getallocatedblocks(),
        )


@final
class Metrics:
    """The metric families of one server, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # prometheus-client's process/platform/GC collectors live in its global
        # registry; this registry gets instances of its own.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        if sys.getallocatedblocks():  # zero when CPython's allocator is not in use
            registry.register(_HeapCollector())
        self._supervisor = _SupervisorCollector()
        self._watching = False
        self._models: dict[str, set[str]] = {}

        self.http_requests = Counter(
            "chatbot_http_requests",
            "HTTP requests served, by route template, method and status.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.http_duration = Histogram(
            "chatbot_http_request_duration_seconds",
            "Time from receiving an HTTP request to sending the last byte of its response.",
            ("route", "method"),
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )
        self.turn_duration = Histogram(
            "chatbot_turn_duration_seconds",
            "Time from sending a message to the end of its turn (reply committed, or failed).",
            ("provider", "model", "outcome"),
            buckets=_TURN_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "chatbot_time_to_first_token_seconds",
            "Time from sending a message to the first text of the reply.",
            ("provider", "model"),
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "chatbot_upstream_request_duration_seconds",
            "Time spent calling the model API for one turn, retries included.",
            ("provider", "model", "outcome"),
            buckets=_TURN_BUCKETS,
            registry=registry,
        )
        self.upstream_retries = Counter(
            "chatbot_upstream_retries",
            "Upstream calls retried after a transient failure.",
            ("provider", "model"),
            registry=registry,
        )
        self.tokens = Counter(
            "chatbot_tokens",
            "Tokens the upstream reported, by direction (input: prompt, output: reply).",
            ("provider", "model", "direction"),
            registry=registry,
        )
        self.errors = Counter(
            "chatbot_errors",
            "Failed turns, by error code (upstream_auth_failed, upstream_timeout, ...).",
            ("code",),
            registry=registry,
        )

    # -- label hygiene ------------------------------------------------------------

    def model_label(self, provider: str, model: str) -> str:
        """``model``, or ``other`` once the provider has :data:`MAX_MODELS` others."""
        model = model[:_LABEL_LENGTH]
        seen = self._models.setdefault(provider, set())
        if model in seen:
            return model
        if len(seen) < MAX_MODELS:
            seen.add(model)
            return model
        return "other"

    @staticmethod
    def method_label(method: str) -> str:
        return method if method in _METHODS else "_OTHER"

    # -- recording ----------------------------------------------------------------

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        method = self.method_label(method)
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)

    def observe_turn(
        self,
        *,
        provider: str,
        model: str,
        outcome: str,
        seconds: float,
        upstream_seconds: float | None,
        usage: Usage | None,
        error_code: str | None,
    ) -> None:
        """Record a finished turn: its duration, the upstream call's, tokens and error."""
        self.turn_duration.labels(provider, model, outcome).observe(seconds)
        if upstream_seconds is not None:
            self.upstream_duration.labels(provider, model, outcome).observe(upstream_seconds)
        if usage is not None:
            if usage.input_tokens:
                self.tokens.labels(provider, model, "input").inc(usage.input_tokens)
            if usage.output_tokens:
                self.tokens.labels(provider, model, "output").inc(usage.output_tokens)
        if error_code is not None:
            self.errors.labels(error_code).inc()

    def observe_first_token(self, provider: str, model: str, seconds: float) -> None:
        self.time_to_first_token.labels(provider, model).observe(seconds)

    def count_retry(self, provider: str, model: str) -> None:
        self.upstream_retries.labels(provider, model).inc()

    # -- exposition -----------------------------------------------------------------

    def watch(self) -> None:
        """Include the actor gauges from now on (fed by :meth:`take_snapshot`)."""
        if not self._watching:
            self.registry.register(self._supervisor)
            self._watching = True

    def take_snapshot(self, source: StatisticsSource) -> None:
        """Read the actor statistics now; call it on the event loop, before :meth:`render`."""
        self._supervisor.snapshot = source.statistics()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (body, content type) the ``Accept`` header asks for.

        Blocking (the process collector reads ``/proc``): run it in a worker thread.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
