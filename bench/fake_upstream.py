"""A fast fake LLM upstream for benchmarks: OpenAI Chat Completions and Anthropic Messages.

It must never be the bottleneck, so it is a bare asyncio protocol (on uvloop) that
speaks just enough HTTP/1.1: keep-alive, ``content-length`` or chunked request
bodies, chunked streaming responses. A reply with no delays is written in one
``transport.write``; a delayed one is paced with ``loop.call_at`` on a fixed schedule (so
lag never accumulates), without a task per stream.

Routes:

* ``POST /v1/chat/completions``: OpenAI-compatible, ``stream`` true (SSE, usage chunk
  when ``stream_options.include_usage``, then ``[DONE]``) or false (one JSON);
* ``POST /v1/messages``: Anthropic Messages, streaming or not;
* ``GET /v1/models``, ``GET /healthz``;
* ``POST /_bench/config`` with JSON ``{first_token_delay, token_delay, chunks,
  echo_all}`` changes the behaviour of later requests (the harness sets it per
  scenario); ``GET /_bench/stats`` returns request counters.

Run it in its own process::

    python -m bench.fake_upstream --port 0 --first-token-delay 0.3 --token-delay 0.02 --chunks 30

The first line on stdout is its base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Callable
from typing import Any, Final, cast

from bench._script import reply_pieces, user_texts

__all__ = ["FakeConfig", "main", "serve"]

_MAX_HEAD: Final = 64 * 1024
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class FakeConfig:
    """The fake's current behaviour; mutable, changed by ``POST /_bench/config``."""

    __slots__ = ("chunks", "echo_all", "first_token_delay", "requests", "token_delay")

    def __init__(self, first_token_delay: float, token_delay: float, chunks: int, echo_all: bool) -> None:
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.chunks = chunks
        self.echo_all = echo_all
        self.requests = 0

    def update(self, values: dict[str, Any]) -> None:
        if "first_token_delay" in values:
            self.first_token_delay = max(0.0, float(values["first_token_delay"]))
        if "token_delay" in values:
            self.token_delay = max(0.0, float(values["token_delay"]))
        if "chunks" in values:
            self.chunks = max(1, int(values["chunks"]))
        if "echo_all" in values:
            self.echo_all = bool(values["echo_all"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_token_delay": self.first_token_delay,
            "token_delay": self.token_delay,
            "chunks": self.chunks,
            "echo_all": self.echo_all,
            "requests": self.requests,
        }


# -- response bodies ------------------------------------------------------------------


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return _chunk(f"{head}data: {payload}\n\n".encode())


_STREAM_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_LAST_CHUNK: Final = b"0\r\n\r\n"


def _json_response(status: int, reason: str, value: Any) -> bytes:
    body = _dumps(value).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def _words(users: list[str]) -> int:
    return sum(len(text.split()) for text in users)


def _openai_frames(body: dict[str, Any], pieces: list[str], users: list[str]) -> tuple[bytes, list[bytes], bytes]:
    """(head before the first token, one frame per token, tail after the last)."""
    model = _dumps(str(body.get("model", "")))
    prefix = f'{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1733300000,"model":{model},"choices":['
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    usage_null = ',"usage":null' if include_usage else ""
    head = _STREAM_HEAD + _sse(
        prefix + '{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]' + usage_null + "}"
    )
    frames = [
        _sse(
            prefix + '{"index":0,"delta":{"content":' + _dumps(piece) + '},"finish_reason":null}]' + usage_null + "}"
        )
        for piece in pieces
    ]
    tail = _sse(prefix + '{"index":0,"delta":{},"finish_reason":"stop"}]' + usage_null + "}")
    if include_usage:
        prompt = _words(users)
        usage = f'{{"prompt_tokens":{prompt},"completion_tokens":{len(pieces)},"total_tokens":{prompt + len(pieces)}}}'
        tail += _sse(prefix + '],"usage":' + usage + "}")
    tail += _sse("[DONE]") + _LAST_CHUNK
    return head, frames, tail


def _openai_completion(body: dict[str, Any], pieces: list[str], users: list[str]) -> bytes:
    prompt = _words(users)
    return _json_response(200, "OK", {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1733300000,
        "model": str(body.get("model", "")),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(pieces),
                  "total_tokens": prompt + len(pieces)},
    })


def _anthropic_frames(body: dict[str, Any], pieces: list[str], users: list[str]) -> tuple[bytes, list[bytes], bytes]:
    model = _dumps(str(body.get("model", "")))
    start = (
        '{"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant",'
        f'"content":[],"model":{model},"stop_reason":null,"stop_sequence":null,'
        f'"usage":{{"input_tokens":{_words(users)},"output_tokens":1}}}}}}'
    )
    head = (
        _STREAM_HEAD
        + _sse(start, "message_start")
        + _sse('{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
               "content_block_start")
    )
    frames = [
        _sse('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
             + _dumps(piece) + "}}", "content_block_delta")
        for piece in pieces
    ]
    tail = (
        _sse('{"type":"content_block_stop","index":0}', "content_block_stop")
        + _sse('{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
               f'"usage":{{"output_tokens":{len(pieces)}}}}}', "message_delta")
        + _sse('{"type":"message_stop"}', "message_stop")
        + _LAST_CHUNK
    )
    return head, frames, tail


