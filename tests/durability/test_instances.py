"""Two ``chatbot web`` processes on one PostgreSQL database, one browser, one conversation.

Requests alternate between the instances as a load balancer without sticky sessions
would send them, first one at a time, then two at once (one per instance). Both
instances must recognise the browser's session, no turn may be lost or duplicated,
each turn must reach the model with every earlier turn as context (so neither
instance answered from a stale cached history, and concurrent turns were
serialized), and both instances must return the same history.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fakes.upstream import FakeUpstream, Reply

from .conftest import Browser, Servers, history, reply_to, whole_turns

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SEQUENTIAL_TURNS = 6
CONCURRENT_ROUNDS = 5


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_two_instances_serve_one_conversation_without_losing_a_turn(
    servers: Servers, browser: Browser, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.default = Reply(token_delay=0.02)  # each reply streams for ~0.1 s
    first, second = servers.start(2)
    sequential: list[str] = []
    rounds: list[set[str]] = []
    with browser.client(first) as a:
        conversation_id = browser.new_conversation(a)
        with browser.client(second) as b:
            # The other instance recognises the session (a new cookie fails the test).
            listed = b.get("/api/conversations").json()["conversations"]
            assert [c["id"] for c in listed] == [conversation_id]

            for i in range(SEQUENTIAL_TURNS):
                client, name = (a, "first") if i % 2 == 0 else (b, "second")
                message = f"turn {i} through the {name} instance"
                browser.chat(client, message, conversation_id)
                sequential.append(message)

            with ThreadPoolExecutor(2) as pool:
                for r in range(CONCURRENT_ROUNDS):
                    pair = {
                        client: f"round {r} through {name}" for client, name in ((a, "a"), (b, "b"))
                    }
                    futures = [
                        pool.submit(browser.chat, client, message, conversation_id)
                        for client, message in pair.items()
                    ]
                    for future in futures:
                        future.result()  # 200 and the full reply, or the test fails
                    rounds.append(set(pair.values()))

            via_first = history(a, conversation_id)
            via_second = history(b, conversation_id)
            assert via_first == via_second

            summaries = [
                [
                    (c["id"], c["message_count"])
                    for c in client.get("/api/conversations").json()["conversations"]
                ]
                for client in (a, b)
            ]
            assert summaries == [[(conversation_id, len(via_first))]] * 2

    users = whole_turns(via_first)
    turns = SEQUENTIAL_TURNS + 2 * CONCURRENT_ROUNDS
    assert len(users) == len(set(users)) == turns, users  # none lost, none twice
    assert users[:SEQUENTIAL_TURNS] == sequential
    for r, messages in enumerate(rounds):
        start = SEQUENTIAL_TURNS + 2 * r
        assert set(users[start : start + 2]) == messages  # one after the other, in either order

    # Each turn went upstream with exactly the turns stored before it as context.
    stored = [(m["role"], m["content"]) for m in via_first]
    chats = fake_upstream.chat_requests
    assert len(chats) == turns
    for request in chats:
        sent = [
            (m["role"], m["content"]) for m in request.json["messages"] if m["role"] != "system"
        ]
        *context, (role, text) = sent
        assert role == "user"
        position = users.index(text)
        assert context == stored[: 2 * position], f"turn {text!r} was answered from a stale history"
        assert stored[2 * position + 1] == ("assistant", reply_to(text))
