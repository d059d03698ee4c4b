"""The fake upstream the provider tests rely on: its checks, its chunking, its process mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import DEFAULT_API_KEY, FakeUpstream, Reply

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
ANTHROPIC = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
OPENAI = {"authorization": f"Bearer {DEFAULT_API_KEY}"}


def messages_body(**changes: Any) -> dict[str, Any]:
    body = {"model": "fake-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return {**body, **changes}


@pytest.mark.parametrize(
    ("headers", "body", "status", "fragment"),
    [
        ({"anthropic-version": "2023-06-01"}, messages_body(), 401, "x-api-key"),
        ({"x-api-key": DEFAULT_API_KEY}, messages_body(), 400, "anthropic-version"),
        (ANTHROPIC, messages_body(max_tokens=None), 400, "max_tokens"),
        (ANTHROPIC, messages_body(messages=[{"role": "system", "content": "x"},
                                            {"role": "user", "content": "hi"}]), 400, "system"),
        (ANTHROPIC, messages_body(messages=[{"role": "user", "content": ""}]), 400, "non-empty"),
        (ANTHROPIC, messages_body(messages=[]), 400, "at least one"),
        (ANTHROPIC, messages_body(model="claude-9"), 404, "claude-9"),
    ],
)
async def test_anthropic_checks(
    fake_upstream: FakeUpstream, headers: dict[str, str], body: dict[str, Any], status: int, fragment: str
) -> None:
    body = {key: value for key, value in body.items() if value is not None}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake_upstream.url}/v1/messages", json=body, headers=headers)
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("flavour", "headers", "body", "status"),
    [
        ("openai", {}, messages_body(), 401),
        ("openai", {"authorization": "Bearer sk-other-key-123"}, messages_body(), 401),
        ("openai", OPENAI, messages_body(messages=[{"role": "user", "content": "a"},
                                                   {"role": "system", "content": "b"}]), 400),
        ("openai", OPENAI, messages_body(stream_options={"include_usage": True}), 400),
        ("openrouter", OPENAI, messages_body(model="nope/model"), 400),
        ("ollama", {}, messages_body(model="llama3.2"), 200),
    ],
)
async def test_openai_checks(
    fake_upstream: FakeUpstream, flavour: Any, headers: dict[str, str], body: dict[str, Any], status: int
) -> None:
    fake_upstream.flavour = flavour
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake_upstream.url}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == status
    assert ("error" in response.json()) == (status != 200)


async def test_split_policy_reaches_the_client_intact(fake_upstream: FakeUpstream) -> None:
    """Each scripted piece is its own HTTP chunk, so clients see the awkward boundaries."""
    fake_upstream.enqueue(Reply(split=3))
    body = messages_body(stream=True)
    async with httpx.AsyncClient() as client, client.stream(
        "POST", f"{fake_upstream.url}/v1/chat/completions", json=body, headers=OPENAI
    ) as response:
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert max(sizes) == 3
    assert len(sizes) > 100


async def test_connections_are_kept_alive(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            response = await client.post(
                f"{fake_upstream.url}/v1/messages", json=messages_body(stream=True), headers=ANTHROPIC
            )
            assert b"event: message_stop" in response.content
    assert len({request.connection for request in fake_upstream.requests}) == 1


def test_runs_as_a_process_and_prints_its_url_first() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", "0", "--chunks", "2",
         "--flavour", "openrouter"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json=messages_body(stream=True),
            headers={"authorization": "Bearer any-key"},
            timeout=5,
        )
        assert response.status_code == 200
        assert response.text.startswith(": OPENROUTER PROCESSING")
        assert response.text.count('"content":"') == 3  # the role chunk and two pieces
    finally:
        process.terminate()
        assert process.wait(10) == 0
        if process.stdout is not None:
            process.stdout.close()
