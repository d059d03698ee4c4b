"""Fake upstream model servers: the public face of :mod:`tests.fakes._server`.

Import the fake from here (or from :mod:`tests.fakes`), and run it as a process::

    python -m tests.fakes.upstream --port 0 [--first-token-delay S] [--token-delay S]
                                   [--chunks N] [--flavour openai|openrouter|ollama]
                                   [--api-key KEY]

It prints its URL on the first line of stdout and serves until SIGINT or SIGTERM.
(The implementation lives in ``_server`` so that running this module does not
import it twice.)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from ._formats import Flavour, Reply
from ._script import Behaviour, Exchange, Fail, Hang, Raw, RecordedRequest, Reset
from ._server import DEFAULT_API_KEY, DEFAULT_MODELS, FakeUpstream

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "Behaviour",
    "Exchange",
    "Fail",
    "FakeUpstream",
    "Flavour",
    "Hang",
    "Raw",
    "RecordedRequest",
    "Reply",
    "Reset",
    "main",
]

def main(argv: Sequence[str] | None = None) -> None:
    """Run a fake upstream as a process; the first stdout line is its URL."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.upstream",
        description="A fake model server; prints its URL on the first line of stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--token-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--chunks", type=int, default=5, metavar="N")
    parser.add_argument("--flavour", choices=("openai", "openrouter", "ollama"), default="openai")
    parser.add_argument("--api-key", default=None, help="key to require (default: any non-empty key)")
    args = parser.parse_args(argv)
    fake = FakeUpstream(
        api_key=args.api_key,
        flavour=args.flavour,
        host=args.host,
        port=args.port,
        default=Reply(first_token_delay=args.first_token_delay, token_delay=args.token_delay),
        default_chunks=args.chunks,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(fake.serve(announce=True))
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, fake.stop_serving)
        await serving

    asyncio.run(run())


if __name__ == "__main__":
    main()
