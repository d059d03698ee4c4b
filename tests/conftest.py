"""Shared fixtures: event-loop backends, an isolated environment, scripted providers."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import psycopg
import pytest

from chatbot.store.postgres import describe
from tests._environment import unavailable

pytest_plugins = ["tests.fakes.fixtures"] if importlib.util.find_spec("tests.fakes.fixtures") else []


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The core runs on both backends; tests that need asyncio override this."""
    return str(request.param)


_CONFIG_VARIABLES = (
    "PROVIDER", "MODEL", "BASE_URL", "MAX_TOKENS", "SYSTEM_PROMPT", "API_KEY",
    "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "OLLAMA_API_KEY",
    "PORT", "HOST", "DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT",
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test sees the developer's keys, .env file or data directory."""
    for name in list(os.environ):
        if name in _CONFIG_VARIABLES or (name.startswith("CHATBOT_") and name != "CHATBOT_TEST_POSTGRES_URL"):
            monkeypatch.delenv(name, raising=False)
    workdir = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(workdir)
    yield


DEFAULT_POSTGRES_URL = "postgresql://chatbot:chatbot@127.0.0.1:5432/chatbot_test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL, once it answers; skips (or fails under CI) otherwise."""
    url = os.environ.get("CHATBOT_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = (
            f"PostgreSQL is not reachable at {describe(url)} ({str(exc).strip().splitlines()[0]}); "
            "set CHATBOT_TEST_POSTGRES_URL or start it as .ci/run does"
        )
        unavailable(reason)
    return url
