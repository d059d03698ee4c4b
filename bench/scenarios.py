"""The benchmark scenarios: what is sent, to whom, and what is read off ``/proc``.

A *target* is something the load generator can talk to: our server (one per store),
the fake upstream itself ("direct", the limit), or the LiteLLM proxy. A scenario
sends the same load to each target in turn, interleaved, and turns each run into a
:class:`Measurement`: turns per second, latency percentiles, time to first token,
the target process's CPU per turn and peak RSS, the load generator's CPU, and how
busy the rest of the machine was meanwhile.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from bench._processes import (
    REPO,
    Proc,
    allocator_env,
    free_port,
    http_json,
    machine_busy,
    run_loadgen,
    start,
    wait_until,
)

__all__ = [
    "MODEL",
    "SYSTEM_PROMPT",
    "Measurement",
    "Target",
    "cold_start",
    "configure_fake",
    "live_actors",
    "measure",
    "percentile",
    "server_env",
    "start_bare_stack",
    "start_fake",
    "start_server",
]

MODEL: Final = "bench-model"
SYSTEM_PROMPT: Final = "You are a helpful, concise assistant."


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@attrs.frozen(kw_only=True)
class Target:
    """Where the load goes, and which process's CPU and memory to read."""

    key: str
    label: str
    kind: str  # "ours" or "openai"
    url: str
    proc: Proc

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@attrs.frozen(kw_only=True)
class Measurement:
    """One target under one load."""

    key: str
    label: str
    turns: int
    errors: int
    error_samples: tuple[str, ...]
    leaks: int
    integrity_failures: int
    wall_s: float
    rate: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    cpu_ms_per_turn: float
    cpu_pct: float
    peak_rss_mib: float
    loadgen_cpu_pct: float
    fake_cpu_pct: float
    other_cpu_pct: float

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def configure_fake(fake: Proc, **values: Any) -> None:
    """Change the fake upstream's delays and reply length for what follows.

    Raises:
        RuntimeError: the fake refused the settings.
    """
    status, body, _ = http_json(f"{fake.first_line}/_bench/config", values)
    if status != 200:
        raise RuntimeError(f"fake upstream refused {values}: {body}")


def start_fake(workdir: Path) -> Proc:
    """Start ``python -m bench.fake_upstream`` on a free port of 127.0.0.1."""
    return start(
        "fake upstream",
        [sys.executable, "-m", "bench.fake_upstream", "--port", "0"],
        env={**_base_env(workdir), "PYTHONPATH": str(REPO)},
        cwd=REPO,
        log_path=workdir / "fake.log",
        read_first_line=True,
    )


def start_bare_stack(fake_url: str, workdir: Path) -> Proc:
    """Start ``python -m bench.bare_stack``: Quart + Hypercorn + httpx and nothing of ours."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = start(
        "bare stack",
        [sys.executable, "-m", "bench.bare_stack", "--port", "0", "--upstream", fake_url],
        env={**_base_env(workdir), "PYTHONPATH": str(REPO)},
        cwd=REPO,
        log_path=workdir / "bare.log",
        read_first_line=True,
    )
    if not wait_until(lambda: http_json(f"{proc.first_line}/healthz")[0] == 200, 30):
        proc.stop()
        raise RuntimeError(f"the bare stack did not start: {proc.log_tail()}")
    return proc


def _base_env(workdir: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "LANG": "C.UTF-8",
           **allocator_env()}
    for name in ("TMPDIR", "PYTHONHASHSEED"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def server_env(
    store: str, fake_url: str, workdir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of ``chatbot web`` for a store (``sqlite`` or ``memory``).

    Only what the benchmark needs is set: no ``.env`` is read (the working directory is
    a fresh temporary one) and the settings are otherwise the defaults.
    """
    env = {
        **_base_env(workdir),
        "PYTHONPATH": str(REPO),
        "PROVIDER": "openai",
        "BASE_URL": fake_url,
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "MODEL": MODEL,
        "CHATBOT_DATA_DIR": str(workdir / "data"),
    }
    if store == "memory":
        env["DATABASE_URL"] = "memory:"
    env.update(extra or {})
    return env


def _server_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "chatbot", "web", "--host", "127.0.0.1", "--port", str(port)]


