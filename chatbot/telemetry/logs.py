"""Structured logs: readable text by default, JSON lines with ``LOG_FORMAT=json``.

:func:`configure_logging` installs one handler on the root logger. Both formats
render the same information: the message plus any ``extra={...}`` fields, so one
turn's line (see :func:`log_turn`) reads as ``key=value`` pairs on a terminal and as
a flat JSON object in a log pipeline.

Every record passing through that handler goes through :class:`RedactingFilter`
first. API keys are kept out of logs by construction (``repr=False`` fields,
cleaned provider messages); the filter is the last line of defence for what slips
through anyway: anything shaped like an OpenAI, Anthropic or OpenRouter key, bearer
tokens and ``x-api-key``/``api_key`` values, in the message, its arguments, extra
fields and formatted tracebacks. httpx and httpcore are held at WARNING, because
their DEBUG output describes requests in detail.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    from chatbot._config import Settings

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "log_turn",
    "redact",
]

REDACTED: Final = "[redacted]"

# Key shapes: sk-..., sk-proj-..., sk-ant-api03-..., sk-or-v1-...; a Bearer token;
# a value after x-api-key / api_key / authorization in headers, JSON or key=value text.
_SECRET_PATTERNS: Final = (
    re.compile(r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{5,}"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/\-]{8,}=*"),
    re.compile(
        r"(?i)(\b(?:x-api-key|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)"
        r"(?!bearer\s)(?!\[redacted\])[^\s\"',;}&]+"
    ),
)

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

# Loggers whose DEBUG/INFO output can describe requests (URLs, headers) in detail.
_NOISY_LOGGERS: Final = ("httpx", "httpcore", "hpack", "urllib3", "aiohttp.client")

turn_logger = logging.getLogger("chatbot.turn")


# Every pattern above needs one of these (case-insensitively): a cheap test that lets
# the usual log line through without running three regular expressions per field.
_SECRET_HINT: Final = re.compile(r"(?i)sk-|bearer|key|authorization")
_NEEDS_QUOTES: Final = re.compile(r'[\s"=]')


def redact(text: str) -> str:
    """``text`` with anything that looks like an API key or bearer token replaced."""
    if not text:
        return text
    if _SECRET_HINT.search(text) is None:
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Scrubs secrets from a record before any formatter sees it; never drops a record.

    The message is formatted with its arguments here (so a key passed as an argument
    is caught too), and the traceback is formatted and scrubbed into ``exc_text``,
    which formatters use instead of formatting ``exc_info`` again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw parts
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in _extras(record).items():
            setattr(record, name, _redact_value(value))
        return True


_FORMATTER: Final = logging.Formatter()


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(record).items()
        if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")
    }


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text) is not None:
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``2025-01-01 12:00:00,000 INFO    chatbot.turn: turn finished key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _extras(record)
        if fields:
            line += " " + " ".join(f"{k}={_format_value(v)}" for k, v in fields.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class _ChatbotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler :func:`configure_logging` owns, so calling it again replaces it."""


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Send all logs to ``stream`` (stderr by default) in ``settings.log_format``.

    Safe to call more than once: the handler installed by an earlier call is replaced,
    handlers installed by others (pytest's, an embedding program's) are left alone.

    Returns:
        The installed handler (tests read what it wrote).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ChatbotHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _ChatbotHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Neither format prints source lines, threads or processes: skip collecting them
    # for every record (the logging documentation's "Optimization" section).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def log_turn(fields: Mapping[str, object], *, failed: bool) -> None:
    """Write the one line a turn leaves in the log: INFO when it ended well, else WARNING."""
    if failed:
        turn_logger.warning("turn failed", extra=dict(fields))
    else:
        turn_logger.info("turn finished", extra=dict(fields))
