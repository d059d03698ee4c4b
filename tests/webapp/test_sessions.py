"""Browser sessions: cookies, isolation, keys that never leak, persistence across restarts."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from chatbot.store import MemoryStore
from chatbot.webapp.security import BaseUrlPolicy
from chatbot.webapp.sessions import COOKIE_NAME, BrowserSession, SessionManager

from .conftest import CANARY_KEY, Web, open_web, settings_with

pytestmark = pytest.mark.anyio


async def _json(response: Any) -> Any:
    return json.loads(await response.get_data(as_text=True))


def _session_cookie(response: Any) -> str:
    cookies = [v for k, v in response.headers.items() if k.lower() == "set-cookie"]
    [cookie] = [c for c in cookies if c.startswith(f"{COOKIE_NAME}=")]
    return str(cookie)


async def _current(client: Client) -> str:
    cid: str = (await _json(await client.get("/api/status")))["conversation_id"]
    return cid


class CountingStore:
    """Delegates to a MemoryStore and counts the calls, to see what hits the store."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


# -- cookies -------------------------------------------------------------------------


async def test_cookie_attributes(web: Web) -> None:
    cookie = _session_cookie(await web.client().get("/api/status"))
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)  # 256 random bits
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "secure" not in attributes


async def test_cookie_is_secure_over_https(web: Web) -> None:
    cookie = _session_cookie(await web.client().get("/api/status", scheme="https"))
    assert "Secure" in cookie


async def test_each_browser_gets_its_own_session(web: Web) -> None:
    first = _session_cookie(await web.client().get("/api/status"))
    second = _session_cookie(await web.client().get("/api/status"))
    assert first.split(";")[0] != second.split(";")[0]


async def test_the_cookie_is_sent_once(web: Web) -> None:
    client = web.client()
    await client.get("/api/status")
    again = await client.get("/api/status")
    assert "Set-Cookie" not in again.headers


async def test_an_unknown_session_id_is_not_adopted(web: Web) -> None:
    client = web.client()
    forged = "A" * 43
    client.set_cookie("localhost", COOKIE_NAME, forged)
    response = await client.get("/api/status")
    assert forged not in _session_cookie(response)


async def test_known_sessions_are_served_from_memory() -> None:
    store = CountingStore()
    async with open_web(store=store) as web:  # type: ignore[arg-type]
        client = await web.connected_client()
        await client.post("/api/chat", json={"message": "hi"})
        before = Counter(store.calls)
        for _ in range(5):
            await client.get("/api/status")
            await client.post("/api/chat", json={"message": "again"})
        assert store.calls["get_session"] == before["get_session"]
        assert store.calls["save_session"] == before["save_session"]
        assert store.calls["get_conversation"] == before["get_conversation"]


def test_the_session_cache_is_bounded() -> None:
    manager = SessionManager(MemoryStore(), cipher=None, base_urls=BaseUrlPolicy(None), capacity=2)
    for _ in range(5):
        manager._new()
    assert len(manager) == 2



def test_only_sessions_idle_long_enough_leave_the_cache() -> None:
    manager = SessionManager(MemoryStore(), cipher=None, base_urls=BaseUrlPolicy(None))
    stale, fresh = manager._new(), manager._new()
    stale.last_seen -= 120
    assert manager.forget_idle(60) == 1
    assert manager._cache == {fresh.id: fresh}
    assert manager.forget_idle(60) == 0


async def test_a_browser_forgotten_while_idle_comes_back_whole() -> None:
    store = CountingStore()
    async with open_web(store=store) as web:  # type: ignore[arg-type]
        client = await web.connected_client()
        await client.post("/api/chat", json={"message": "before"})
        cid = await _current(client)
        sessions: SessionManager = web.app.extensions["chatbot"].sessions
        assert sessions.forget_idle(3600) == 0  # just seen
        assert sessions.forget_idle(0) == 1
        assert len(sessions) == 0
        loads = store.calls["get_session"]
        reply = await _json(await client.post("/api/chat", json={"message": "after"}))
        assert reply["conversation_id"] == cid  # same browser, same conversation, same key
        assert store.calls["get_session"] == loads + 1
        assert len(sessions) == 1
        assert [m.role for m in web.provider.requests[-1].messages] == ["user", "assistant", "user"]


# -- isolation -----------------------------------------------------------------------


async def test_another_browser_cannot_reach_a_conversation(web: Web) -> None:
    alice = await web.connected_client()
    await alice.post("/api/chat", json={"message": "alice's secret"})
    cid = await _current(alice)
    bob = await web.connected_client(api_key="sk-bob")

    assert (await _json(await bob.get("/api/conversations")))["conversations"][0]["id"] != cid
    attempts: list[Callable[[], Any]] = [
        lambda: bob.get(f"/api/conversations/{cid}"),
        lambda: bob.get(f"/api/conversations/{cid}/export?format=json"),
        lambda: bob.patch(f"/api/conversations/{cid}", json={"title": "mine now"}),
        lambda: bob.delete(f"/api/conversations/{cid}"),
        lambda: bob.post("/api/chat", json={"message": "hi", "conversation_id": cid}),
        lambda: bob.post("/api/chat/stream", json={"message": "hi", "conversation_id": cid}),
        lambda: bob.post("/api/stop", json={"conversation_id": cid}),
    ]
    for attempt in attempts:
        response = await attempt()
        assert response.status_code == 404
        payload = await _json(response)
        assert payload == {"ok": False, "error": "No such conversation.", "code": "not_found"}

    detail = await _json(await alice.get(f"/api/conversations/{cid}"))
    assert detail["conversation"]["title"] == "alice's secret"
    assert [m["content"] for m in detail["messages"]] == ["alice's secret", "You said: alice's secret"]
    assert web.provider.requests[-1].messages[-1].content == "alice's secret"


