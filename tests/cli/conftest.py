"""Run the real ``chatbot`` command in a subprocess (pipes) or a pseudo-terminal (pexpect).

Every run gets its own data directory and working directory, and talks to the
session's fake upstream (OpenAI wire format) with the fake's key.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import attrs
import pexpect
import pytest

from chatbot.cli import main
from tests.fakes import DEFAULT_API_KEY, FakeUpstream

REPO_ROOT = Path(__file__).resolve().parents[2]

# The command's own startup is the slow part (imports, store migrations); allow plenty.
RUN_TIMEOUT = 30
EXPECT_TIMEOUT = 15


@attrs.define
class Cli:
    """Runs ``python -m chatbot`` with an isolated environment pointed at the fake upstream."""

    env: dict[str, str]
    cwd: Path
    data_dir: Path
    monkeypatch: pytest.MonkeyPatch | None = None
    capsys: pytest.CaptureFixture[str] | None = None
    children: list[pexpect.spawn] = attrs.field(factory=list)

    def run(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion with stdin from ``input`` (never a terminal: pipe mode)."""
        return subprocess.run(
            [sys.executable, "-m", "chatbot", *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    def call(
        self, *args: str, input: str = "", env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``main()`` in this process (faster), as :meth:`run` would in a subprocess."""
        assert self.monkeypatch is not None and self.capsys is not None
        with self.monkeypatch.context() as patch:
            for key, value in {**self.env, **(env or {})}.items():
                patch.setenv(key, value)
            patch.setattr(sys, "stdin", io.StringIO(input))
            self.capsys.readouterr()
            status = main(list(args))
            out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(["chatbot", *args], status, out, err)

    def spawn(self, *args: str, env: Mapping[str, str] | None = None) -> pexpect.spawn:
        """Start ``chatbot cli`` in a pseudo-terminal (stdin and stdout are a terminal)."""
        child = pexpect.spawn(
            sys.executable,
            ["-m", "chatbot", "cli", *args],
            env={**self.env, **(env or {})},
            cwd=str(self.cwd),
            encoding="utf-8",
            timeout=EXPECT_TIMEOUT,
            dimensions=(40, 120),
        )
        self.children.append(child)
        return child

    def close(self) -> None:
        """Kill what a failed test left running."""
        for child in self.children:
            if child.isalive():
                child.terminate(force=True)
            child.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def base_env(data_dir: Path) -> dict[str, str]:
    """The parent's environment (already stripped of config by ``isolated_env``) plus isolation."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        CHATBOT_DATA_DIR=str(data_dir),
        CHATBOT_RETRY_ATTEMPTS="1",  # one request per turn, so scripted failures are not retried
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",  # pexpect does not answer cursor-position requests
        NO_COLOR="1",
        COLUMNS="120",
        LINES="40",
    )
    return env


@pytest.fixture
def cli(
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Cli]:
    """The command, configured for the fake upstream: ``PROVIDER=openai`` with the fake's key."""
    data_dir = tmp_path / "data"
    env = base_env(data_dir)
    env.update(PROVIDER="openai", OPENAI_API_KEY=DEFAULT_API_KEY, BASE_URL=fake_upstream.url)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    command = Cli(env=env, cwd=workdir, data_dir=data_dir, monkeypatch=monkeypatch, capsys=capsys)
    yield command
    command.close()


@pytest.fixture
def bare_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """The command with no provider configuration at all (for configuration errors)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir(exist_ok=True)
    data_dir = tmp_path / "data"
    return Cli(base_env(data_dir), workdir, data_dir, monkeypatch=monkeypatch, capsys=capsys)
