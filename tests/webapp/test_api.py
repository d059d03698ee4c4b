"""The JSON API, endpoint by endpoint, through the Quart test client."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from chatbot import ProviderConfig, Settings, Usage
from chatbot.providers import StreamEnd
from chatbot.providers._registry import provider_specs
from tests.fakes.scripted import Hang, ScriptedProvider

from .conftest import CANARY_KEY, Web, open_web, settings_with

pytestmark = pytest.mark.anyio


async def _json(response: Any) -> Any:
    return json.loads(await response.get_data(as_text=True))


def assert_error(payload: Any, code: str) -> None:
    assert payload["ok"] is False
    assert payload["code"] == code
    assert isinstance(payload["error"], str) and payload["error"].endswith(".")


# -- status, providers, connect ------------------------------------------------------


async def test_status_of_a_new_browser(web: Web) -> None:
    response = await web.client().get("/api/status")
    assert response.status_code == 200
    assert await _json(response) == {
        "ok": True,
        "connected": False,
        "provider": None,
        "model": None,
        "provider_error": None,
        "conversation_id": None,
        "auth_required": False,
    }


async def test_status_reports_the_environment_provider_error() -> None:
    settings = Settings.from_env({"PROVIDER": "openai"}, env_file=None)
    assert settings.provider is None and settings.provider_error is not None
    async with open_web(settings=settings) as web:
        payload = await _json(await web.client().get("/api/status"))
    assert payload["connected"] is False
    assert "OPENAI_API_KEY" in payload["provider_error"]


async def test_providers_come_from_the_registry(web: Web) -> None:
    payload = await _json(await web.client().get("/api/providers"))
    assert payload["ok"] is True
    assert [p["name"] for p in payload["providers"]] == [s.name for s in provider_specs()]
    ollama = next(p for p in payload["providers"] if p["name"] == "ollama")
    assert ollama["needs_key"] is False
    assert set(ollama) == {"name", "label", "default_model", "default_base_url", "needs_key"}


async def test_connect_starts_a_current_conversation(web: Web) -> None:
    client = web.client()
    response = await client.post(
        "/api/connect", json={"provider": "anthropic", "model": "claude-x", "api_key": CANARY_KEY}
    )
    assert response.status_code == 200
    payload = await _json(response)
    assert payload["provider"] == "claude"  # aliases resolve to the canonical name
    assert payload["model"] == "claude-x"
    status = await _json(await client.get("/api/status"))
    assert status["connected"] is True
    assert status["provider"] == "claude"
    assert status["conversation_id"] == payload["conversation_id"]


async def test_connect_again_switches_provider(web: Web) -> None:
    client = await web.connected_client()
    first = await _json(await client.get("/api/status"))
    response = await client.post("/api/connect", json={"provider": "ollama", "model": "llama-x"})
    second = await _json(response)
    assert second["conversation_id"] != first["conversation_id"]
    reply = await _json(await client.post("/api/chat", json={"message": "hi"}))
    assert reply["conversation_id"] == second["conversation_id"]
    assert web.provider.config is not None and web.provider.config.provider == "ollama"
    assert web.provider.requests[-1].model == "llama-x"


async def test_connect_passes_settings_to_the_provider(web: Web) -> None:
    client = await web.connected_client(system_prompt="Be terse.", max_tokens=77)
    await client.post("/api/chat", json={"message": "hello"})
    request = web.provider.requests[-1]
    assert request.system == "Be terse."
    assert request.max_tokens == 77
    assert request.model == "gpt-test"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"provider": "nope", "model": "m"}, 422, "unknown_provider"),
        ({"provider": "openai", "model": "gpt-4o"}, 422, "missing_api_key"),
        ({"provider": "openai", "model": "gpt-4o", "api_key": "  "}, 422, "missing_api_key"),
        ({"provider": "ollama", "model": ""}, 422, "validation_error"),
        ({"provider": "ollama", "model": "   "}, 422, "validation_error"),
        ({"provider": "ollama"}, 422, "validation_error"),
        ({"provider": "ollama", "model": "m", "max_tokens": 0}, 422, "validation_error"),
        ({"provider": "ollama", "model": "m", "max_tokens": "5"}, 422, "validation_error"),
        ({"provider": "ollama", "model": "m", "colour": "red"}, 422, "validation_error"),
        ({"provider": "ollama", "model": "m", "base_url": "ftp://x"}, 422, "config_error"),
        (
            {"provider": "ollama", "model": "m", "base_url": "http://10.0.0.5:11434"},
            400,
            "base_url_not_allowed",
        ),
    ],
)
async def test_connect_validation(web: Web, body: dict[str, Any], status: int, code: str) -> None:
    client = web.client()
    response = await client.post("/api/connect", json=body)
    assert response.status_code == status
    assert_error(await _json(response), code)
    assert (await _json(await client.get("/api/status")))["connected"] is False


async def test_unknown_provider_lists_the_valid_ones(web: Web) -> None:
    payload = await _json(await web.client().post("/api/connect", json={"provider": "x", "model": "m"}))
    for spec in provider_specs():
        assert spec.name in payload["error"]


# -- models --------------------------------------------------------------------------


async def test_models_need_a_connection(web: Web) -> None:
    response = await web.client().get("/api/models")
    assert response.status_code == 409
    assert_error(await _json(response), "not_connected")


async def test_models_of_the_connection(web: Web) -> None:
    client = await web.connected_client()
    payload = await _json(await client.get("/api/models"))
    assert payload == {"ok": True, "models": ["scripted-1", "scripted-2"]}


# -- chat ----------------------------------------------------------------------------


async def test_chat_before_connecting_is_409(web: Web) -> None:
    response = await web.client().post("/api/chat", json={"message": "hi"})
    assert response.status_code == 409
    assert_error(await _json(response), "not_connected")
    assert web.provider.started == 0


async def test_chat_replies_and_counts_usage(web: Web) -> None:
    client = await web.connected_client()
    web.provider.enqueue("Hel", "lo!", StreamEnd(usage=Usage(12, 3)))
    response = await client.post("/api/chat", json={"message": "hi"})
    assert response.status_code == 200
    payload = await _json(response)
    status = await _json(await client.get("/api/status"))
    assert payload == {
        "ok": True,
        "reply": "Hello!",
        "conversation_id": status["conversation_id"],
        "usage": {"input_tokens": 12, "output_tokens": 3},
        "stopped": False,
    }


async def test_chat_continues_the_current_conversation(web: Web) -> None:
    client = await web.connected_client()
    first = await _json(await client.post("/api/chat", json={"message": "one"}))
    second = await _json(await client.post("/api/chat", json={"message": "two"}))
    assert first["conversation_id"] == second["conversation_id"]
    sent = web.provider.requests[-1].messages
    assert [m.content for m in sent] == ["one", "You said: one", "two"]


async def test_chat_creates_a_conversation_when_there_is_none(served: Web) -> None:
    client = served.client()
    payload = await _json(await client.post("/api/chat", json={"message": "hi"}))
    assert payload["ok"] is True
    status = await _json(await client.get("/api/status"))
    assert status["conversation_id"] == payload["conversation_id"]
    listing = await _json(await client.get("/api/conversations"))
    assert [c["id"] for c in listing["conversations"]] == [payload["conversation_id"]]


async def test_chat_in_a_named_conversation_makes_it_current(web: Web) -> None:
    client = await web.connected_client()
    first = (await _json(await client.get("/api/status")))["conversation_id"]
    other = (await _json(await client.post("/api/conversations", json={})))["conversation"]["id"]
    await client.post("/api/chat", json={"message": "in first", "conversation_id": first})
    assert (await _json(await client.get("/api/status")))["conversation_id"] == first
    detail = await _json(await client.get(f"/api/conversations/{other}"))
    assert detail["messages"] == []


async def test_chat_in_an_unknown_conversation_is_404(web: Web) -> None:
    client = await web.connected_client()
    response = await client.post("/api/chat", json={"message": "hi", "conversation_id": "nope"})
    assert response.status_code == 404
    assert_error(await _json(response), "not_found")


async def test_message_too_long_is_413_and_creates_nothing() -> None:
    async with open_web(settings=settings_with(max_message_chars=10)) as web:
        client = await web.connected_client()
        before = await _json(await client.get("/api/conversations"))
        response = await client.post("/api/chat", json={"message": "x" * 11})
        assert response.status_code == 413
        assert_error(await _json(response), "limit_exceeded")
        assert "CHATBOT_MAX_MESSAGE_CHARS" in (await _json(response))["error"]
        assert await _json(await client.get("/api/conversations")) == before
        assert web.provider.started == 0


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "bad_json"),
        (b"", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400, "bad_json"),
        (b'{"message": "hi"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"message": 5}', {"Content-Type": "application/json"}, 422, "validation_error"),
        (b'{"message": ""}', {"Content-Type": "application/json"}, 422, "validation_error"),
        (b"[]", {"Content-Type": "application/json"}, 422, "validation_error"),
        (b"{}", {"Content-Type": "application/json"}, 422, "validation_error"),
    ],
)
async def test_chat_rejects_bad_bodies(
    web: Web, data: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    client = await web.connected_client()
    response = await client.post("/api/chat", data=data, headers=headers)
    assert response.status_code == status
    assert_error(await _json(response), code)


async def test_missing_field_is_named(web: Web) -> None:
    response = await web.client().post("/api/chat", json={})
    assert (await _json(response))["error"] == "The field 'message' is required."


# -- stop ----------------------------------------------------------------------------


async def test_stop_without_a_running_turn(web: Web) -> None:
    client = await web.connected_client()
    payload = await _json(await client.post("/api/stop", json={}))
    assert payload == {"ok": True, "stopped": False}


async def test_stop_without_any_conversation(web: Web) -> None:
    payload = await _json(await web.client().post("/api/stop", json={}))
    assert payload == {"ok": True, "stopped": False}


async def test_stop_an_unknown_conversation_is_404(web: Web) -> None:
    response = await web.client().post("/api/stop", json={"conversation_id": "nope"})
    assert response.status_code == 404


# -- server-configured provider --------------------------------------------------------


async def test_server_configured_provider_needs_no_connect(served: Web) -> None:
    client = served.client()
    status = await _json(await client.get("/api/status"))
    assert status["connected"] is True
    assert (status["provider"], status["model"]) == ("ollama", "llama-test")
    payload = await _json(await client.post("/api/chat", json={"message": "hi"}))
    assert payload["reply"] == "You said: hi"
    assert served.provider.requests[-1].model == "llama-test"
    models = await _json(await client.get("/api/models"))
    assert models["models"] == ["scripted-1", "scripted-2"]


async def test_server_key_is_never_sent_to_a_browser_chosen_url() -> None:
    """A browser can't point the server's configured key at another endpoint."""
    server_config = ProviderConfig(provider="openai", api_key=CANARY_KEY)
    provider = ScriptedProvider()
    async with open_web(settings=Settings(provider=server_config), provider=provider) as web:
        client = web.client()
        response = await client.post(
            "/api/connect", json={"provider": "openai", "model": "gpt-4o", "base_url": "http://localhost:9"}
        )
        assert response.status_code == 422  # the browser must bring its own key
        assert provider.started == 0


# -- telemetry -----------------------------------------------------------------------


async def test_telemetry_is_installed_on_the_app(web: Web) -> None:
    from chatbot.telemetry import Telemetry
    from chatbot.webapp import create_app

    app = create_app(web.supervisor, web.settings, telemetry=Telemetry())
    client = app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/api/status")).status_code == 200


async def test_a_conversation_with_too_many_waiting_turns_is_busy() -> None:
    async with open_web(settings=settings_with(inbox_size=1)) as web:
        client = await web.connected_client()
        release = anyio.Event()
        web.provider.enqueue("slow", Hang(release), StreamEnd())
        answers: list[Any] = []

        async def send(message: str) -> None:
            answers.append(await client.post("/api/chat", json={"message": message}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "running")
            with anyio.fail_after(5):
                while web.provider.started == 0:
                    await anyio.sleep(0.01)
            tg.start_soon(send, "waiting")
            tg.start_soon(send, "one too many")
            with anyio.fail_after(5):  # one of the two waits, the other is refused at once
                while not answers:
                    await anyio.sleep(0.01)
            assert answers[0].status_code == 409
            assert_error(await _json(answers[0]), "busy")
            release.set()
        assert sorted(a.status_code for a in answers) == [200, 200, 409]
