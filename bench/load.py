"""``python -m bench.load``: many concurrent browser sessions streaming at once.

500 browser sessions (distinct cookies, one connection each) send 5 streaming turns
each, all at the same time, against the fake upstream with realistic latency (300 ms
to the first token, then 20 ms per token, 30 tokens). Every session puts its own
canary in its messages, and the fake echoes every user message of the request it
gets, so each reply shows exactly which conversation the server sent upstream:

* **errors** (must be 0): non-200 answers, ``error`` events, streams without ``done``,
  connection failures or timeouts;
* **leaks** (must be 0): a reply holding another session's canary, or a conversation id
  seen by two sessions or changing within one;
* **integrity failures** (must be 0): a reply that is not exactly this session's own
  messages echoed back in order, or deltas that do not add up to the ``done`` reply.

The server runs with ``CHATBOT_ACTOR_IDLE_SECONDS=5``; its RSS is read at baseline,
at the peak, once every actor was evicted, and once its idle upstream connections have
closed too and it has released memory again. On CPython's own allocator, so is the live Python heap
(``chatbot_python_allocated_blocks``), which shows whether the freed memory is
garbage CPython keeps for reuse or objects still alive. The report is Markdown, printed and
written to ``bench/results/load-latest.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._processes import REPO, allocator_name, machine_busy, run_loadgen, wait_until
from bench.report import markdown_table
from bench.scenarios import (
    configure_fake,
    live_actors,
    percentile,
    server_metric,
    start_fake,
    start_server,
)

__all__ = ["main", "render_load"]

# The shared HTTP client keeps idle upstream connections for 30 s, and its pool is swept
# every 30 s: they are gone within about a minute of the last turn, and the server's
# second collection follows within about a minute of its first.
_UPSTREAM_IDLE_LIMIT_SECONDS = 120.0


def _connections_to(port: int) -> int:
    """Established TCP connections on this machine whose remote end is ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _full_collections(server: Any) -> float:
    """How many full (generation 2) garbage collections the server has run."""
    return server_metric(server, "python_gc_collections_total", 'generation="2"') or 0.0


def _log(message: str) -> None:
    print(f"bench.load: {message}", file=sys.stderr, flush=True)


