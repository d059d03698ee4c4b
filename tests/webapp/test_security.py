"""Security headers, cross-site refusal, the access token, base-URL allow-list and limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatbot import ConfigError
from chatbot.webapp import create_app
from chatbot.webapp.errors import ApiError
from chatbot.webapp.security import SECURITY_HEADERS, BaseUrlPolicy, check_same_origin
from chatbot.webapp.sessions import COOKIE_NAME, LOGIN_COOKIE_NAME

from .conftest import Web, open_web, settings_with

pytestmark = pytest.mark.anyio

TOKEN = "correct-horse-battery-staple"


async def _json(response: Any) -> Any:
    return json.loads(await response.get_data(as_text=True))


def assert_secure_headers(response: Any) -> None:
    for name, value in SECURITY_HEADERS:
        assert response.headers[name] == value, name
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp


# -- headers -------------------------------------------------------------------------


async def test_security_headers_on_every_kind_of_response(web: Web) -> None:
    client = await web.connected_client()
    responses = [
        await client.get("/api/status"),
        await client.post("/api/chat/stream", json={"message": "hi"}),
        await client.get("/api/conversations/none"),
        await client.get("/openapi.json"),
        await client.get("/"),
        await client.get("/nothing-here"),
        await client.post("/api/chat", data=b"{", headers={"Content-Type": "application/json"}),
    ]
    for response in responses:
        assert_secure_headers(response)


async def test_api_responses_are_not_cached(web: Web) -> None:
    response = await web.client().get("/api/conversations")
    assert response.headers["Cache-Control"] == "no-store"


# -- cross-site requests ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:8081"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_cross_site_state_change_is_refused(web: Web, headers: dict[str, str]) -> None:
    client = await web.connected_client()
    response = await client.post("/api/conversations", json={}, headers=headers)
    assert response.status_code == 403
    assert (await _json(response))["code"] == "cross_site"
    listing = await _json(await client.get("/api/conversations"))
    assert len(listing["conversations"]) == 1  # only the one connect made


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost"},
        {"Referer": "http://localhost/index.html"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
        {},
    ],
)
async def test_same_origin_and_plain_clients_pass(web: Web, headers: dict[str, str]) -> None:
    client = await web.connected_client()
    response = await client.post("/api/conversations", json={}, headers=headers)
    assert response.status_code == 200


async def test_requests_without_the_cookie_are_not_cross_site_checked(web: Web) -> None:
    response = await web.client().post(
        "/api/conversations", json={}, headers={"Origin": "http://evil.example"}
    )
    assert response.status_code == 200


async def test_reads_are_not_cross_site_checked(web: Web) -> None:
    client = await web.connected_client()
    response = await client.get("/api/status", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://localhost:8080", "localhost:8080", True),
        ("https://chat.example.com", "chat.example.com", True),
        ("https://chat.example.com", "chat.example.com:443", True),
        ("HTTP://LOCALHOST:8080", "localhost:8080", True),
        ("http://chat.example.com:8080", "chat.example.com", False),
        ("https://chat.example.com.evil.net", "chat.example.com", False),
        ("file:///etc/passwd", "localhost", False),
        ("http://localhost:99999", "localhost:99999", False),
    ],
)
def test_origin_comparison(origin: str, host: str, allowed: bool) -> None:
    def check() -> None:
        check_same_origin("DELETE", host, origin, None, None)

    if allowed:
        check()
    else:
        with pytest.raises(ApiError) as caught:
            check()
        assert caught.value.status == 403


# -- access token --------------------------------------------------------------------


@pytest.fixture
async def guarded() -> Any:
    async with open_web(settings=settings_with(auth_token=TOKEN)) as opened:
        yield opened


async def test_the_api_asks_for_the_token(guarded: Web) -> None:
    client = guarded.client()
    status = await _json(await client.get("/api/status"))
    assert status["auth_required"] is True
    for response in (
        await client.get("/api/conversations"),
        await client.get("/api/providers"),
        await client.post("/api/chat", json={"message": "hi"}),
    ):
        assert response.status_code == 401
        assert (await _json(response))["code"] == "auth_required"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_login_flow(guarded: Web) -> None:
    client = guarded.client()
    assert (await client.get("/api/conversations")).status_code == 401
    wrong = await client.post("/api/login", json={"token": "guess"})
    assert wrong.status_code == 401
    assert (await _json(wrong))["code"] == "auth_required"
    right = await client.post("/api/login", json={"token": TOKEN})
    assert await _json(right) == {"ok": True}
    login_cookie = [v for k, v in right.headers.items() if k.lower() == "set-cookie"]
    assert any(c.startswith(f"{LOGIN_COOKIE_NAME}=") and "HttpOnly" in c for c in login_cookie)
    assert TOKEN not in str(right.headers)
    assert (await client.get("/api/conversations")).status_code == 200
    assert (await _json(await client.get("/api/status")))["auth_required"] is False


async def test_bearer_token(guarded: Web) -> None:
    client = guarded.client()
    ok = await client.get("/api/conversations", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    bad = await client.get("/api/conversations", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


async def test_a_login_proof_is_bound_to_its_session(guarded: Web) -> None:
    alice = guarded.client()
    await alice.post("/api/login", json={"token": TOKEN})
    proof = next(str(c.value) for c in alice.cookie_jar or () if c.name == LOGIN_COOKIE_NAME)
    mallory = guarded.client()
    await mallory.get("/api/status")
    mallory.set_cookie("localhost", LOGIN_COOKIE_NAME, proof)
    assert (await mallory.get("/api/conversations")).status_code == 401


async def test_guessing_the_token_is_rate_limited(guarded: Web) -> None:
    client = guarded.client()
    statuses = [
        (await client.post("/api/login", json={"token": f"guess-{i}"})).status_code for i in range(12)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    # Even the right token waits while guesses are being refused.
    assert (await client.post("/api/login", json={"token": TOKEN})).status_code == 429


async def test_login_without_a_configured_token(web: Web) -> None:
    response = await web.client().post("/api/login", json={"token": "anything"})
    assert await _json(response) == {"ok": True}


# -- base URLs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.anthropic.com", True),
        ("https://api.openai.com", True),
        ("https://openrouter.ai/api", True),
        ("http://localhost:11434", True),
        ("http://localhost", True),
        ("http://127.0.0.1:9999", True),
        ("http://[::1]:8000", True),
        ("https://api.openai.com.evil.net", False),
        ("http://localhost.evil.net:11434", False),
        ("http://localhost:80@evil.net", False),
        ("https://localhost:11434", False),
        ("http://10.0.0.5:11434", False),
        ("http://169.254.169.254", False),
        ("https://openrouter.ai/apix", False),
        ("https://api.openai.com:8443", False),
    ],
)
def test_default_allow_list(url: str, allowed: bool) -> None:
    assert BaseUrlPolicy(None).allows(url) is allowed


def test_custom_allow_list() -> None:
    policy = BaseUrlPolicy(["https://llm.internal.example/v1", "http://gpu-box:*"])
    assert policy.allows("https://llm.internal.example")
    assert policy.allows("http://gpu-box:8000")
    assert not policy.allows("https://api.openai.com")
    assert BaseUrlPolicy(["*"]).allows("http://10.0.0.5:1234")


def test_invalid_allow_list_entry() -> None:
    with pytest.raises(ConfigError, match="CHATBOT_ALLOWED_BASE_URLS"):
        BaseUrlPolicy(["not a url"])


async def test_invalid_allow_list_fails_at_startup(web: Web) -> None:
    with pytest.raises(ConfigError):
        create_app(web.supervisor, settings_with(allowed_base_urls=("ftp://x",)))


async def test_connect_outside_the_allow_list_names_the_variable() -> None:
    settings = settings_with(allowed_base_urls=("http://gpu-box:*",))
    async with open_web(settings=settings) as web:
        client = web.client()
        refused = await client.post(
            "/api/connect", json={"provider": "ollama", "model": "m", "base_url": "http://localhost:11434"}
        )
        assert refused.status_code == 400
        payload = await _json(refused)
        assert payload["code"] == "base_url_not_allowed"
        assert "CHATBOT_ALLOWED_BASE_URLS" in payload["error"]
        accepted = await client.post(
            "/api/connect", json={"provider": "ollama", "model": "m", "base_url": "http://gpu-box:8000/v1"}
        )
        assert accepted.status_code == 200


# -- limits --------------------------------------------------------------------------


async def test_body_too_large() -> None:
    async with open_web(settings=settings_with(max_body_bytes=1024)) as web:
        client = await web.connected_client()
        response = await client.post("/api/chat", json={"message": "x" * 2000})
        assert response.status_code == 413
        payload = await _json(response)
        assert payload["code"] == "limit_exceeded"
        assert "CHATBOT_MAX_BODY_BYTES" in payload["error"]
        assert web.app.config["MAX_CONTENT_LENGTH"] == 1024


async def test_chunked_body_too_large() -> None:
    """Without a Content-Length, Quart counts the bytes as they arrive."""
    async with open_web(settings=settings_with(max_body_bytes=1024)) as web:
        client = await web.connected_client()
        async with client.request(
            "/api/chat", method="POST", headers={"Content-Type": "application/json"}
        ) as connection:
            await connection.send(b'{"message": "' + b"x" * 600)
            await connection.send(b"x" * 600 + b'"}')
            await connection.send_complete()
        response = await connection.as_response()
        assert response.status_code == 413
        assert (await _json(response))["code"] == "limit_exceeded"


async def test_rate_limit() -> None:
    settings = settings_with(rate_limit_per_minute=6.0, rate_limit_burst=2)
    async with open_web(settings=settings) as web:
        client = await web.connected_client()
        assert (await client.post("/api/chat", json={"message": "1"})).status_code == 200
        assert (await client.post("/api/chat/stream", json={"message": "2"})).status_code == 200
        limited = await client.post("/api/chat", json={"message": "3"})
        assert limited.status_code == 429
        assert (await _json(limited))["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        # Other endpoints and other browsers are not limited.
        assert (await client.get("/api/conversations")).status_code == 200
        other = await web.connected_client()
        assert (await other.post("/api/chat", json={"message": "1"})).status_code == 200


async def test_no_rate_limit_by_default(web: Web) -> None:
    client = await web.connected_client()
    for i in range(15):
        assert (await client.post("/api/chat", json={"message": str(i)})).status_code == 200


def test_cookie_names() -> None:
    assert COOKIE_NAME == "chatbot_session"
