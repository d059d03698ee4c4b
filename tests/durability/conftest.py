"""Real ``chatbot web`` processes that a test can kill -9, restart, or run side by side.

A :class:`ServerProcess` is ``python -m chatbot web --port N`` with an environment of
the test's choosing: a server-configured provider pointing at the fake upstream (so
every browser is connected without ``/api/connect``) and a store, either SQLite in
a data directory or a fresh PostgreSQL database. It listens on a free port that it
keeps across restarts, so a browser comes back to the same address with the same
cookie, as after a real crash. Its output goes to a log file, whose tail is shown
when it fails to start.

A :class:`Browser` is one session cookie, sent to whichever server it talks to; it
fails the test if a server does not recognise the session and issues a new one.

PostgreSQL comes from ``CHATBOT_TEST_POSTGRES_URL`` (default: the role and database
that ``.ci/run`` creates). Each test gets a database of its own, created with the
``chatbot`` role's CREATEDB right and dropped afterwards, so tests see neither each
other's rows nor each other's advisory locks. When the server is unreachable the
PostgreSQL tests are skipped with the reason, except when ``CI`` is set: there they
fail, because a CI run that silently skipped them would prove nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.fakes.upstream import DEFAULT_API_KEY, FakeUpstream

COOKIE_NAME = "chatbot_session"
STARTUP_TIMEOUT = 40.0  # seconds: a cold start imports the whole web stack on a busy machine
HTTP_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerNotReady(AssertionError):
    """The server process exited, or did not answer ``/healthz``, in time."""


class ServerProcess:
    """One ``chatbot web`` process, restartable on the same port with the same environment."""

    def __init__(self, env: Mapping[str, str], workdir: Path, name: str) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def launch(self) -> None:
        """Start the process; :meth:`wait_ready` waits until it serves."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self._close_log()
        self.starts += 1
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatbot",
                "web",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll ``/healthz`` until it answers 200.

        Raises:
            ServerNotReady: the process exited first, or ``timeout`` passed.
        """
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerNotReady(
                        f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise ServerNotReady(
            f"{self.name} did not answer /healthz in {timeout:g} s:\n{self.log_tail()}"
        )

    def start(self) -> ServerProcess:
        """Launch and wait until it serves; returns self."""
        self.launch()
        self.finish_start()
        return self

    def finish_start(self, attempts: int = 3) -> None:
        """Wait until the launched process serves.

        If something else took the port meanwhile (it was free when chosen), the
        server moves to another one; clients made afterwards use the new URL.

        Raises:
            ServerNotReady: it did not come up, for another reason or on any port.
        """
        for attempt in range(attempts):
            try:
                self.wait_ready()
                return
            except ServerNotReady:
                if attempt + 1 == attempts or "Address already in use" not in self.log_tail():
                    raise
            self.port = free_port()
            self.launch()

    def kill(self) -> None:
        """``kill -9``: the process gets no chance to finish, flush or commit anything."""
        assert self.process is not None and self.process.poll() is None, (
            f"{self.name} is not running"
        )
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def restart(self) -> None:
        """Start again after :meth:`kill`: same port, same store, same environment."""
        self.start()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._close_log()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class Servers:
    """Makes server processes for one test and kills whatever is left at its end."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self._made: list[ServerProcess] = []

    def make(self, **overrides: str) -> ServerProcess:
        """A server (not started yet) with the test's environment plus ``overrides``."""
        server = ServerProcess(
            {**self.env, **overrides}, self.workdir, name=f"server{len(self._made) + 1}"
        )
        self._made.append(server)
        return server

    def start(self, count: int = 1, **overrides: str) -> list[ServerProcess]:
        """``count`` servers on one store, started side by side."""
        made = [self.make(**overrides) for _ in range(count)]
        for server in made:
            server.launch()
        for server in made:
            server.finish_start()
        return made

    def close(self) -> None:
        for server in self._made:
            server.close()


class Browser:
    """One browser session: its cookie goes to whichever server it talks to."""

    def __init__(self) -> None:
        self.session: str | None = None

    def client(self, server: ServerProcess) -> httpx.Client:
        """An HTTP client for ``server`` that sends this browser's cookie (close it)."""
        headers = {"Cookie": f"{COOKIE_NAME}={self.session}"} if self.session else {}
        return httpx.Client(
            base_url=server.url,
            headers=headers,
            timeout=HTTP_TIMEOUT,
            event_hooks={"response": [self._note_cookie]},
        )

    def _note_cookie(self, response: httpx.Response) -> None:
        issued = response.cookies.get(COOKIE_NAME)
        if issued is None:
            return
        assert self.session is None, (
            f"{response.request.url.host}:{response.request.url.port} did not recognise the "
            "browser's session and issued a new one"
        )
        self.session = issued

    def chat(self, client: httpx.Client, message: str, conversation_id: str) -> dict[str, Any]:
        """One acknowledged turn through ``POST /api/chat``; fails the test otherwise."""
        response = client.post(
            "/api/chat", json={"message": message, "conversation_id": conversation_id}
        )
        assert response.status_code == 200, (response.status_code, response.text)
        body: dict[str, Any] = response.json()
        assert body["ok"] is True and body["conversation_id"] == conversation_id, body
        assert body["reply"] == reply_to(message), body
        return body

    def new_conversation(self, client: httpx.Client) -> str:
        response = client.post("/api/conversations", json={})
        assert response.status_code == 200, (response.status_code, response.text)
        conversation_id: str = response.json()["conversation"]["id"]
        assert self.session is not None, "the server set no session cookie"
        return conversation_id


def reply_to(message: str) -> str:
    """What the fake upstream answers to ``message`` by default."""
    return f"You said: {message}"


def history(client: httpx.Client, conversation_id: str) -> list[dict[str, Any]]:
    """The stored messages of a conversation, through ``GET /api/conversations/{id}``."""
    response = client.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, (response.status_code, response.text)
    messages: list[dict[str, Any]] = response.json()["messages"]
    assert response.json()["conversation"]["message_count"] == len(messages)
    return messages


def whole_turns(messages: list[dict[str, Any]]) -> list[str]:
    """The user messages of a history made only of whole, complete turns.

    Asserts that users and assistants alternate, starting with a user and ending with
    an assistant (so there is no half turn), and that each reply is the full answer
    to the message before it, not stopped.
    """
    assert len(messages) % 2 == 0, f"odd message count {len(messages)}: a half turn was stored"
    users: list[str] = []
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert user["role"] == "user", messages
        assert assistant["role"] == "assistant", messages
        assert assistant["content"] == reply_to(user["content"]), (user, assistant)
        assert not user["stopped"] and not assistant["stopped"], (user, assistant)
        users.append(user["content"])
    return users


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a ``text/event-stream`` body, as they arrive."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped (with its connections) after the test."""
    name = f"chatbot_durability_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        parts = urlsplit(postgres_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_env(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the servers keep conversations: SQLite in a data directory, or PostgreSQL."""
    if store_kind == "sqlite":
        return {"CHATBOT_DATA_DIR": str(tmp_path / "data")}
    return {"DATABASE_URL": str(request.getfixturevalue("postgres_database_url"))}


@pytest.fixture
def servers(
    store_env: dict[str, str], fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[Servers]:
    """Server processes on the test's store, with the fake upstream as their provider."""
    env = {
        **os.environ,
        **store_env,
        "PROVIDER": "openai",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "MODEL": "fake-model",
        "BASE_URL": fake_upstream.url,
        "CHATBOT_RETRY_ATTEMPTS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    made = Servers(env, tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def browser() -> Browser:
    return Browser()
