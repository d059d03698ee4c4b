"""kill -9 the server between turns, mid-stream and mid-burst: every acknowledged turn survives.

A turn is acknowledged by the ``/api/chat`` response or the stream's ``done`` event,
and only after its user message and reply were committed together. So after a crash
and a restart on the same store, every acknowledged turn must be there, in order,
and nothing else but whole turns: a turn the crash interrupted is either absent, or
(if it committed but its answer never reached the client) present as a whole turn,
never as a user message without its reply. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply

from .conftest import Browser, Servers, history, reply_to, sse_events, whole_turns

pytestmark = pytest.mark.slow


def stream_turn(client: httpx.Client, message: str, conversation_id: str) -> dict[str, Any]:
    """One turn through ``/api/chat/stream``, read up to its ``done`` event."""
    body = {"message": message, "conversation_id": conversation_id}
    text: list[str] = []
    with client.stream("POST", "/api/chat/stream", json=body) as response:
        assert response.status_code == 200, (response.status_code, response.read())
        for event, data in sse_events(response.iter_lines()):
            if event == "delta":
                text.append(data["text"])
            else:
                assert event == "done", (event, data)
                assert data["reply"] == "".join(text) == reply_to(message), (data, text)
                return data
    raise AssertionError("the stream ended without a done event")


def upstream_context(fake: FakeUpstream) -> list[tuple[str, str]]:
    """The conversation (without the system prompt) the last chat request sent upstream."""
    body = fake.chat_requests[-1].json
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]


def test_acknowledged_turns_survive_a_kill_between_turns(
    servers: Servers, browser: Browser, fake_upstream: FakeUpstream
) -> None:
    (server,) = servers.start()
    sent = [f"between turns {i}" for i in range(5)]
    with browser.client(server) as client:
        conversation_id = browser.new_conversation(client)
        for message in sent:
            browser.chat(client, message, conversation_id)

    server.kill()
    server.restart()

    with browser.client(server) as client:
        listed = client.get("/api/conversations").json()["conversations"]
        assert [(c["id"], c["message_count"]) for c in listed] == [(conversation_id, 2 * len(sent))]
        assert whole_turns(history(client, conversation_id)) == sent

        browser.chat(client, "after the restart", conversation_id)
        assert whole_turns(history(client, conversation_id)) == [*sent, "after the restart"]
    # The restarted actor loaded the stored turns and sent them as context.
    expected = [pair for m in sent for pair in (("user", m), ("assistant", reply_to(m)))]
    assert upstream_context(fake_upstream) == [*expected, ("user", "after the restart")]


def test_a_kill_mid_stream_loses_only_the_unacknowledged_turn(
    servers: Servers, browser: Browser, fake_upstream: FakeUpstream
) -> None:
    (server,) = servers.start()
    acknowledged = [f"streamed {i}" for i in range(3)]
    doomed = "killed in the middle of its reply"
    with browser.client(server) as client:
        conversation_id = browser.new_conversation(client)
        for message in acknowledged:
            stream_turn(client, message, conversation_id)

        fake_upstream.enqueue(Reply(chunks=40, token_delay=0.1))  # four seconds of reply
        body = {"message": doomed, "conversation_id": conversation_id}
        with client.stream("POST", "/api/chat/stream", json=body) as response:
            assert response.status_code == 200
            events = sse_events(response.iter_lines())
            received = [next(events), next(events)]
            assert [event for event, _ in received] == ["delta", "delta"]

            server.kill()

            rest: list[tuple[str, dict[str, Any]]] = []
            with pytest.raises(httpx.TransportError):
                rest.extend(events)
            assert "done" not in [event for event, _ in rest]

    server.restart()

    with browser.client(server) as client:
        messages = history(client, conversation_id)
        assert whole_turns(messages) == acknowledged
        assert not [m for m in messages if doomed in m["content"]]

        stream_turn(client, "after the crash", conversation_id)
        assert whole_turns(history(client, conversation_id)) == [*acknowledged, "after the crash"]
    expected = [pair for m in acknowledged for pair in (("user", m), ("assistant", reply_to(m)))]
    assert upstream_context(fake_upstream) == [*expected, ("user", "after the crash")]


CONVERSATIONS = 4
WORKERS_PER_CONVERSATION = 2
KILL_AFTER = 15  # acknowledged turns


def test_a_kill_during_a_burst_keeps_every_acknowledged_turn(
    servers: Servers, browser: Browser, fake_upstream: FakeUpstream
) -> None:
    """Several conversations, two senders each: turns are queued, streaming and committing."""
    fake_upstream.default = Reply(token_delay=0.02)  # each reply streams for ~0.1 s
    (server,) = servers.start()
    with browser.client(server) as client:
        conversation_ids = [browser.new_conversation(client) for _ in range(CONVERSATIONS)]

    acknowledged: dict[str, list[str]] = {}
    count_lock = threading.Lock()
    total = 0

    def send_until_killed(conversation_id: str, sender: str) -> None:
        nonlocal total
        acknowledged[sender] = []
        with browser.client(server) as client:
            for i in itertools.count():
                message = f"{sender} turn {i}"
                try:
                    response = client.post(
                        "/api/chat", json={"message": message, "conversation_id": conversation_id}
                    )
                except httpx.TransportError:
                    return  # the server is gone
                assert response.status_code == 200, (response.status_code, response.text)
                assert response.json()["reply"] == reply_to(message)
                acknowledged[sender].append(message)
                with count_lock:
                    total += 1

    senders = {
        f"c{c}s{s}": conversation_id
        for c, conversation_id in enumerate(conversation_ids)
        for s in range(WORKERS_PER_CONVERSATION)
    }
    with ThreadPoolExecutor(len(senders)) as pool:
        futures = [pool.submit(send_until_killed, cid, sender) for sender, cid in senders.items()]
        deadline = time.monotonic() + 20
        while total < KILL_AFTER and time.monotonic() < deadline:
            if any(f.done() for f in futures):
                break  # a sender failed: its error is raised below
            time.sleep(0.01)
        server.kill()
        for future in futures:
            future.result()
    assert total >= KILL_AFTER

    server.restart()

    with browser.client(server) as client:
        for conversation_id in conversation_ids:
            users = whole_turns(history(client, conversation_id))
            mine = [sender for sender, cid in senders.items() if cid == conversation_id]
            assert sum(u.split()[0] in mine for u in users) == len(users), users
            for sender in mine:
                stored = [u for u in users if u.split()[0] == sender]
                # Each sender's turns are stored in order, without gaps or repeats: all
                # acknowledged ones, plus at most the one it was waiting for at the kill.
                assert stored == [f"{sender} turn {i}" for i in range(len(stored))]
                assert len(acknowledged[sender]) <= len(stored) <= len(acknowledged[sender]) + 1
                assert stored[: len(acknowledged[sender])] == acknowledged[sender]

        browser.chat(client, "after the burst", conversation_ids[0])
        assert whole_turns(history(client, conversation_ids[0]))[-1] == "after the burst"
