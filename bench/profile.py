"""``python -m bench.profile``: where the server spends its CPU under one benchmark load.

Starts the fake upstream and ``chatbot web``, puts a load on it (non-streaming
sessions or streaming ones), and samples the server with py-spy meanwhile
(``pip install py-spy`` into the venv; it is a development tool, not a dependency),
counting only samples where a thread holds the GIL, so waiting is left out.
Prints the functions with the most samples, by own time and including callees,
restricted to the project, its web stack and its HTTP client, and writes the raw
collapsed stacks (``.txt``, for speedscope or flamegraph.pl) and an SVG flame graph
next to ``--output``.

    python -m bench.profile --load chat --sessions 64 --seconds 10
    python -m bench.profile --load stream --sessions 64 --chunks 50 --token-delay 0.02
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench._processes import REPO, run_loadgen
from bench.scenarios import configure_fake, start_fake, start_server

__all__ = ["main", "summarize"]


def summarize(collapsed: Path, *, top: int = 40) -> str:
    """The hottest frames of py-spy's collapsed stacks: own samples and inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "including callees (project and web stack):"]
    interesting = ("chatbot/", "quart/", "hypercorn/", "httpx", "aiohttp/", "anyio/", "h11/", "werkzeug/",
                   "sqlite", "opentelemetry", "prometheus", "cattrs", "logging/")
    shown = 0
    for frame, n in inclusive.most_common():
        if any(marker in frame for marker in interesting):
            lines.append(f"  {100 * n / total:5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--load", choices=("chat", "stream"), default="chat")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "profile")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed: pip install py-spy")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    collapsed = args.output.with_suffix(".txt")
    with tempfile.TemporaryDirectory(prefix="chatbot-profile-") as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir)
        try:
            configure_fake(fake, first_token_delay=args.first_token_delay, token_delay=args.token_delay,
                           chunks=args.chunks, echo_all=False)
            server = start_server(args.store, fake.first_line, workdir / "server")
            try:
                spec = {
                    "kind": "ours", "host": "127.0.0.1", "port": int(server.first_line.rsplit(":", 1)[1]),
                    "stream": args.load == "stream", "sessions": args.sessions, "turns": 5,
                    "rounds": 1_000_000, "chunks": args.chunks, "timeout": 120,
                }
                run_loadgen({**spec, "sessions": 8, "rounds": 2})
                recorders = []
                for fmt, path in (("raw", collapsed), ("flamegraph", args.output.with_suffix(".svg"))):
                    recorders.append(subprocess.Popen(
                        [py_spy, "record", "--pid", str(server.pid), "--duration", str(int(args.seconds)),
                         "--rate", str(args.rate if fmt == "raw" else 50), "--format", fmt,
                         "--output", str(path), "--nonblocking", "--gil"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    ))
                time.sleep(0.5)
                before = server.cpu().cpu
                result = run_loadgen({**spec, "duration": args.seconds - 1})
                cpu = server.cpu().cpu - before
                for recorder in recorders:
                    recorder.wait(timeout=args.seconds + 60)
            finally:
                server.stop()
        finally:
            fake.stop()
    turns = result["turns"]
    print(f"{turns} turns, {result['errors']} errors, {turns / max(result['wall_s'], 1e-9):.0f} turns/s, "
          f"server CPU {cpu * 1000 / max(turns, 1):.2f} ms/turn")
    print(summarize(collapsed))
    print(f"\ncollapsed stacks: {collapsed}\nflame graph: {args.output.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
