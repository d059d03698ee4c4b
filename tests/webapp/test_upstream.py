"""The API through the real adapters, against the fake upstream servers over HTTP."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from chatbot.providers import create_provider
from tests.fakes.upstream import DEFAULT_API_KEY, DEFAULT_MODELS, Fail, FakeUpstream, Hang, Reply

from .conftest import CANARY_KEY, open_web

pytestmark = pytest.mark.anyio


async def _json(response: Any) -> Any:
    return json.loads(await response.get_data(as_text=True))


def _real() -> dict[str, Any]:
    """Supervisor options for real adapters and a real HTTP client."""
    return {"provider_factory": create_provider, "http_client": None}


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o"), ("claude", "claude-sonnet-4-20250514"), ("ollama", "llama3.2")],
)
async def test_chat_and_stream_through_each_wire_format(
    fake_upstream: FakeUpstream, provider: str, model: str
) -> None:
    connect = {"provider": provider, "model": model, "base_url": fake_upstream.url}
    if provider == "ollama":
        fake_upstream.flavour = "ollama"
    else:
        connect["api_key"] = DEFAULT_API_KEY
    async with open_web(**_real()) as web:
        client = web.client()
        assert (await client.post("/api/connect", json=connect)).status_code == 200

        reply = await _json(await client.post("/api/chat", json={"message": "first"}))
        assert reply["reply"] == "You said: first"
        assert reply["usage"]["output_tokens"] > 0

        # Pieces sent apart arrive as separate deltas (ones that arrive together are joined).
        fake_upstream.enqueue(Reply(token_delay=0.05))
        response = await client.post("/api/chat/stream", json={"message": "second"})
        body = await response.get_data(as_text=True)
        deltas = [
            json.loads(line.removeprefix("data: "))["text"]
            for line in body.split("\n")
            if line.startswith("data: ") and '"text"' in line
        ]
        assert len(deltas) > 1
        assert "".join(deltas) == "You said: second"
        assert "event: done" in body

        last = fake_upstream.chat_requests[-1].json
        contents = [m["content"] for m in last["messages"] if m["role"] != "system"]
        assert contents[-3:] == ["first", "You said: first", "second"]


async def test_models_through_the_adapters(fake_upstream: FakeUpstream) -> None:
    async with open_web(**_real()) as web:
        client = web.client()
        await client.post(
            "/api/connect",
            json={"provider": "openai", "model": "gpt-4o", "api_key": DEFAULT_API_KEY, "base_url": fake_upstream.url},
        )
        models = await _json(await client.get("/api/models"))
    assert set(DEFAULT_MODELS) <= set(models["models"])


async def test_the_key_reaches_the_upstream_and_no_response(fake_upstream: FakeUpstream) -> None:
    fake_upstream.api_key = None  # accept any key
    async with open_web(**_real()) as web:
        client = web.client()
        responses = [
            await client.post(
                "/api/connect",
                json={"provider": "openai", "model": "gpt-4o", "api_key": CANARY_KEY, "base_url": fake_upstream.url},
            ),
            await client.post("/api/chat", json={"message": "hello"}),
            await client.post("/api/chat/stream", json={"message": "hello"}),
            await client.get("/api/models"),
            await client.get("/api/status"),
        ]
    assert fake_upstream.chat_requests[0].headers["authorization"] == f"Bearer {CANARY_KEY}"
    for response in responses:
        assert response.status_code == 200
        assert CANARY_KEY not in await response.get_data(as_text=True)
        assert CANARY_KEY not in str(response.headers)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Fail(status=429, retry_after="9"), 429, "upstream_rate_limited"),
        (Fail(status=500), 502, "upstream_unavailable"),
        (Fail(status=401, message="Incorrect API key provided"), 502, "upstream_auth_failed"),
        (Fail(status=404, message="The model does not exist"), 502, "upstream_rejected"),
    ],
)
async def test_upstream_failures_become_statuses(
    fake_upstream: FakeUpstream, failure: Fail, status: int, code: str
) -> None:
    fake_upstream.enqueue(failure)
    async with open_web(**_real()) as web:
        client = web.client()
        await client.post(
            "/api/connect",
            json={"provider": "openai", "model": "gpt-4o", "api_key": DEFAULT_API_KEY, "base_url": fake_upstream.url},
        )
        response = await client.post("/api/chat", json={"message": "hi"})
        assert response.status_code == status
        payload = await _json(response)
        assert payload["ok"] is False and payload["code"] == code
        assert payload["error"] and "\n" not in payload["error"]
        if status == 429:
            assert response.headers["Retry-After"] == "9"
        # Nothing was written; the next turn works.
        assert (await client.post("/api/chat", json={"message": "again"})).status_code == 200
        cid = (await _json(await client.get("/api/status")))["conversation_id"]
        detail = await _json(await client.get(f"/api/conversations/{cid}"))
        assert [m["content"] for m in detail["messages"]] == ["again", "You said: again"]


async def test_a_browser_that_leaves_closes_the_upstream_request(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(text="a b c d e f g h", chunks=8, token_delay=0.3))
    async with open_web(**_real()) as web:
        client = web.client()
        await client.post(
            "/api/connect",
            json={"provider": "openai", "model": "gpt-4o", "api_key": DEFAULT_API_KEY, "base_url": fake_upstream.url},
        )
        cid = (await _json(await client.get("/api/status")))["conversation_id"]
        async with client.request(
            "/api/chat/stream", method="POST", headers={"Content-Type": "application/json"}
        ) as connection:
            await connection.send(b'{"message": "slowly"}')
            await connection.send_complete()
            with anyio.fail_after(5):
                first = await connection.receive()
            assert first.startswith(b"event: delta")
            await connection.disconnect()
        assert await fake_upstream.wait_for_disconnect(timeout=5)
        with anyio.fail_after(5):
            while len(history := await web.supervisor.history(cid)) < 2:
                await anyio.sleep(0.01)
    assert history[1].stopped is True
    assert "a b c d e f g h".startswith(history[1].content)
    assert history[1].content


async def test_an_upstream_that_hangs_can_be_stopped(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Hang(stage="body"))
    async with open_web(**_real()) as web:
        client = web.client()
        await client.post(
            "/api/connect",
            json={"provider": "openai", "model": "gpt-4o", "api_key": DEFAULT_API_KEY, "base_url": fake_upstream.url},
        )
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def chat() -> None:
                results.append(await client.post("/api/chat", json={"message": "hang"}))

            tg.start_soon(chat)
            assert await fake_upstream.wait_for_requests(1)
            with anyio.fail_after(5):
                while not (await _json(await client.post("/api/stop", json={})))["stopped"]:
                    await anyio.sleep(0.01)
        payload = await _json(results[0])
    assert payload["stopped"] is True
    assert payload["reply"] == ""
    assert await fake_upstream.wait_for_disconnect(timeout=5)
