"""The floor under our server: the same web stack with nothing of ours in it.

A throwaway Quart app on Hypercorn (uvloop) whose ``POST /api/chat`` forwards one
streaming OpenAI request to the upstream with httpx over the ``httpx-aiohttp``
transport, collects the reply and answers ``{ok, reply, conversation_id, usage}``;
``POST /api/chat/stream`` relays the deltas as ``delta``/``done`` server-sent events.
It keeps no history, no sessions, no store, no actors and no telemetry, so the gap
between it and our server is the cost of those, and the gap between it and the
direct call is the cost of Quart, Hypercorn and httpx themselves.

    python -m bench.bare_stack --port 0 --upstream http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["main"]

_SYSTEM = "You are a helpful, concise assistant."


def _create_app(upstream: str) -> Any:
    import httpx
    from httpx_aiohttp import AiohttpTransport
    from quart import Quart, Response, request

    app = Quart(__name__)
    clients: dict[str, httpx.AsyncClient] = {}

    @app.before_serving
    async def _open() -> None:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        clients["upstream"] = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits, trust_env=False), trust_env=False, timeout=60
        )

    @app.after_serving
    async def _close() -> None:
        await clients["upstream"].aclose()

    async def deltas(message: str) -> AsyncIterator[str]:
        payload = {
            "model": "bench-model",
            "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": message}],
            "max_tokens": 1024,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with clients["upstream"].stream(
            "POST", f"{upstream}/v1/chat/completions", json=payload,
            headers={"authorization": "Bearer sk-bench-not-a-real-key"},
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

    @app.post("/api/chat")
    async def chat() -> Response:
        body = await request.get_json()
        reply = "".join([piece async for piece in deltas(body["message"])])
        return _with_cookie(Response(
            json.dumps({"ok": True, "reply": reply, "conversation_id": "bare", "usage": None}),
            content_type="application/json",
        ))

    @app.post("/api/chat/stream")
    async def chat_stream() -> Response:
        body = await request.get_json()

        async def events() -> AsyncIterator[bytes]:
            parts = []
            async for piece in deltas(body["message"]):
                parts.append(piece)
                yield f"event: delta\ndata: {json.dumps({'text': piece})}\n\n".encode()
            done = {"reply": "".join(parts), "usage": None, "stopped": False, "conversation_id": "bare"}
            yield f"event: done\ndata: {json.dumps(done)}\n\n".encode()

        return _with_cookie(Response(events(), content_type="text/event-stream"))

    def _with_cookie(response: Response) -> Response:
        # Like a browser session: a cookie on the first answer, so clients behave the same.
        if "chatbot_session" not in request.cookies:
            response.set_cookie("chatbot_session", "bare", httponly=True, samesite="Lax")
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_stack", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args(argv)
    if not args.upstream.startswith("http://127.0.0.1:"):
        parser.error("the upstream must be on 127.0.0.1")
    import asyncio

    import hypercorn.asyncio
    import uvloop
    from hypercorn.config import Config

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    app = _create_app(args.upstream)
    try:
        uvloop.run(hypercorn.asyncio.serve(app, config))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(0)


if __name__ == "__main__":
    main()