async def test_a_foreign_id_is_indistinguishable_from_a_missing_one(web: Web) -> None:
    alice = await web.connected_client()
    bob = web.client()
    foreign = await bob.get(f"/api/conversations/{await _current(alice)}")
    missing = await bob.get("/api/conversations/0123456789abcdef0123456789abcdef")
    assert foreign.status_code == missing.status_code == 404
    assert await foreign.get_data() == await missing.get_data()


# -- keys never leak -----------------------------------------------------------------


async def test_the_api_key_never_appears_in_a_response(web: Web) -> None:
    client = await web.connected_client()
    cid = await _current(client)
    responses = [
        await client.get("/api/status"),
        await client.post(
            "/api/connect", json={"provider": "openai", "model": "gpt-x", "api_key": CANARY_KEY}
        ),
        await client.post("/api/chat", json={"message": "hi"}),
        await client.post("/api/chat/stream", json={"message": "hi"}),
        await client.get("/api/models"),
        await client.get("/api/conversations"),
        await client.get(f"/api/conversations/{cid}"),
        await client.get(f"/api/conversations/{cid}/export?format=json"),
        await client.get(f"/api/conversations/{cid}/export?format=md"),
        await client.post("/api/connect", json={"provider": "openai", "model": "m", "api_key": CANARY_KEY, "base_url": "http://10.1.1.1"}),
        await client.post("/api/connect", json={"provider": "nope", "model": "m", "api_key": CANARY_KEY}),
        await client.get("/openapi.json"),
    ]
    for response in responses:
        assert CANARY_KEY not in (await response.get_data(as_text=True))
        assert CANARY_KEY not in str(response.headers)


async def test_without_a_secret_key_the_store_never_holds_the_key() -> None:
    store = MemoryStore()
    async with open_web(store=store) as web:
        await web.connected_client()
        records = list(store._sessions.values())
    assert records and all(r.connection is None for r in records)
    assert CANARY_KEY not in repr(records)


async def test_with_a_secret_key_the_key_is_stored_encrypted() -> None:
    store = MemoryStore()
    async with open_web(store=store, settings=settings_with(secret_key="correct horse")) as web:
        await web.connected_client()
    [record] = store._sessions.values()
    assert record.connection is not None
    assert CANARY_KEY.encode() not in record.connection


# -- restarts ------------------------------------------------------------------------


async def _restart_with(store: MemoryStore, secret: str | None) -> tuple[str, str, dict[str, Any]]:
    """Connect and chat on one server; return (cookie, conversation, status) seen by the next."""
    settings = settings_with(secret_key=secret)
    async with open_web(store=store, settings=settings) as first:
        client = await first.connected_client(model="gpt-remembered")
        await client.post("/api/chat", json={"message": "before the restart"})
        cid = await _current(client)
        cookie = next(str(c.value) for c in client.cookie_jar or () if c.name == COOKIE_NAME)
    async with open_web(store=store, settings=settings) as second:
        client = second.client()
        client.set_cookie("localhost", COOKIE_NAME, cookie)
        status = await _json(await client.get("/api/status"))
    return cookie, cid, status


async def test_a_restart_with_a_secret_key_keeps_the_connection() -> None:
    store = MemoryStore()
    settings = settings_with(secret_key="s3cret-for-tests")
    cookie, cid, status = await _restart_with(store, "s3cret-for-tests")
    assert status["connected"] is True
    assert (status["provider"], status["model"]) == ("openai", "gpt-remembered")
    assert status["conversation_id"] == cid
    async with open_web(store=store, settings=settings) as third:
        client = third.client()
        client.set_cookie("localhost", COOKIE_NAME, cookie)
        reply = await _json(await client.post("/api/chat", json={"message": "after"}))
        assert reply["conversation_id"] == cid
        sent = third.provider.requests[-1]
        assert [m.content for m in sent.messages] == [
            "before the restart",
            "You said: before the restart",
            "after",
        ]
        assert third.provider.config is not None
        assert third.provider.config.api_key == CANARY_KEY


async def test_a_restart_without_a_secret_key_asks_to_reconnect() -> None:
    store = MemoryStore()
    cookie, cid, status = await _restart_with(store, None)
    assert status["connected"] is False
    assert status["conversation_id"] == cid  # the browser is recognised
    async with open_web(store=store) as again:
        client = again.client()
        client.set_cookie("localhost", COOKIE_NAME, cookie)
        listing = await _json(await client.get("/api/conversations"))
        assert [c["id"] for c in listing["conversations"]] == [cid]
        refused = await client.post("/api/chat", json={"message": "hi"})
        assert refused.status_code == 409
        await client.post("/api/connect", json={"provider": "ollama", "model": "llama-x"})
        reply = await _json(
            await client.post("/api/chat", json={"message": "still here?", "conversation_id": cid})
        )
        assert reply["conversation_id"] == cid
        assert len(again.provider.requests[-1].messages) == 3


def test_a_session_remembers_and_forgets_its_conversations_past_the_small_size() -> None:
    session = BrowserSession(id="s")
    ids = [f"c{n}" for n in range(20)]
    for conversation_id in ids:
        session.remember_owned(conversation_id)
        session.remember_owned(conversation_id)  # twice changes nothing
    assert all(conversation_id in session.owned for conversation_id in ids)
    assert len(session.owned) == len(ids)
    session.forget_owned("c3")
    assert "c3" not in session.owned and "c4" in session.owned

    small = BrowserSession(id="t")
    small.remember_owned("a")
    small.remember_owned("b")
    small.forget_owned("a")
    assert "a" not in small.owned and "b" in small.owned

