"""Errors become the right status and one JSON shape, from the core and from Quart."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from chatbot import (
    ActorCrashed,
    AuthenticationFailed,
    BadUpstreamResponse,
    Busy,
    ChatbotError,
    ConfigError,
    LimitExceeded,
    MissingApiKey,
    NotConnected,
    RateLimited,
    ShuttingDown,
    StoreError,
    UnknownConversation,
    UnknownProvider,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatbot.store import StoreConflict
from chatbot.webapp.errors import error_body, error_response, status_for
from tests.fakes.scripted import ScriptedProvider

from .conftest import Web, open_web

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ConfigError("bad."), 422, "config_error"),
        (UnknownProvider("x", ("a", "b")), 422, "unknown_provider"),
        (MissingApiKey("OpenAI needs an API key."), 422, "missing_api_key"),
        (AuthenticationFailed("key refused.", provider="openai", status=401), 502, "upstream_auth_failed"),
        (RateLimited("slow down.", provider="openai", retry_after=2.5), 429, "upstream_rate_limited"),
        (UpstreamUnavailable("down.", provider="openai", status=503), 502, "upstream_unavailable"),
        (UpstreamTimeout("too slow.", provider="openai"), 504, "upstream_timeout"),
        (BadUpstreamResponse("garbled.", provider="openai"), 502, "upstream_bad_response"),
        (UpstreamRejected("no such model.", provider="openai", status=404), 502, "upstream_rejected"),
        (UnknownConversation("No such conversation."), 404, "not_found"),
        (NotConnected("connect first."), 409, "not_connected"),
        (Busy("busy."), 409, "busy"),
        (ActorCrashed("crashed."), 500, "actor_crashed"),
        (ShuttingDown("bye."), 503, "shutting_down"),
        (StoreConflict("changed."), 409, "store_conflict"),
        (StoreError("disk full."), 503, "store_error"),
        (LimitExceeded("too long.", limit="message_chars"), 413, "limit_exceeded"),
        (LimitExceeded("too many.", limit="rate", retry_after=3.2), 429, "rate_limited"),
        (ChatbotError("odd."), 500, "error"),
    ],
)
async def test_error_table(error: ChatbotError, status: int, code: str) -> None:
    response = error_response(error)
    assert response.status_code == status
    assert json.loads(await response.get_data(as_text=True)) == {
        "ok": False,
        "error": str(error),
        "code": code,
    }
    assert error_body(error)["code"] == code


async def test_retry_after_header_is_whole_seconds_rounded_up() -> None:
    response = error_response(RateLimited("slow down.", provider="openai", retry_after=2.1))
    assert response.headers["Retry-After"] == "3"
    response = error_response(LimitExceeded("too many.", limit="rate", retry_after=0.2))
    assert response.headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(NotConnected("x.")).headers


def test_subclasses_inherit_their_base_status() -> None:
    class Odd(UpstreamTimeout):
        pass

    assert status_for(Odd("slow.", provider="p")) == 504


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (RateLimited("The provider is rate limiting us.", provider="openai", retry_after=7), 429, "upstream_rate_limited"),
        (UpstreamTimeout("The model took too long.", provider="openai"), 504, "upstream_timeout"),
        (UpstreamUnavailable("The provider is down.", provider="openai", status=503), 502, "upstream_unavailable"),
        (AuthenticationFailed("The provider refused the API key.", provider="openai", status=401), 502, "upstream_auth_failed"),
    ],
)
async def test_upstream_failures_through_chat(
    web: Web, failure: ChatbotError, status: int, code: str
) -> None:
    client = await web.connected_client()
    web.provider.enqueue(failure)
    response = await client.post("/api/chat", json={"message": "hi"})
    assert response.status_code == status
    payload = json.loads(await response.get_data(as_text=True))
    assert payload == {"ok": False, "error": str(failure), "code": code}
    if status == 429:
        assert response.headers["Retry-After"] == "7"
    # The history is untouched and the conversation still works.
    cid = json.loads(await (await client.get("/api/status")).get_data(as_text=True))["conversation_id"]
    detail = json.loads(await (await client.get(f"/api/conversations/{cid}")).get_data(as_text=True))
    assert detail["messages"] == []
    assert (await client.post("/api/chat", json={"message": "again"})).status_code == 200


@attrs.define
class _SlowModels(ScriptedProvider):
    async def list_models(self) -> list[str]:
        raise UpstreamTimeout("The provider did not answer in time.", provider="openai")


async def test_upstream_failure_listing_models() -> None:
    async with open_web(provider=_SlowModels()) as web:
        client = await web.connected_client()
        response = await client.get("/api/models")
    assert response.status_code == 504
    assert json.loads(await response.get_data(as_text=True))["code"] == "upstream_timeout"


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "allowed"),
    [
        ("GET", "/api/nope", 404, "not_found", None),
        ("GET", "/no/such/page.html", 404, "not_found", None),
        ("PUT", "/api/chat", 405, "method_not_allowed", "POST"),
        ("DELETE", "/api/status", 405, "method_not_allowed", "GET"),
    ],
)
async def test_quart_errors_are_json(
    web: Web, method: str, path: str, status: int, code: str, allowed: str | None
) -> None:
    client: Any = web.client()
    response = await client.open(path, method=method)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    payload: Any = json.loads(await response.get_data(as_text=True))
    assert payload["ok"] is False and payload["code"] == code
    if allowed is not None:
        methods = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed in methods and method not in methods, methods


async def test_unexpected_exception_is_a_json_500(web: Web) -> None:
    @web.app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret internals")

    response = await web.client().get("/boom")
    assert response.status_code == 500
    payload = json.loads(await response.get_data(as_text=True))
    assert payload["code"] == "internal_error"
    assert "secret" not in payload["error"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_actor_crash_is_a_json_500(web: Web) -> None:
    client = await web.connected_client()
    web.provider.enqueue(RuntimeError("boom"))  # a bug in a provider: the actor crashes
    response = await client.post("/api/chat", json={"message": "hi"})
    assert response.status_code == 500
    payload = json.loads(await response.get_data(as_text=True))
    assert payload["code"] == "actor_crashed"
    assert "boom" not in payload["error"]
