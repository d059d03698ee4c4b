"""The real server: ``chatbot.server.serve`` in a subprocess, over HTTP, stopped by a signal."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests._environment import make_run_allocator_env
from tests.fakes.upstream import DEFAULT_API_KEY, FakeUpstream, Reply

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERVE = "from chatbot import Settings; from chatbot.server import serve; serve(Settings.from_env())"


class Server:
    def __init__(self, process: subprocess.Popen[str], url: str, data_dir: Path) -> None:
        self.process = process
        self.url = url
        self.data_dir = data_dir

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=20)


@contextmanager
def start_server(tmp_path: Path, **variables: str) -> Iterator[Server]:
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "CHATBOT_DATA_DIR": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
        **variables,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        if not line.startswith("chatbot web UI on http://127.0.0.1:"):
            process.kill()
            pytest.fail(f"the server did not start: {line!r}\n{process.stderr.read()}")
        yield Server(process, line.split(" on ", 1)[1].strip(), tmp_path / "data")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _provider_of(fake_upstream: FakeUpstream) -> dict[str, str]:
    return {"PROVIDER": "openai", "OPENAI_API_KEY": DEFAULT_API_KEY, "MODEL": "fake-model",
            "BASE_URL": fake_upstream.url}


@pytest.fixture
def server(tmp_path: Path, fake_upstream: FakeUpstream) -> Iterator[Server]:
    with start_server(tmp_path, **_provider_of(fake_upstream), CHATBOT_RETRY_ATTEMPTS="1") as running:
        yield running


def test_the_server_serves_the_ui_and_the_api(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        status = client.get("/api/status").json()
        assert status["connected"] is True
        assert (status["provider"], status["model"]) == ("openai", "fake-model")
        reply = client.post("/api/chat", json={"message": "over real HTTP"}).json()
        assert reply["reply"] == "You said: over real HTTP"
    assert server.stop(signal.SIGINT) == 0


def test_the_server_forgets_idle_browsers_and_knows_them_again(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    variables = {**_provider_of(fake_upstream), "CHATBOT_ACTOR_IDLE_SECONDS": "1", "LOG_LEVEL": "DEBUG"}
    with start_server(tmp_path, **variables) as running:
        stderr = running.process.stderr
        assert stderr is not None
        log: list[str] = []

        def read_log() -> None:
            for line in stderr:
                log.append(line)

        threading.Thread(target=read_log, daemon=True).start()
        with httpx.Client(base_url=running.url, timeout=10) as client:
            first = client.post("/api/chat", json={"message": "before"}).json()
            # Sessions are looked at once a second, and forgotten after 1 s idle.
            deadline = time.monotonic() + 30
            while not any("forgot 1 browser session(s) idle for 1 s" in line for line in log):
                assert time.monotonic() < deadline, "".join(log)
                time.sleep(0.05)
            again = client.post("/api/chat", json={"message": "after"}).json()
        assert again["conversation_id"] == first["conversation_id"]
        assert running.stop() == 0


def test_the_server_runs_on_jemalloc_as_make_run_starts_it(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    allocator = make_run_allocator_env()
    assert allocator["PYTHONMALLOC"] == "malloc"
    with start_server(tmp_path, **allocator, **_provider_of(fake_upstream)) as running:
        maps = Path(f"/proc/{running.process.pid}/maps").read_text()
        assert "libjemalloc" in maps
        with httpx.Client(base_url=running.url, timeout=10) as client:
            reply = client.post("/api/chat", json={"message": "on jemalloc"}).json()
            assert reply["reply"] == "You said: on jemalloc"
            metrics = client.get("/metrics").text
        # CPython's allocator counts blocks; with PYTHONMALLOC=malloc there is nothing to count.
        assert "chatbot_python_allocated_blocks" not in metrics
        assert "process_resident_memory_bytes" in metrics
        assert running.stop() == 0
        assert "Invalid conf" not in running.process.stderr.read()  # type: ignore[union-attr]


def test_make_run_the_image_the_benchmarks_and_the_docs_agree_on_jemalloc() -> None:
    makefile = (REPO / "Makefile").read_text()
    [conf] = re.findall(r"^JEMALLOC_CONF\s*:=\s*(\S+)$", makefile, re.MULTILINE)
    assert f"MALLOC_CONF={conf}" in (REPO / "Dockerfile").read_text()
    assert f'"{conf}"' in (REPO / "bench" / "_processes.py").read_text()
    assert f"MALLOC_CONF={conf}" in (REPO / "docs" / "operations.md").read_text()


def test_sigterm_ends_streams_gracefully(server: Server, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(text="one two three four five six seven eight", chunks=8, token_delay=0.5))
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("POST", "/api/chat/stream", json={"message": "count slowly"}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "event: delta"
        first = json.loads(next(lines).removeprefix("data: "))["text"]
        server.process.send_signal(signal.SIGTERM)
        rest = list(lines)
    assert server.process.wait(timeout=20) == 0
    events = [line for line in rest if line.startswith("event: ")]
    assert events[-1] == "event: error"
    error = json.loads(rest[rest.index("event: error") + 1].removeprefix("data: "))
    assert error["code"] == "shutting_down"
    assert "done" not in " ".join(events)

    with sqlite3.connect(server.data_dir / "chatbot.db") as db:
        rows = db.execute("SELECT role, content, stopped FROM messages ORDER BY seq").fetchall()
    assert rows[0] == ("user", "count slowly", 0)
    assert rows[1][0] == "assistant" and rows[1][2] == 1
    assert rows[1][1].startswith(first)
    assert len(rows[1][1]) < len("one two three four five six seven eight")


def test_a_misconfigured_provider_does_not_stop_the_server(tmp_path: Path) -> None:
    with start_server(tmp_path, PROVIDER="openai") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            status = client.get("/api/status").json()
        assert status["connected"] is False
        assert "OPENAI_API_KEY" in status["provider_error"]
        server.process.send_signal(signal.SIGTERM)
        _, errors = server.process.communicate(timeout=20)
        assert server.process.returncode == 0
    assert "no provider configured" in errors
    assert "OPENAI_API_KEY" in errors
