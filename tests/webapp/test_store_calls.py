"""How many SQLite store calls a turn costs, and that the shortcuts behind it are safe.

Every SQLite call costs CPU on each turn (and a trip to the store's worker thread,
unless it is a quick one). An ordinary turn makes one (its commit); the first turn of a new browser makes
three (create the conversation, save the session, commit the turn): the new
conversation's actor starts from what the supervisor just created, without reading
it back. These tests count the calls, so a change that adds one fails here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from quart.typing import TestClientProtocol as Client

from chatbot import ActorCrashed, Message, ProviderConfig, Settings, Supervisor
from chatbot.store.sqlite import SQLiteStore
from tests.fakes.scripted import ScriptedProvider

from .conftest import open_web, settings_with

pytestmark = pytest.mark.anyio

T = TypeVar("T")

SERVED = ProviderConfig(provider="ollama", model="llama-test")
CREATE, SAVE_SESSION, COMMIT, LOAD = (
    "Creating a conversation",
    "Saving a session",
    "Saving the turn",
    "Loading a conversation",
)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The action of every SQLite store call, in order (clear it before measuring)."""
    made: list[str] = []
    call = SQLiteStore._call

    async def counted(
        self: SQLiteStore, action: str, work: Callable[[Any], T], *, quick: bool = False
    ) -> T:
        made.append(action)
        return await call(self, action, work, quick=quick)

    monkeypatch.setattr(SQLiteStore, "_call", counted)
    return made


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'chatbot.db'}")
    try:
        yield store
    finally:
        await store.aclose()


async def _chat(client: Client, message: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/chat", json={"message": message, **body})
    text = await response.get_data(as_text=True)
    assert response.status_code == 200, text
    answer: dict[str, Any] = json.loads(text)
    return answer


async def _measure(calls: list[str], client: Client, message: str) -> list[str]:
    calls.clear()
    await _chat(client, message)
    return list(calls)


# -- through the web API ---------------------------------------------------------------


async def test_a_turn_costs_one_store_call(sqlite_store: SQLiteStore, calls: list[str]) -> None:
    async with open_web(settings=Settings(provider=SERVED), store=sqlite_store) as web:
        client = web.client()
        await _chat(client, "first")
        for turn in range(3):
            assert await _measure(calls, client, f"turn {turn}") == [COMMIT]


async def test_a_new_browsers_first_turn_costs_three_store_calls(
    sqlite_store: SQLiteStore, calls: list[str]
) -> None:
    async with open_web(settings=Settings(provider=SERVED), store=sqlite_store) as web:
        for _browser in range(2):
            client = web.client()
            assert await _measure(calls, client, "hello") == [CREATE, SAVE_SESSION, COMMIT]
            assert await _measure(calls, client, "again") == [COMMIT]


async def test_after_connecting_the_first_turn_costs_one_store_call(
    sqlite_store: SQLiteStore, calls: list[str]
) -> None:
    async with open_web(store=sqlite_store) as web:
        calls.clear()
        client = await web.connected_client()
        assert calls == [CREATE, SAVE_SESSION]
        # The provider the browser connected to is already what the store holds.
        assert await _measure(calls, client, "hello") == [COMMIT]


async def test_an_evicted_conversation_is_read_back_in_one_call(
    sqlite_store: SQLiteStore, calls: list[str]
) -> None:
    settings = settings_with(provider=SERVED, max_actors=1)
    async with open_web(settings=settings, store=sqlite_store) as web:
        first, second = web.client(), web.client()
        await _chat(first, "one")
        await _chat(second, "two")  # its actor takes the only place: the first's leaves
        assert await _measure(calls, first, "three") == [LOAD, COMMIT]
        assert await _measure(calls, first, "four") == [COMMIT]
        history = await web.supervisor.history((await _chat(first, "five"))["conversation_id"])
    assert [m.content for m in history][::2] == ["one", "three", "four", "five"]


# -- the supervisor hands a new conversation to its first actor, safely -------------------


def _supervisor(store: SQLiteStore, provider: ScriptedProvider) -> Supervisor:
    return Supervisor(store=store, default_config=SERVED, provider_factory=provider.factory)


async def test_create_returns_what_the_store_holds(sqlite_store: SQLiteStore) -> None:
    async with _supervisor(sqlite_store, ScriptedProvider()) as sup:
        info = await sup.create_conversation(owner="o", title="Plans")
        assert info == await sup.conversation(info.id)
        imported = await sup.create_conversation(messages=(Message.user("q"), Message.assistant("a")))
        assert imported == await sup.conversation(imported.id)
        assert imported.message_count == 2


async def test_a_restarted_actor_reads_the_store_not_the_creation(
    sqlite_store: SQLiteStore,
) -> None:
    provider = ScriptedProvider()
    async with _supervisor(sqlite_store, provider) as sup:
        info = await sup.create_conversation()
        await sup.chat(info.id, "before")
        provider.enqueue(RuntimeError("bug in an adapter"))
        with pytest.raises(ActorCrashed):
            await sup.chat(info.id, "boom")
        with anyio.fail_after(5):
            while not sup.statistics().restarts:  # the crashed incarnation is gone
                await anyio.sleep(0.01)
        await sup.chat(info.id, "after")
    assert [m.content for m in provider.requests[-1].messages] == [
        "before", "You said: before", "after",
    ]


async def test_a_deleted_conversation_is_not_handed_to_an_actor(
    sqlite_store: SQLiteStore,
) -> None:
    async with _supervisor(sqlite_store, ScriptedProvider()) as sup:
        info = await sup.create_conversation()
        await sup.delete(info.id)
        # As for any unknown id: the first turn creates the conversation again.
        assert (await sup.chat(info.id, "hello")).text == "You said: hello"
        assert (await sup.conversation(info.id)).message_count == 2


async def test_an_imported_conversation_starts_with_its_history(
    sqlite_store: SQLiteStore,
) -> None:
    provider = ScriptedProvider()
    async with _supervisor(sqlite_store, provider) as sup:
        info = await sup.create_conversation(messages=(Message.user("q"), Message.assistant("a")))
        await sup.chat(info.id, "next")
    assert [m.content for m in provider.requests[-1].messages] == ["q", "a", "next"]
