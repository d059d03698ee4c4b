"""The HTTP side of telemetry: health checks, ``/metrics``, request metrics and spans.

Request metrics and server spans come from an ASGI middleware around
``app.asgi_app`` rather than from ``before_request``/``after_request`` alone: Quart
runs ``after_request`` before a streamed body (a whole SSE reply) is sent, while
the middleware sees the request until its last byte, and the span it makes current
is inherited by every task Quart starts for the request. A ``before_request`` hook,
registered to run first, only tells the middleware which route template matched.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import attrs
from quart import Blueprint, Response, request

from chatbot._errors import ChatbotError

from .logs import redact

if TYPE_CHECKING:
    from quart import Quart

    from chatbot._supervisor import Supervisor

    from ._telemetry import Telemetry

__all__ = ["install"]

logger = logging.getLogger("chatbot.telemetry")

_READY_TIMEOUT: Final = 5.0
_UNMATCHED: Final = "unmatched"
_NO_STORE: Final = {"Cache-Control": "no-store"}

# Typed loosely on purpose: Hypercorn's precise ASGI types add nothing here.
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


@attrs.define
class _Exchange:
    """What the app tells the middleware about the request in flight."""

    route: str | None = None
    status: int | None = None


_EXCHANGE: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar(
    "chatbot_http_exchange", default=None
)


@final
class _TelemetryMiddleware:
    """Times every HTTP request to its last byte and, when tracing, wraps it in a span."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange()
        exchange_token = _EXCHANGE.set(exchange)
        method = str(scope.get("method", "GET"))
        tracing = self.telemetry.tracing
        span: Any = None
        span_token: object = None
        if tracing is not None:
            span, span_token = tracing.start_server_span(
                self.telemetry.metrics.method_label(method),
                str(scope.get("path", "")),
                str(scope.get("scheme", "http")),
                scope.get("headers", ()),
            )

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            _EXCHANGE.reset(exchange_token)
            status = exchange.status or 500
            route = exchange.route or _UNMATCHED
            self.telemetry.metrics.observe_http(
                route, method, status, time.perf_counter() - started
            )
            if tracing is not None:
                if exchange.route is not None:
                    tracing.name_server_span(
                        span, self.telemetry.metrics.method_label(method), route
                    )
                tracing.end_server_span(span, span_token, status)


async def _note_route() -> None:
    exchange = _EXCHANGE.get()
    if exchange is not None and request.url_rule is not None:
        exchange.route = request.url_rule.rule


def _blueprint(telemetry: Telemetry, supervisor: Supervisor) -> Blueprint:
    blueprint = Blueprint("telemetry", __name__)

    @blueprint.get("/healthz")
    async def healthz() -> tuple[dict[str, Any], int, dict[str, str]]:
        """Liveness: the process serves requests."""
        return {"ok": True}, 200, _NO_STORE

    @blueprint.get("/readyz")
    async def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
        """Readiness: the supervisor runs and the store answers within a few seconds."""
        try:
            with anyio.fail_after(_READY_TIMEOUT):
                await supervisor.ping()
        except TimeoutError:
            return _not_ready(f"The store did not answer within {_READY_TIMEOUT:g} s.", "not_ready")
        except ChatbotError as exc:
            return _not_ready(redact(str(exc)), exc.code)
        except Exception:
            logger.exception("readiness check failed")
            return _not_ready("The readiness check failed; see the server log.", "not_ready")
        return {"ok": True}, 200, _NO_STORE

    @blueprint.get("/metrics")
    async def metrics() -> Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        telemetry.metrics.take_snapshot(supervisor)
        body, content_type = await anyio.to_thread.run_sync(
            telemetry.metrics.render, request.headers.get("Accept", "")
        )
        return Response(body, content_type=content_type, headers=_NO_STORE)

    return blueprint


def _not_ready(message: str, code: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    return {"ok": False, "error": message, "code": code}, 503, _NO_STORE


def install(telemetry: Telemetry, app: Quart, supervisor: Supervisor) -> None:
    """See :meth:`Telemetry.install`."""
    app.register_blueprint(_blueprint(telemetry, supervisor))
    # First, so a hook that answers early (auth, rate limits) cannot hide the route.
    app.before_request_funcs.setdefault(None, []).insert(0, _note_route)
    app.asgi_app = _TelemetryMiddleware(app.asgi_app, telemetry)  # type: ignore[method-assign]
    telemetry.metrics.watch()

    tracing = telemetry.tracing
    if tracing is None:
        return
    if supervisor.running:
        tracing.instrument_client(supervisor.http_client)

    @app.before_serving
    async def instrument_upstream_client() -> None:
        tracing.instrument_client(supervisor.http_client)
