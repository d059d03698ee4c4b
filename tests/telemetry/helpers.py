"""Helpers for the telemetry tests: a minimal traced chat app, metric parsing."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart, request

from chatbot import ChatbotError, Supervisor
from chatbot.telemetry import Telemetry

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of one sample, or None when the exposition lacks it."""
    return samples.get((name, tuple(sorted(labels.items()))))


def build_app(supervisor: Supervisor, telemetry: Telemetry) -> Quart:
    """A minimal chat app with telemetry installed, standing in for the full web app."""
    app = Quart(__name__)

    @app.post("/chat/<conversation_id>")
    async def chat(conversation_id: str) -> tuple[dict[str, object], int]:
        body = await request.get_json()
        try:
            reply = await supervisor.chat(conversation_id, body["message"])
        except ChatbotError as exc:
            return {"ok": False, "error": str(exc), "code": exc.code}, 502
        return {"ok": True, "text": reply.text}, 200

    telemetry.install(app, supervisor)
    return app


async def scrape(app: Quart) -> Samples:
    """GET /metrics and parse it."""
    response = await app.test_client().get("/metrics")
    assert response.status_code == 200
    return parse_metrics(await response.get_data(as_text=True))


def parse_metrics(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` for every sample in an exposition."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def spans_by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named
