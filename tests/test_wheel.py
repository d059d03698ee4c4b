"""The path the Docker image takes: build the wheel, install it into a fresh venv, serve.

This proves the wheel alone is enough to run the web server: the UI's files ship
inside it (``web/`` → ``chatbot/_web``), the entry point works, and the server
stops cleanly on SIGTERM, as ``docker stop`` sends it.

Installing every dependency from the index takes a while, so their wheels are kept
in a wheelhouse (``$CHATBOT_TEST_WHEELHOUSE``, default ``~/.cache/chatbot/test-wheelhouse``)
and later runs install from it without the index; it is refilled whenever the
requirements change. Only the chatbot wheel is built fresh each time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


def _run(*args: str | Path, cwd: Path | None = None) -> None:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    )


def _wheelhouse() -> Path:
    path = Path(
        os.environ.get("CHATBOT_TEST_WHEELHOUSE")
        or Path.home() / ".cache" / "chatbot" / "test-wheelhouse"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip_install(
    python: Path, wheel: Path, wheelhouse: Path, *, offline: bool
) -> subprocess.CompletedProcess[str]:
    """Install ``wheel`` into the venv of ``python`` with this interpreter's pip."""
    args = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--disable-pip-version-check",
    ]
    # No .pyc compilation: it is most of the install time, and Python compiles on import.
    args += ["--no-compile", "--find-links", str(wheelhouse)]
    if offline:
        args.append("--no-index")
    return subprocess.run([*args, str(wheel)], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the freshly built chatbot wheel installed; returns its bin dir."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT, cwd=ROOT)
    (wheel,) = dist.glob("chatbot-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "chatbot/_web/index.html" in names, "the web UI is missing from the wheel"
    assert "chatbot/py.typed" in names

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    wheelhouse = _wheelhouse()
    if _pip_install(python, wheel, wheelhouse, offline=True).returncode != 0:
        # First run, or the requirements changed: fill the wheelhouse from the index.
        _run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--disable-pip-version-check",
            "--wheel-dir",
            wheelhouse,
            wheel,
        )
        for stale in wheelhouse.glob("chatbot-*.whl"):
            stale.unlink()
        result = _pip_install(python, wheel, wheelhouse, offline=True)
        assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin"


@pytest.fixture
def server(installed: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``chatbot web`` from the venv, with no provider configured and an empty data dir.

    It listens on a port the system picks, and says which.
    """
    env = {
        "PATH": f"{installed}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CHATBOT_DATA_DIR": str(tmp_path / "data"),
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [str(installed / "chatbot"), "web", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = ""
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            output = (tmp_path / "server.log").read_text()
            assert process.poll() is None, "the server exited:\n" + output
            listening = re.search(r"chatbot web UI on http://\S+:(\d+)", output)
            if listening:
                base = f"http://127.0.0.1:{listening.group(1)}"
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, (
                "the server did not start:\n" + (tmp_path / "server.log").read_text()
            )
            time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_wheel_serves_the_ui_and_stops_on_sigterm(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    process, base = server
    page = httpx.get(f"{base}/", timeout=5)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<title>Chatbot</title>" in page.text
    script = httpx.get(f"{base}/app.js", timeout=5)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    health = httpx.get(f"{base}/healthz", timeout=5)
    assert (health.status_code, health.json()) == (200, {"ok": True})
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=_STOP_TIMEOUT) == 0, (tmp_path / "server.log").read_text()
