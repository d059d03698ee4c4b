"""Streaming turns: SSE framing, early first byte, stop, disconnect and shutdown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from quart.testing.connections import TestHTTPConnection as HTTPConnection
from quart.typing import TestClientProtocol as Client

from chatbot import Message, RateLimited, UpstreamUnavailable, Usage
from chatbot.providers import StreamEnd
from chatbot.webapp import begin_shutdown
from chatbot.webapp.sse import encode_event
from tests.fakes.scripted import Hang

from .conftest import Web

pytestmark = pytest.mark.anyio


class Stream:
    """Reads SSE events from a streaming test connection."""

    def __init__(self, connection: HTTPConnection) -> None:
        self.connection = connection
        self.buffer = b""

    async def event(self) -> tuple[str, dict[str, Any]]:
        with anyio.fail_after(5):
            while b"\n\n" not in self.buffer:
                self.buffer += await self.connection.receive()
        frame, self.buffer = self.buffer.split(b"\n\n", 1)
        fields = dict(line.split(": ", 1) for line in frame.decode().split("\n"))
        assert set(fields) == {"event", "data"}, frame
        return fields["event"], json.loads(fields["data"])

    async def rest(self) -> list[tuple[str, dict[str, Any]]]:
        """Every remaining event, until the server ends the response."""
        events = []
        with anyio.fail_after(5):
            while True:
                chunk = await self.connection.receive()
                if not chunk:
                    break
                self.buffer += chunk
        while self.buffer:
            frame, _, self.buffer = self.buffer.partition(b"\n\n")
            fields = dict(line.split(": ", 1) for line in frame.decode().split("\n"))
            events.append((fields["event"], json.loads(fields["data"])))
        return events


@asynccontextmanager
async def open_stream(client: Client, body: dict[str, Any]) -> AsyncIterator[Stream]:
    async with client.request(
        "/api/chat/stream", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        await connection.send(json.dumps(body).encode())
        await connection.send_complete()
        yield Stream(connection)  # type: ignore[arg-type]


async def current(client: Client) -> str:
    payload = await (await client.get("/api/status")).get_json()
    cid: str = payload["conversation_id"]
    return cid


async def wait_for_history(web: Web, conversation_id: str, count: int) -> tuple[Message, ...]:
    with anyio.fail_after(5):
        while len(history := await web.supervisor.history(conversation_id)) < count:
            await anyio.sleep(0.01)
    return history


def test_encode_event_is_one_data_line() -> None:
    frame = encode_event("delta", {"text": "line one\nline two\r\n\u2028é"})
    assert frame.count(b"\n") == 3 and frame.endswith(b"\n\n")
    event, data = frame.decode().rstrip("\n").split("\n")
    assert event == "event: delta"
    assert json.loads(data.removeprefix("data: ")) == {"text": "line one\nline two\r\n\u2028é"}


async def test_stream_framing_and_headers(web: Web) -> None:
    client = await web.connected_client()
    web.provider.enqueue("Hel", "lo", StreamEnd(usage=Usage(9, 2)))
    response = await client.post("/api/chat/stream", json={"message": "hi"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = await response.get_data()
    cid = await current(client)
    assert body == (
        b'event: delta\ndata: {"text":"Hel"}\n\n'
        b'event: delta\ndata: {"text":"lo"}\n\n'
        b'event: done\ndata: {"reply":"Hello","usage":{"input_tokens":9,"output_tokens":2},'
        b'"stopped":false,"conversation_id":"' + cid.encode() + b'"}\n\n'
    )


async def test_first_delta_leaves_before_the_upstream_finishes(web: Web) -> None:
    client = await web.connected_client()
    release = anyio.Event()
    web.provider.enqueue("first ", Hang(release), "second", StreamEnd())
    async with open_stream(client, {"message": "hi"}) as stream:
        assert await stream.event() == ("delta", {"text": "first "})
        assert stream.connection.status_code == 200
        assert web.provider.closed == 0  # the upstream is still mid-reply
        release.set()
        events = await stream.rest()
    assert events[0] == ("delta", {"text": "second"})
    assert events[1][0] == "done"
    assert events[1][1]["reply"] == "first second"
    assert events[1][1]["stopped"] is False


async def test_client_disconnect_stops_the_turn_and_keeps_the_partial_reply(web: Web) -> None:
    client = await web.connected_client()
    cid = await current(client)
    web.provider.enqueue("partial ", "reply", Hang())
    async with open_stream(client, {"message": "tell me"}) as stream:
        assert (await stream.event())[0] == "delta"
        assert (await stream.event())[0] == "delta"
        await stream.connection.disconnect()
    history = await wait_for_history(web, cid, 2)
    assert history[0].content == "tell me"
    assert history[1].content == "partial reply"
    assert history[1].stopped is True
    assert web.provider.closed == 1  # the upstream request was closed
    # The conversation carries on.
    payload = await (await client.post("/api/chat", json={"message": "again"})).get_json()
    assert payload["reply"] == "You said: again"


async def test_client_disconnect_from_plain_chat_keeps_the_partial_reply(web: Web) -> None:
    client = await web.connected_client()
    cid = await current(client)
    web.provider.enqueue("so far", Hang())
    async with client.request(
        "/api/chat", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        await connection.send(b'{"message": "long one"}')
        await connection.send_complete()
        with anyio.fail_after(5):
            while web.provider.started == 0:
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)  # let the first delta reach the request
        await connection.disconnect()
    history = await wait_for_history(web, cid, 2)
    assert (history[1].content, history[1].stopped) == ("so far", True)


async def test_stop_endpoint_ends_the_stream_with_a_stopped_reply(web: Web) -> None:
    client = await web.connected_client()
    cid = await current(client)
    web.provider.enqueue("half", Hang())
    async with open_stream(client, {"message": "go"}) as stream:
        assert await stream.event() == ("delta", {"text": "half"})
        stop = await client.post("/api/stop", json={"conversation_id": cid})
        assert await stop.get_json() == {"ok": True, "stopped": True}
        events = await stream.rest()
    assert events == [
        (
            "done",
            {
                "reply": "half",
                "usage": {"input_tokens": 0, "output_tokens": 0},
                "stopped": True,
                "conversation_id": cid,
            },
        )
    ]
    history = await web.supervisor.history(cid)
    assert (history[1].content, history[1].stopped) == ("half", True)


async def test_stop_defaults_to_the_current_conversation(web: Web) -> None:
    client = await web.connected_client()
    web.provider.enqueue("x", Hang())
    async with open_stream(client, {"message": "go"}) as stream:
        await stream.event()
        assert await (await client.post("/api/stop", json={})).get_json() == {"ok": True, "stopped": True}
        assert (await stream.rest())[-1][1]["stopped"] is True


async def test_failure_mid_stream_is_an_error_event(web: Web) -> None:
    client = await web.connected_client()
    cid = await current(client)
    failure = UpstreamUnavailable("The provider dropped the connection.", provider="openai")
    web.provider.enqueue("abc", failure)
    response = await client.post("/api/chat/stream", json={"message": "hi"})
    assert response.status_code == 200
    body = await response.get_data(as_text=True)
    assert body.endswith(
        'event: error\ndata: {"error":"The provider dropped the connection.","code":"upstream_unavailable"}\n\n'
    )
    assert await web.supervisor.history(cid) == ()  # a failed turn writes nothing


async def test_failure_before_the_first_token_is_a_json_status(web: Web) -> None:
    client = await web.connected_client()
    web.provider.enqueue(RateLimited("Slow down.", provider="openai", retry_after=4))
    response = await client.post("/api/chat/stream", json={"message": "hi"})
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "4"
    assert await response.get_json() == {"ok": False, "error": "Slow down.", "code": "upstream_rate_limited"}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"message": "hi", "conversation_id": "missing"}, 404, "not_found"),
        ({"message": ""}, 422, "validation_error"),
    ],
)
async def test_stream_validation_errors_are_json(
    web: Web, body: dict[str, Any], status: int, code: str
) -> None:
    client = await web.connected_client()
    response = await client.post("/api/chat/stream", json=body)
    assert response.status_code == status
    assert (await response.get_json())["code"] == code


async def test_stream_before_connecting_is_409(web: Web) -> None:
    response = await web.client().post("/api/chat/stream", json={"message": "hi"})
    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/json"
    assert (await response.get_json())["code"] == "not_connected"


async def test_shutdown_ends_streams_with_an_error_and_saves_the_partial_reply(web: Web) -> None:
    client = await web.connected_client()
    cid = await current(client)
    web.provider.enqueue("almost", Hang())
    async with open_stream(client, {"message": "go"}) as stream:
        await stream.event()
        assert await begin_shutdown(web.app) == 1
        events = await stream.rest()
    assert events == [
        (
            "error",
            {"error": "The server is shutting down; the partial reply was saved.", "code": "shutting_down"},
        )
    ]
    history = await web.supervisor.history(cid)
    assert (history[1].content, history[1].stopped) == ("almost", True)
    refused = await client.post("/api/chat/stream", json={"message": "more"})
    assert refused.status_code == 503
    assert (await refused.get_json())["code"] == "shutting_down"