def start_server(
    store: str,
    fake_url: str,
    workdir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Proc:
    """Start ``chatbot web`` with a store in a fresh ``workdir`` and wait for ``/healthz``.

    Raises:
        RuntimeError: the server exited or did not become healthy within ``timeout``.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "data").mkdir(parents=True)
    port = free_port()
    proc = start(
        f"server ({store})",
        _server_argv(port),
        env=server_env(store, fake_url, workdir, extra_env),
        cwd=workdir,
        log_path=workdir / "server.log",
    )
    proc.first_line = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not proc.alive():
            raise RuntimeError(f"the server exited:\n{proc.log_tail()}")
        return http_json(f"{proc.first_line}/healthz", timeout=2)[0] == 200

    if not wait_until(healthy, timeout, interval=0.02):
        proc.stop()
        raise RuntimeError(f"the server was not healthy within {timeout:.0f} s:\n{proc.log_tail()}")
    return proc


def server_metric(server: Proc, name: str, labels: str | None = None) -> float | None:
    """A gauge or counter from the server's ``/metrics``, or None if absent.

    ``labels`` picks one series by its exact label text (``generation="2"``); without
    it the first series of that name counts.
    """
    try:
        status, text, _ = http_json(f"{server.first_line}/metrics", timeout=10)
    except OSError:
        return None
    if status != 200 or not isinstance(text, str):
        return None
    series = r"(?:\{[^}]*\})?" if labels is None else re.escape(f"{{{labels}}}")
    match = re.search(rf"^{re.escape(name)}{series}\s+([0-9.e+]+)", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def live_actors(server: Proc) -> int | None:
    """``chatbot_live_actors`` from ``/metrics``, or None if it is not there."""
    value = server_metric(server, "chatbot_live_actors")
    return None if value is None else int(value)


def cold_start(store: str, fake_url: str, workdir: Path, *, timeout: float = 60.0) -> dict[str, float]:
    """Seconds from process start to the first successful ``POST /api/chat``.

    Also returns the seconds to the first HTTP answer of any kind and the RSS after that
    first turn (the idle process). The data directory is fresh, so SQLite migrations
    are part of it.

    Raises:
        RuntimeError: no successful chat within ``timeout``.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "data").mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    proc = start(
        f"server ({store})",
        _server_argv(port),
        env=server_env(store, fake_url, workdir),
        cwd=workdir,
        log_path=workdir / "server.log",
    )
    try:
        healthy_at = 0.0

        def answered() -> bool:
            nonlocal healthy_at
            if not proc.alive():
                raise RuntimeError(f"the server exited:\n{proc.log_tail()}")
            status, _, _ = http_json(f"{url}/api/chat", {"message": "hello"}, timeout=10)
            if not healthy_at:
                healthy_at = time.perf_counter()
            return status == 200

        if not wait_until(answered, timeout, interval=0.005):
            raise RuntimeError(f"no successful /api/chat within {timeout:.0f} s:\n{proc.log_tail()}")
        first_chat = time.perf_counter() - began
        time.sleep(0.5)
        return {
            "first_chat_s": first_chat,
            "first_answer_s": (healthy_at or began) - began,
            "rss_mib": proc.rss_kib() / 1024,
        }
    finally:
        proc.stop()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(target: Target, fake: Proc, load: Mapping[str, Any], *, timeout: float = 600.0) -> Measurement:
    """Run the load generator once against ``target`` and read the processes around it.

    Raises:
        RuntimeError: the load generator failed.
    """
    spec = {
        "kind": target.kind,
        "host": "127.0.0.1",
        "port": target.port,
        "model": MODEL,
        "system": SYSTEM_PROMPT,
        **load,
    }
    target.proc.reset_peak()
    target_before = target.proc.cpu()
    fake_before = fake.cpu()
    busy_before, _ = machine_busy()
    children_before = _children_cpu()
    began = time.perf_counter()
    try:
        result = run_loadgen(spec, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the load generator did not finish within {timeout:.0f} s") from exc
    elapsed = time.perf_counter() - began
    children_cpu = _children_cpu() - children_before
    busy_after, _ = machine_busy()
    target_cpu = target.proc.cpu().cpu - target_before.cpu
    fake_cpu = 0.0 if target.proc is fake else fake.cpu().cpu - fake_before.cpu
    others = (busy_after - busy_before) - target_cpu - fake_cpu - children_cpu
    turns = int(result["turns"])
    wall = float(result["wall_s"]) or elapsed
    ttft = result["ttft_ms"]
    latency = result["latency_ms"]
    return Measurement(
        key=target.key,
        label=target.label,
        turns=turns,
        errors=int(result["errors"]),
        error_samples=tuple(result["error_samples"]),
        leaks=int(result["leaks"]),
        integrity_failures=int(result["integrity_failures"]),
        wall_s=wall,
        rate=turns / wall if wall > 0 else 0.0,
        p50_ms=percentile(latency, 0.50),
        p99_ms=percentile(latency, 0.99),
        ttft_p50_ms=percentile(ttft, 0.50) if ttft else None,
        ttft_p99_ms=percentile(ttft, 0.99) if ttft else None,
        cpu_ms_per_turn=target_cpu * 1000 / turns if turns else 0.0,
        cpu_pct=100 * target_cpu / wall if wall > 0 else 0.0,
        peak_rss_mib=target.proc.peak_kib() / 1024,
        loadgen_cpu_pct=100 * float(result["cpu_s"]) / wall if wall > 0 else 0.0,
        fake_cpu_pct=100 * fake_cpu / elapsed if elapsed > 0 else 0.0,
        other_cpu_pct=max(0.0, 100 * others / elapsed) if elapsed > 0 else 0.0,
    )