def render_load(result: dict[str, Any]) -> str:
    """The load test's figures as Markdown."""
    ok = result["errors"] == 0 and result["leaks"] == 0 and result["integrity_failures"] == 0
    rows = [
        ["sessions x streaming turns", f"{result['sessions']} x {result['turns_per_session']}"],
        ["turns completed", f"{result['turns']:,} of {result['sessions'] * result['turns_per_session']:,}"],
        ["errors", str(result["errors"])],
        ["cross-session leaks", str(result["leaks"])],
        ["integrity failures (reply is not exactly the session's own history)", str(result["integrity_failures"])],
        ["upstream: first token / per token / tokens",
         f"{result['first_token_ms']:.0f} ms / {result['token_ms']:.0f} ms / {result['chunks']}"],
        ["TTFT p50 / p99", f"{result['ttft_p50_ms']:.1f} ms / {result['ttft_p99_ms']:.1f} ms"],
        ["turn time p50 / p99", f"{result['turn_p50_ms']:.1f} ms / {result['turn_p99_ms']:.1f} ms"],
        ["ideal turn time (upstream pace)", f"{result['ideal_turn_ms']:.0f} ms"],
        ["run time", f"{result['wall_s']:.1f} s ({result['rate']:.0f} turns/s)"],
        ["server CPU", f"{result['server_cpu_s']:.1f} s ({result['server_cpu_ms_per_turn']:.2f} ms/turn)"],
        ["load generator CPU", f"{result['loadgen_cpu_s']:.1f} s"],
        ["other processes on the machine", f"{result['other_cpu_pct']:.0f} % of a core"],
        ["server RSS: baseline", f"{result['rss_baseline_mib']:.1f} MiB"],
        ["server RSS: peak", f"{result['rss_peak_mib']:.1f} MiB"],
        ["live actors after the run", str(result["live_actors_after_run"])],
        [f"server RSS: after idle eviction ({result['evict_seconds']:g} s idle)",
         f"{result['rss_after_eviction_mib']:.1f} MiB "
         f"(+{result['rss_after_eviction_mib'] - result['rss_baseline_mib']:.1f} MiB over baseline; "
         f"live actors {result['live_actors_after_eviction']})"],
    ]
    if result.get("blocks_baseline") and result.get("blocks_after_eviction"):
        base = result["blocks_baseline"]
        rows.append([
            "Python heap, allocated blocks: baseline / after the run / after eviction",
            f"{base:,.0f} / {result['blocks_after_run']:,.0f} / {result['blocks_after_eviction']:,.0f} "
            f"(after eviction: {100 * (result['blocks_after_eviction'] / base - 1):+.1f} % over baseline)",
        ])
    if result.get("rss_settled_mib") is not None:
        settled = f"{result['rss_settled_mib']:.1f} MiB (+{result['rss_settled_mib'] - result['rss_baseline_mib']:.1f} MiB)"
        if result.get("blocks_baseline") and result.get("blocks_settled"):
            base = result["blocks_baseline"]
            settled += (f"; allocated blocks {result['blocks_settled']:,.0f} "
                        f"({100 * (result['blocks_settled'] / base - 1):+.1f} % over baseline)")
        rows.append([f"server RSS: once the idle upstream connections closed and the server collected again ({result.get('settle_seconds', 35):.0f} s later)",
                     settled])
    lines = [
        "# chatbot load test",
        "",
        f"{result['date']} · `{result['command']}` · store: {result['store']} · "
        f"allocator: {result.get('allocator', 'not recorded')} · "
        f"**{'PASS' if ok else 'FAIL'}**",
        "",
        markdown_table(["", "value"], rows),
    ]
    for sample in result.get("error_samples", [])[:5] + result.get("leak_samples", [])[:5]:
        lines += ["", f"- `{sample}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--first-token-delay", type=float, default=0.3)
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--chunks", type=int, default=30)
    parser.add_argument("--evict-seconds", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "load-latest.md")
    args = parser.parse_args(argv)
    command = "python -m bench.load" + "".join(
        f" {arg}" for arg in (argv if argv is not None else sys.argv[1:])
    )
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "store": args.store,
        "allocator": allocator_name(),
        "sessions": args.sessions,
        "turns_per_session": args.turns,
        "first_token_ms": args.first_token_delay * 1000,
        "token_ms": args.token_delay * 1000,
        "chunks": args.chunks,
        "evict_seconds": args.evict_seconds,
        "ideal_turn_ms": (args.first_token_delay + (args.chunks - 1) * args.token_delay) * 1000,
    }
    with tempfile.TemporaryDirectory(prefix="chatbot-load-") as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir)
        try:
            configure_fake(fake, first_token_delay=0, token_delay=0, chunks=args.chunks, echo_all=True)
            server = start_server(args.store, fake.first_line, workdir / "server", extra_env={
                "CHATBOT_ACTOR_IDLE_SECONDS": str(args.evict_seconds),
                "CHATBOT_MAX_ACTORS": str(max(10_000, args.sessions * 2)),
            })
            try:
                port = int(server.first_line.rsplit(":", 1)[1])
                spec: dict[str, Any] = {
                    "kind": "ours", "host": "127.0.0.1", "port": port, "stream": True,
                    "canary": True, "echo_all": True, "chunks": args.chunks, "timeout": 120,
                }
                warm = run_loadgen({**spec, "sessions": 4, "turns": 2, "rounds": 1})
                if warm["errors"]:
                    raise RuntimeError(f"warm-up failed: {warm['error_samples']}")
                wait_until(lambda: live_actors(server) == 0, args.evict_seconds * 4 + 30, interval=0.5)
                time.sleep(1.0)
                result["rss_baseline_mib"] = server.rss_kib() / 1024
                result["blocks_baseline"] = server_metric(server, "chatbot_python_allocated_blocks")
                configure_fake(fake, first_token_delay=args.first_token_delay,
                               token_delay=args.token_delay, chunks=args.chunks, echo_all=True)
                server.reset_peak()
                cpu_before = server.cpu().cpu
                busy_before, _ = machine_busy()
                fake_before = fake.cpu().cpu
                began = time.perf_counter()
                _log(f"{args.sessions} sessions x {args.turns} streaming turns...")
                run = run_loadgen({**spec, "sessions": args.sessions, "turns": args.turns, "rounds": 1,
                                   "new_connection_per_session": True}, timeout=900)
                elapsed = time.perf_counter() - began
                server_cpu = server.cpu().cpu - cpu_before
                fake_cpu = fake.cpu().cpu - fake_before
                busy_after, _ = machine_busy()
                result["rss_peak_mib"] = server.peak_kib() / 1024
                result["live_actors_after_run"] = live_actors(server)
                result["blocks_after_run"] = server_metric(server, "chatbot_python_allocated_blocks")
                _log(f"waiting for idle eviction ({args.evict_seconds:g} s)...")
                evicted = wait_until(lambda: live_actors(server) == 0, args.evict_seconds * 4 + 60, interval=0.5)
                time.sleep(4.0)  # the server collects garbage a second or two after the last eviction
                result["rss_after_eviction_mib"] = server.rss_kib() / 1024
                result["live_actors_after_eviction"] = live_actors(server)
                result["blocks_after_eviction"] = server_metric(server, "chatbot_python_allocated_blocks")
                began_settling = time.perf_counter()
                collections_before = _full_collections(server)
                fake_port = int(fake.first_line.rsplit(":", 1)[1])
                wait_until(lambda: _connections_to(fake_port) == 0, _UPSTREAM_IDLE_LIMIT_SECONDS, interval=1.0)
                # The server collects again once the connections are gone: wait for it.
                result["collected_after_connections_closed"] = wait_until(
                    lambda: _full_collections(server) > collections_before,
                    _UPSTREAM_IDLE_LIMIT_SECONDS, interval=1.0,
                )
                time.sleep(3.0)  # jemalloc's return of free pages
                result["settle_seconds"] = time.perf_counter() - began_settling
                result["upstream_connections_settled"] = _connections_to(fake_port)
                result["blocks_settled"] = server_metric(server, "chatbot_python_allocated_blocks")
                result["rss_settled_mib"] = server.rss_kib() / 1024
                result["evicted_all"] = evicted
            finally:
                server.stop()
                if server.log_path is not None and server.log_path.exists():
                    log_copy = args.output.with_suffix(".server.log")
                    log_copy.parent.mkdir(parents=True, exist_ok=True)
                    log_copy.write_text(server.log_path.read_text(errors="replace"))
                    result["server_log"] = str(log_copy)
        finally:
            fake.stop()
    turns = int(run["turns"])
    result.update({
        "turns": turns,
        "errors": run["errors"],
        "error_samples": run["error_samples"],
        "leaks": run["leaks"],
        "leak_samples": run["leak_samples"],
        "integrity_failures": run["integrity_failures"],
        "ttft_p50_ms": percentile(run["ttft_ms"], 0.5),
        "ttft_p99_ms": percentile(run["ttft_ms"], 0.99),
        "turn_p50_ms": percentile(run["latency_ms"], 0.5),
        "turn_p99_ms": percentile(run["latency_ms"], 0.99),
        "wall_s": run["wall_s"],
        "rate": turns / run["wall_s"] if run["wall_s"] else 0.0,
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_turn": server_cpu * 1000 / turns if turns else 0.0,
        "loadgen_cpu_s": run["cpu_s"],
        "fake_cpu_s": fake_cpu,
        "other_cpu_pct": max(0.0, 100 * ((busy_after - busy_before) - server_cpu - fake_cpu - run["cpu_s"]) / elapsed),
    })
    markdown = render_load(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown)
    passed = result["errors"] == 0 and result["leaks"] == 0 and result["integrity_failures"] == 0
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
