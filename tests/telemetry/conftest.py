"""Fixtures for the telemetry tests: asyncio (Quart), captured spans, captured logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chatbot import Settings
from chatbot.telemetry import Telemetry, configure_logging


@pytest.fixture
def anyio_backend() -> str:
    """Quart runs on asyncio only; backend-neutral tests override this locally."""
    return "asyncio"


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A private SDK provider that keeps every finished span in ``span_exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def traced_telemetry(tracer_provider: TracerProvider) -> Telemetry:
    return Telemetry.from_settings(Settings(), environ={}, tracer_provider=tracer_provider)


@pytest.fixture
def log_output() -> Iterator[Callable[..., io.StringIO]]:
    """Call it with settings to send all logs to a string buffer; restores logging after."""
    root = logging.getLogger()
    saved_level = root.level
    saved_handlers = list(root.handlers)
    quieted = {
        name: logging.getLogger(name).level
        for name in ("httpx", "httpcore", "hpack", "urllib3", "aiohttp.client")
    }

    def configure(settings: Settings | None = None) -> io.StringIO:
        buffer = io.StringIO()
        configure_logging(settings or Settings(), stream=buffer)
        return buffer

    yield configure
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved_level)
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
