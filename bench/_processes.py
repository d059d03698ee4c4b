"""Starting, measuring and stopping the processes a benchmark needs.

Each process is started by the harness and stopped by its own pid (process group
for servers that fork). CPU time and memory are read from ``/proc``: ``utime +
stime`` of the process and its descendants, ``VmRSS`` and ``VmHWM`` (the peak,
which :meth:`Proc.reset_peak` resets by writing ``5`` to ``clear_refs``). The whole
machine's busy time comes from ``/proc/stat``, so a report can say when something
else was competing for the two cores.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs

__all__ = [
    "REPO",
    "CpuSample",
    "Proc",
    "allocator_env",
    "allocator_name",
    "free_port",
    "http_json",
    "machine_busy",
    "run_loadgen",
    "start",
    "wait_until",
]

REPO: Final = Path(__file__).resolve().parent.parent
_TICK: Final = os.sysconf("SC_CLK_TCK")
_PAGE_KIB: Final = os.sysconf("SC_PAGE_SIZE") // 1024

# Where distributions install jemalloc, and how it is set up: the same as `make run` and
# the Docker image (docs/operations.md, "Memory").
_JEMALLOC_CONF: Final = "background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0"
_JEMALLOC_PATTERNS: Final = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def allocator_env() -> dict[str, str]:
    """The allocator settings of every process the benchmarks start (LiteLLM and the fake too).

    jemalloc when it is installed, as in production; ``BENCH_ALLOCATOR=pymalloc`` keeps
    CPython's own allocator.
    """
    if os.environ.get("BENCH_ALLOCATOR", "auto") == "pymalloc":
        return {}
    for pattern in _JEMALLOC_PATTERNS:
        for path in sorted(glob.glob(pattern)):
            return {"LD_PRELOAD": path, "PYTHONMALLOC": "malloc", "MALLOC_CONF": _JEMALLOC_CONF}
    return {}


def allocator_name() -> str:
    """How :func:`allocator_env` sets memory up, for the reports."""
    env = allocator_env()
    return f"jemalloc ({env['LD_PRELOAD']})" if env else "CPython's pymalloc"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as file:
        text = file.read()
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@attrs.frozen
class CpuSample:
    """CPU seconds used by a process tree, and when they were read."""

    cpu: float
    at: float


def machine_busy() -> tuple[float, float]:
    """(busy seconds of all CPUs, seconds of wall-clock per CPU) since boot, from /proc/stat."""
    with open("/proc/stat") as file:
        values = [int(v) for v in file.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


@attrs.define
class Proc:
    """A started process: its Popen, a log file, and /proc readings."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    started_at: float = 0.0
    first_line: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            children = [child for pid in frontier for child in _children(pid)]
            pids += children
            frontier = children
        return pids

    def cpu(self) -> CpuSample:
        total = 0
        for pid in self.tree():
            try:
                fields = _stat_fields(pid)
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return CpuSample(total / _TICK, time.perf_counter())

    def rss_kib(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in self.tree())

    def peak_kib(self) -> int:
        return sum(_status_kib(pid, "VmHWM") for pid in self.tree())

    def reset_peak(self) -> None:
        for pid in self.tree():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it does not exit in time."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers the leader left behind
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    read_first_line: bool = False,
    timeout: float = 30.0,
) -> Proc:
    """Start ``argv`` in a new session (its own process group) and return it.

    With ``read_first_line`` the first stdout line (a URL) is awaited and kept; the
    rest of the output goes to ``log_path`` or is discarded.

    Raises:
        RuntimeError: the process exited or printed nothing within ``timeout``.
    """
    log: IO[bytes] | int = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if read_first_line else log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        if not isinstance(log, int):
            log.close()
    proc = Proc(name, popen, log_path, time.perf_counter())
    if read_first_line:
        assert popen.stdout is not None
        line = _readline(popen.stdout, timeout)
        if not line:
            proc.stop()
            raise RuntimeError(f"{name} printed nothing: {proc.log_tail()}")
        proc.first_line = line
    return proc


def _readline(stream: IO[bytes], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline().decode().strip()


def http_json(
    url: str, payload: Any = None, *, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, Any, Mapping[str, str]]:
    """One request with the standard library (status, parsed JSON or text, headers)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks talk to 127.0.0.1 only")
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status, response_headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        body, status, response_headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(body), response_headers
    except ValueError:
        return status, body.decode(errors="replace"), response_headers


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Call ``check()`` until it is true or ``timeout`` passes; bounded."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if check():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(interval)
    return False


def run_loadgen(spec: Mapping[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``python -m bench.loadgen`` with ``spec`` and return its result.

    Raises:
        RuntimeError: the load generator failed or did not finish within ``timeout``.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(dict(spec)).encode(),
        capture_output=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result