def _anthropic_message(body: dict[str, Any], pieces: list[str], users: list[str]) -> bytes:
    return _json_response(200, "OK", {
        "id": "msg_bench", "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": "".join(pieces)}],
        "model": str(body.get("model", "")), "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": _words(users), "output_tokens": len(pieces)},
    })


# -- the protocol ---------------------------------------------------------------------


class _Request:
    __slots__ = ("body", "keep_alive", "method", "path")

    def __init__(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.keep_alive = keep_alive


class _Connection(asyncio.Protocol):
    """One client connection; requests on it are answered one after another."""

    def __init__(self, config: FakeConfig) -> None:
        self._config = config
        self._buffer = bytearray()
        self._busy = False
        self._closed = False
        self._pending: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    # -- parsing ----------------------------------------------------------------------

    def _parse(self) -> _Request | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise ValueError("request head too large")
            return None
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        length = 0
        chunked = False
        connection = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                connection = value.strip().lower()
        start = end + 4
        if chunked:
            decoded = _dechunk(buffer, start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            if len(buffer) < start + length:
                return None
            body, consumed = bytes(buffer[start : start + length]), start + length
        del buffer[:consumed]
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return _Request(method, target.partition("?")[0], body, keep_alive)

    def _next(self) -> None:
        while not self._busy and not self._closed:
            try:
                request = self._parse()
            except (ValueError, UnicodeDecodeError):
                self._write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self._close()
                return
            if request is None:
                return
            self._busy = True
            self._handle(request)

    # -- answering ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()
        self._closed = True

    def _finished(self, keep_alive: bool) -> None:
        self._busy = False
        if not keep_alive:
            self._close()
            return
        if self._buffer:
            self._next()

    def _handle(self, request: _Request) -> None:
        config = self._config
        path = request.path
        if request.method == "POST" and path in ("/v1/chat/completions", "/v1/messages"):
            config.requests += 1
            try:
                body = json.loads(request.body)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self._write(_json_response(400, "Bad Request", {"error": {"message": "body is not JSON"}}))
                self._finished(request.keep_alive)
                return
            users = user_texts(body.get("messages"))
            pieces = reply_pieces(users, config.chunks, echo_all=config.echo_all)
            anthropic = path == "/v1/messages"
            if not body.get("stream"):
                whole = _anthropic_message if anthropic else _openai_completion
                self._after(config.first_token_delay + config.token_delay * (len(pieces) - 1),
                            lambda: self._write(whole(body, pieces, users)), request.keep_alive)
                return
            frames = (_anthropic_frames if anthropic else _openai_frames)(body, pieces, users)
            self._stream(*frames, request.keep_alive)
        elif request.method == "GET" and path == "/v1/models":
            self._write(_json_response(200, "OK", {"object": "list", "data": [
                {"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]}))
            self._finished(request.keep_alive)
        elif request.method == "GET" and path in ("/healthz", "/_bench/stats"):
            self._write(_json_response(200, "OK", config.as_dict()))
            self._finished(request.keep_alive)
        elif request.method == "POST" and path == "/_bench/config":
            try:
                config.update(json.loads(request.body or b"{}"))
            except (ValueError, TypeError) as exc:
                self._write(_json_response(400, "Bad Request", {"error": str(exc)}))
            else:
                self._write(_json_response(200, "OK", config.as_dict()))
            self._finished(request.keep_alive)
        else:
            self._write(_json_response(404, "Not Found", {"error": {"message": f"no route {path}"}}))
            self._finished(request.keep_alive)

    def _after(self, delay: float, send: Callable[[], None], keep_alive: bool) -> None:
        def fire() -> None:
            self._pending = None
            send()
            self._finished(keep_alive)

        if delay <= 0:
            fire()
        else:
            self._pending = asyncio.get_running_loop().call_later(delay, fire)

    def _stream(self, head: bytes, frames: list[bytes], tail: bytes, keep_alive: bool) -> None:
        config = self._config
        first, between = config.first_token_delay, config.token_delay
        if first <= 0 and between <= 0:
            self._write(b"".join((head, *frames, tail)))
            self._finished(keep_alive)
            return
        self._write(head)
        loop = asyncio.get_running_loop()
        # Token i is due at start + first + i * between, whatever the loop's lag was
        # for token i - 1: the pace does not drift under load.
        start = loop.time()
        position = 0

        def send_next() -> None:
            nonlocal position
            self._pending = None
            if self._closed:
                return
            if position == len(frames) - 1:
                self._write(frames[position] + tail)
                self._finished(keep_alive)
                return
            self._write(frames[position])
            position += 1
            self._pending = loop.call_at(start + first + position * between, send_next)

        self._pending = loop.call_at(start + first, send_next)


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


async def serve(host: str, port: int, config: FakeConfig, ready: Callable[[str], None]) -> None:
    """Serve until cancelled; ``ready`` gets the base URL once the socket listens."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(config), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    ready(f"http://{host}:{bound}")
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--chunks", type=int, default=10, help="tokens per reply")
    parser.add_argument("--echo-all", action="store_true", help="echo every user message, not only the last")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the benchmark fake listens on loopback only")
    config = FakeConfig(args.first_token_delay, args.token_delay, args.chunks, args.echo_all)

    def ready(url: str) -> None:
        print(url, flush=True)

    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port, config, ready))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
