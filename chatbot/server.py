"""Serve the web UI and API: one process, one event loop, the supervisor around Hypercorn.

Quart is asyncio-only, so :func:`serve` runs anyio on asyncio (uvloop when
installed). :func:`main` opens the store, enters the :class:`~chatbot.Supervisor`
and runs Hypercorn *inside* it, so every request reaches the actors on the same
loop and the supervisor outlives the last request::

    store  →  Supervisor (task group, actors)  →  Hypercorn  →  Quart app

Shutdown (SIGINT, SIGTERM) is graceful: new turns are refused, running ones are
stopped (the actors save the partial replies, and each open stream ends with an
``error`` event saying so), Hypercorn finishes the requests in flight, then the
supervisor closes the actors and the store closes. A second signal stops at once.

The server starts without any provider configured: a provider problem in the
environment is logged and shown in the UI, and browsers can connect their own.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from functools import partial
from typing import Any

import anyio
import hypercorn.asyncio
from hypercorn.config import Config
from quart import Quart

from chatbot._config import Settings
from chatbot._housekeeping import (
    collect_when_quiet,
    forget_idle_sessions,
    release_memory,
    settle_garbage_collector,
)
from chatbot._http_client import IDLE_CONNECTIONS_CLOSED_WITHIN
from chatbot._supervisor import Supervisor
from chatbot.store import open_store
from chatbot.telemetry import Telemetry, configure_logging
from chatbot.webapp import WebState, begin_shutdown, create_app

__all__ = ["main", "open_listener", "run_app", "serve"]

logger = logging.getLogger("chatbot.server")

# Seconds Hypercorn waits for requests in flight once shutdown began. Streams end as
# soon as their turn is stopped, so this only bounds a request stuck elsewhere.
GRACEFUL_TIMEOUT = 10.0


def serve(settings: Settings) -> None:
    """Run the web server until SIGINT or SIGTERM; returns after a clean shutdown.

    Raises:
        ConfigError: a setting the server needs is invalid.
        StoreError: the store cannot be opened.
        OSError: the address cannot be bound (in use, not allowed).
    """
    configure_logging(settings)
    settle_garbage_collector()
    anyio.run(main, settings, backend="asyncio", backend_options={"use_uvloop": True})


async def main(
    settings: Settings,
    *,
    stop: anyio.Event | None = None,
    **supervisor_options: Any,
) -> None:
    """Serve until ``stop`` is set, or until a signal arrives (main thread only).

    ``supervisor_options`` go to the :class:`~chatbot.Supervisor` (tests inject a
    provider factory there).
    """
    if settings.provider is None and settings.provider_error is not None:
        logger.warning(
            "no provider configured for the server (%s); browsers can still connect one",
            settings.provider_error,
        )
    telemetry = Telemetry.from_settings(settings)
    listener = open_listener(settings.host, settings.port)
    try:
        async with (
            open_store(settings.store_url) as store,
            Supervisor(
                store=store,
                default_config=settings.provider,
                policy=settings.policy,
                limits=settings.limits,
                instrumentation=telemetry.instrumentation,
                **supervisor_options,
            ) as supervisor,
        ):
            app = create_app(supervisor, settings, telemetry=telemetry)
            port = listener.getsockname()[1]
            print(f"chatbot web UI on http://{_url_host(settings.host)}:{port}", flush=True)
            state: WebState = app.extensions["chatbot"]
            async with anyio.create_task_group() as housekeeping:
                housekeeping.start_soon(partial(
                    collect_when_quiet, supervisor.statistics,
                    again_after=IDLE_CONNECTIONS_CLOSED_WITHIN, collect=partial(release_memory, store),
                ))
                housekeeping.start_soon(
                    forget_idle_sessions, state.sessions, settings.limits.idle_evict_after
                )
                await run_app(app, listener, stop=stop)
                housekeeping.cancel_scope.cancel()
    finally:
        listener.close()  # a no-op once Hypercorn took it over
        telemetry.shutdown()


def open_listener(host: str, port: int) -> socket.socket:
    """Bind and listen now, so a busy port fails before anything starts (port 0: any free).

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, family=family)
    address = infos[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_app(app: Quart, listener: socket.socket, *, stop: anyio.Event | None = None) -> None:
    """Serve ``app`` on ``listener`` with Hypercorn until ``stop`` or a signal; owns the socket."""
    stop = stop or anyio.Event()
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.include_server_header = False

    async def shutdown_trigger() -> None:
        await stop.wait()
        stopped = await begin_shutdown(app)
        logger.info("shutting down; stopped the replies of %d conversation(s)", stopped)

    async def serve_until_stopped(scope: anyio.CancelScope) -> None:
        # Its own task: on Python 3.11, the asyncio.TaskGroup inside Hypercorn can leave
        # the task that awaited it marked as cancelled, which must not be ours.
        await hypercorn.asyncio.serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        scope.cancel()

    async with anyio.create_task_group() as tg:
        if threading.current_thread() is threading.main_thread():
            tg.start_soon(_watch_signals, stop, tg.cancel_scope)
        tg.start_soon(serve_until_stopped, tg.cancel_scope)


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. Second: stop at once."""
    signals = [signal.SIGINT, signal.SIGTERM]
    with anyio.open_signal_receiver(*signals) as received:
        async for signum in received:
            if not stop.is_set():
                logger.warning("received %s, shutting down gracefully", signal.Signals(signum).name)
                stop.set()
            else:
                logger.warning("received %s again, stopping now", signal.Signals(signum).name)
                scope.cancel()
                return
