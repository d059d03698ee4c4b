"""Structured logs: the per-turn line in both formats, levels, and key redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest

from chatbot import AuthenticationFailed, ProviderConfig, Settings, Supervisor, Usage
from chatbot.providers import StreamEnd
from chatbot.telemetry import Telemetry, redact
from tests.fakes.scripted import ScriptedProvider

pytestmark = pytest.mark.anyio

ConfigureLogs = Callable[..., io.StringIO]
LOCAL = ProviderConfig(provider="ollama", model="m1")


async def _two_turns(telemetry: Telemetry) -> None:
    """One turn that succeeds, one whose upstream refuses the key."""
    provider = ScriptedProvider()
    provider.enqueue("Hel", "lo", StreamEnd(usage=Usage(12, 5)))
    provider.enqueue(
        AuthenticationFailed(
            "Ollama refused the API key (HTTP 401).", provider="ollama", status=401
        )
    )
    async with Supervisor(
        provider_factory=provider.factory,
        default_config=LOCAL,
        instrumentation=telemetry.instrumentation,
    ) as sup:
        await sup.chat("conv-7", "hi")
        with pytest.raises(AuthenticationFailed):
            await sup.chat("conv-7", "again")


async def test_one_json_line_per_turn(log_output: ConfigureLogs) -> None:
    buffer = log_output(Settings(log_format="json"))
    await _two_turns(Telemetry.from_settings(Settings(), environ={}))

    entries = [json.loads(line) for line in buffer.getvalue().splitlines()]
    turns = [e for e in entries if e["logger"] == "chatbot.turn"]
    assert len(turns) == 2
    ok, failed = turns
    assert ok["level"] == "INFO" and ok["message"] == "turn finished"
    assert {
        k: ok[k]
        for k in (
            "conversation_id",
            "provider",
            "model",
            "outcome",
            "input_tokens",
            "output_tokens",
        )
    } == {
        "conversation_id": "conv-7",
        "provider": "ollama",
        "model": "m1",
        "outcome": "ok",
        "input_tokens": 12,
        "output_tokens": 5,
    }
    assert ok["latency_s"] >= ok["ttft_s"] >= 0
    assert ok["time"].endswith("Z")
    assert failed["level"] == "WARNING" and failed["message"] == "turn failed"
    assert failed["outcome"] == "upstream_auth_failed"
    assert failed["error"] == "Ollama refused the API key (HTTP 401)."
    assert "ttft_s" not in failed and "input_tokens" not in failed


async def test_text_format_is_one_readable_line(log_output: ConfigureLogs) -> None:
    buffer = log_output(Settings())
    await _two_turns(Telemetry.from_settings(Settings(), environ={}))

    lines = [line for line in buffer.getvalue().splitlines() if " chatbot.turn: " in line]
    assert len(lines) == 2
    assert (
        " INFO    chatbot.turn: turn finished conversation_id=conv-7 provider=ollama model=m1 outcome=ok "
        in lines[0]
    )
    assert "input_tokens=12 output_tokens=5" in lines[0]
    assert "outcome=upstream_auth_failed latency_s=" in lines[1]
    assert 'error="Ollama refused the API key (HTTP 401)."' in lines[1]


async def test_log_level_filters(log_output: ConfigureLogs) -> None:
    buffer = log_output(Settings(log_level="WARNING"))
    await _two_turns(Telemetry.from_settings(Settings(), environ={}))
    lines = [line for line in buffer.getvalue().splitlines() if " chatbot.turn: " in line]
    assert len(lines) == 1 and "turn failed" in lines[0]


def test_configure_logging_replaces_its_own_handler_only(log_output: ConfigureLogs) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first = log_output(Settings())
        second = log_output(Settings(log_format="json", log_level="DEBUG"))
        logging.getLogger("chatbot.test").debug("hello %s", "there")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "hello there"
        assert foreign in root.handlers
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
    finally:
        root.removeHandler(foreign)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-AbC123xyz789_-Q done", "key [redacted] done"),
        ("sk-ant-api03-abcdefghijklmnop-xyz", "[redacted]"),
        ("token=sk-or-v1-0123456789abcdef0123", "token=[redacted]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [redacted]"),
        ("{'x-api-key': 'hunter2hunter2'}", "{'x-api-key': '[redacted]'}"),
        ('{"api_key": "plainsecret123"}', '{"api_key": "[redacted]"}'),
        ("API-KEY=abc123def456&x=1", "API-KEY=[redacted]&x=1"),
        (
            "Incorrect API key provided: sk-canary-0000aaaa.",
            "Incorrect API key provided: [redacted].",
        ),
    ],
)
def test_redact_scrubs_key_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "task-force and skeleton keys",
        "sk-",
        "the api key is missing",
        "bearer of bad news",
        "desk-lamp 42",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_filter_scrubs_arguments_extras_and_tracebacks(log_output: ConfigureLogs) -> None:
    buffer = log_output(Settings(log_format="json", log_level="DEBUG"))
    secret = "sk-proj-FilterCanary0123456789"
    log = logging.getLogger("chatbot.test")
    log.info("using %s", secret, extra={"header": f"Bearer {secret}", "count": 3})
    try:
        raise ValueError(f"upstream said: {secret}")
    except ValueError:
        log.exception("call failed")
    output = buffer.getvalue()
    assert secret not in output
    first, second = (json.loads(line) for line in output.splitlines())
    assert first["message"] == "using [redacted]"
    assert first["header"] == "Bearer [redacted]" and first["count"] == 3
    assert "ValueError: upstream said: [redacted]" in second["exc"]
