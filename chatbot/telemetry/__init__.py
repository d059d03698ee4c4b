"""Operating chatbot: Prometheus metrics, OpenTelemetry traces, structured logs, health checks.

::

    configure_logging(settings)
    telemetry = Telemetry.from_settings(settings)
    async with Supervisor(..., instrumentation=telemetry.instrumentation) as sup:
        app = create_app(sup, settings, telemetry=telemetry)   # calls telemetry.install(app, sup)

See :mod:`chatbot.telemetry.metrics` for the metric names,
:mod:`chatbot.telemetry.tracing` for spans and the ``OTEL_*`` variables, and
:mod:`chatbot.telemetry.logs` for the log formats and key redaction.
"""

from __future__ import annotations

from ._telemetry import Telemetry as Telemetry
from .logs import configure_logging as configure_logging
from .logs import redact as redact

__all__ = ["Telemetry", "configure_logging", "redact"]
