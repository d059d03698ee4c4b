"""A fake model server speaking every wire format chatbot uses, over real HTTP (implementation).

Routes: ``POST /v1/messages`` (Anthropic), ``POST /v1/chat/completions`` (OpenAI;
the ``openrouter`` and ``ollama`` flavours add their quirks), ``GET /v1/models``
(Anthropic paging when ``anthropic-version`` is sent, else the OpenAI list) and
``GET /api/tags`` (Ollama). ``/api/v1/...`` works too, as OpenRouter's base does.

It checks what it receives as the wire-format reference's checklist says (key and
version headers, ``max_tokens``, system placement, roles, non-empty contents) and
answers a violation with the provider's own error, so an adapter bug shows up as a
typed error in the test. Every request is recorded (:attr:`FakeUpstream.requests`)
with its headers and JSON body.

By default a chat request gets ``"You said: <last user message>"``, streamed in a
few deltas, so a test can plant a canary and find it in the right reply only. Tests
script the next requests with :meth:`FakeUpstream.enqueue`: a :class:`Reply` (delays,
awkward chunking, line endings, cut-short endings, a huge text), a :class:`Fail`
(status, provider error body, ``retry-after``), a :class:`Hang`, a :class:`Reset`
or :class:`Raw` bytes. The server notices a client that goes away mid-response at
once: :meth:`FakeUpstream.wait_for_disconnect`.

The server runs on an asyncio loop in a thread of its own (:meth:`FakeUpstream.start`),
so tests on either anyio backend can use it, or as a process::

    python -m tests.fakes.upstream --port 0 [--first-token-delay S] [--token-delay S]
                                   [--chunks N] [--flavour openai|openrouter|ollama]

which prints its URL on the first line of stdout and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import anyio
import attrs

from ._checks import Invalid, check_auth, check_body
from ._formats import (
    Flavour,
    Frame,
    Reply,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    default_text,
    openai_completion,
    openai_error,
    openai_stream,
    split_text,
)
from ._http11 import Connection, Disconnected, HTTPRequest, open_http_server
from ._script import Behaviour, Exchange, Fail, Hang, Raw, RecordedRequest, Reset

__all__ = ["DEFAULT_API_KEY", "DEFAULT_MODELS", "FakeUpstream"]

DEFAULT_API_KEY = "sk-fake-0123456789abcdef"
DEFAULT_MODELS: tuple[str, ...] = (
    "claude-sonnet-4-20250514",
    "gpt-4o",
    "llama3.2",
    "anthropic/claude-sonnet-4",
    "fake-model",
)
_Dialect = Literal["anthropic", "openai", "native"]
_CHAT_PATHS = frozenset({"/v1/messages", "/v1/chat/completions"})


@attrs.define(eq=False)
class FakeUpstream:
    """A running (or startable) fake upstream; see the module docstring.

    Args:
        api_key: the key requests must carry; ``None`` accepts any non-empty key.
        flavour: how ``/v1/chat/completions`` behaves.
        models: the models it knows; chat with another model gets the provider's 404.
        default: the behaviour when nothing is enqueued.
    """

    api_key: str | None = DEFAULT_API_KEY
    flavour: Flavour = "openai"
    models: tuple[str, ...] = DEFAULT_MODELS
    default: Reply = attrs.field(factory=Reply)
    default_chunks: int = 5
    host: str = "127.0.0.1"
    port: int = 0
    _script: collections.deque[Behaviour] = attrs.field(factory=collections.deque)
    _exchanges: list[Exchange] = attrs.field(factory=list)
    _initial: tuple[Any, ...] = attrs.field(init=False)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = attrs.field(factory=threading.Event)
    _error: BaseException | None = None

    def __attrs_post_init__(self) -> None:
        self._initial = (self.api_key, self.flavour, self.models, self.default, self.default_chunks)

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeUpstream:
        """Serve on a thread of its own until :meth:`close`; returns self."""
        self._thread = threading.Thread(target=self._run_thread, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        if self._error is not None:
            raise RuntimeError("fake upstream failed to start") from self._error
        return self

    def close(self) -> None:
        """Stop serving, abort open connections and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None

    def stop_serving(self) -> None:
        """Make :meth:`serve` return; call it on the serving loop (e.g. from a signal)."""
        if self._stop is not None:
            self._stop.set()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run_thread(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def serve(self, *, announce: bool = False) -> None:
        """Serve on the running asyncio loop until :meth:`close` (or a signal, as a process)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server, connections = await open_http_server(self._handle, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        if announce:
            print(self.url, flush=True)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for connection in list(connections):
                if connection.transport is not None:
                    connection.transport.abort()
            await server.wait_closed()

    # -- scripting and inspection (thread-safe) ----------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the next requests, one behaviour each, in order."""
        self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget the script and the records, and restore the constructor's settings."""
        self._script.clear()
        self._exchanges.clear()
        self.api_key, self.flavour, self.models, self.default, self.default_chunks = self._initial

    @property
    def exchanges(self) -> list[Exchange]:
        return list(self._exchanges)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        return [exchange.request for exchange in self._exchanges]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat requests (``/v1/messages``, ``/v1/chat/completions``) received."""
        return [r for r in self.requests if r.path in _CHAT_PATHS]

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        return len(self._script)

    async def wait_for_disconnect(self, timeout: float = 1.0, *, index: int = -1) -> bool:
        """Wait (on any anyio backend) until a response was cut short by the client.

        ``index`` picks the exchange among the chat exchanges (default: the latest).
        Returns whether the disconnect was seen within ``timeout`` seconds.
        """
        with anyio.move_on_after(timeout):
            while True:
                chats = [e for e in self._exchanges if e.request.path in _CHAT_PATHS]
                if chats and chats[index].disconnected.is_set():
                    return True
                await anyio.sleep(0.005)
        return False

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` chat requests arrived."""
        with anyio.move_on_after(timeout):
            while len(self.chat_requests) < count:
                await anyio.sleep(0.005)
            return True
        return False

    # -- serving --------------------------------------------------------------------

    async def _handle(self, connection: Connection, request: HTTPRequest) -> None:
        path = request.path
        if path.startswith("/api/v1/"):
            path = path[len("/api") :]
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method, path=path, query=request.query,
            headers=request.headers, body=request.body, json=body, connection=connection.number,
        )
        exchange = Exchange(recorded)
        self._exchanges.append(exchange)

        def lost() -> None:
            if not exchange.finished.is_set():
                exchange.disconnected.set()

        connection.on_lost.append(lost)
        try:
            await self._respond(connection, exchange, path, body)
        except Disconnected:
            exchange.disconnected.set()
            raise
        finally:
            exchange.finished.set()
            with contextlib.suppress(ValueError):
                connection.on_lost.remove(lost)

    async def _respond(
        self, connection: Connection, exchange: Exchange, path: str, body: Any
    ) -> None:
        request = exchange.request
        anthropic = path == "/v1/messages" or (
            path == "/v1/models" and "anthropic-version" in request.headers
        )
        dialect: _Dialect = "anthropic" if anthropic else "native" if path.startswith("/api/") else "openai"
        routes = {
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/chat/completions"): self._completions,
            ("GET", "/v1/models"): self._anthropic_models if anthropic else self._openai_models,
            ("GET", "/api/tags"): self._tags,
        }
        route = routes.get((request.method, path))
        if route is None:
            exchange.status = 404
            await _send_json(connection, 404, {"error": f"no route for {request.method} {path}"})
            return
        try:
            check_auth(request.headers, path, anthropic, self.flavour, self.api_key)
            if request.method == "POST":
                check_body(body, anthropic, self.flavour, self.models)
        except Invalid as invalid:
            exchange.status = invalid.status
            await self._send_error(connection, dialect, invalid.status, invalid.message, invalid.code)
            return
        behaviour = self._script.popleft() if self._script else self.default
        if isinstance(behaviour, Reply):
            while behaviour.hold is not None and not behaviour.hold.is_set():
                await anyio.sleep(0.005)
            exchange.status = 200
            await route(connection, request, body, behaviour)
        else:
            await self._misbehave(connection, exchange, behaviour, dialect)

    async def _misbehave(
        self, connection: Connection, exchange: Exchange, behaviour: Behaviour, dialect: _Dialect
    ) -> None:
        if isinstance(behaviour, Fail):
            exchange.status = behaviour.status
            headers = dict(behaviour.headers)
            if behaviour.retry_after is not None:
                headers["retry-after"] = behaviour.retry_after
            if behaviour.body is not None:
                headers.setdefault("content-type", "text/html")
                await connection.send(behaviour.status, behaviour.body, headers)
            else:
                await self._send_error(
                    connection, dialect, behaviour.status, behaviour.message,
                    behaviour.error_type, headers,
                )
        elif isinstance(behaviour, Hang):
            if behaviour.stage == "body":
                await connection.write_head(200, {"content-type": "text/event-stream"})
            await connection.wait_lost()
            raise Disconnected
        elif isinstance(behaviour, Reset):
            connection.reset()
            raise Disconnected
        elif isinstance(behaviour, Raw):
            exchange.status = behaviour.status
            await connection.write_head(behaviour.status, {"content-type": behaviour.content_type})
            for piece in behaviour.body:
                await connection.write_chunk(piece)
            await connection.end_chunks()

    async def _send_error(
        self,
        connection: Connection,
        dialect: _Dialect,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        payload: dict[str, Any]
        if dialect == "anthropic":
            payload = anthropic_error(status, message, code)
        elif dialect == "native":
            payload = {"error": message}  # Ollama's own API
        else:
            payload = openai_error(self.flavour, status, message, code)
        await _send_json(connection, status, payload, headers)

    # -- successful replies -----------------------------------------------------------------

    def _plan(self, body: Mapping[str, Any], reply: Reply) -> tuple[list[str], float, float]:
        text = default_text(body) if reply.text is None else reply.text
        chunks = reply.chunks or self.default.chunks or self.default_chunks
        first = reply.first_token_delay
        between = reply.token_delay
        if first is None:
            first = self.default.first_token_delay or 0.0
        if between is None:
            between = self.default.token_delay or 0.0
        return split_text(text, chunks), first, between

    async def _messages(
        self, connection: Connection, request: RecordedRequest, body: Any, reply: Reply
    ) -> None:
        pieces, first, between = self._plan(body, reply)
        if not body.get("stream") or reply.json_body:
            await _send_json(connection, 200, anthropic_message(body, pieces, reply))
            return
        await _stream(connection, anthropic_stream(body, pieces, reply, first, between), reply)

    async def _completions(
        self, connection: Connection, request: RecordedRequest, body: Any, reply: Reply
    ) -> None:
        pieces, first, between = self._plan(body, reply)
        if not body.get("stream") or reply.json_body:
            await _send_json(connection, 200, openai_completion(self.flavour, body, pieces, reply))
            return
        frames = openai_stream(self.flavour, body, pieces, reply, first, between)
        await _stream(connection, frames, reply)

    async def _anthropic_models(
        self, connection: Connection, request: RecordedRequest, body: Any, reply: Reply
    ) -> None:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after_id")
        ids = list(self.models)
        start = ids.index(after) + 1 if after in ids else 0
        page = ids[start : start + limit]
        await _send_json(connection, 200, {
            "data": [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                     for m in page],
            "has_more": start + limit < len(ids),
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        })

    async def _openai_models(
        self, connection: Connection, request: RecordedRequest, body: Any, reply: Reply
    ) -> None:
        data = [{"id": m, "object": "model", "created": 1721172741, "owned_by": "system"}
                for m in self.models]
        await _send_json(connection, 200, {
            "object": "list",
            "data": data or (None if self.flavour == "ollama" else []),
        })

    async def _tags(
        self, connection: Connection, request: RecordedRequest, body: Any, reply: Reply
    ) -> None:
        models = [
            {"name": name, "model": name, "modified_at": "2026-11-01T12:00:00Z", "size": 2019393189,
             "digest": "a80c4f17acd5", "details": {"format": "gguf", "family": "llama"}}
            for name in (m if ":" in m else f"{m}:latest" for m in self.models)
        ]
        await _send_json(connection, 200, {"models": models})


async def _send_json(
    connection: Connection, status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    await connection.send(
        status, body, {"content-type": "application/json", "request-id": "req_fake", **(headers or {})}
    )


def _pieces(frames: Iterable[Frame], split: int | tuple[int, ...]) -> Iterator[bytes]:
    blob = b"".join(frame.data for frame in frames)
    sizes = itertools.cycle((split,) if isinstance(split, int) else split)
    position = 0
    while position < len(blob):
        size = max(1, next(sizes))
        yield blob[position : position + size]
        position += size


async def _stream(connection: Connection, frames: Iterable[Frame], reply: Reply) -> None:
    await connection.write_head(
        200, {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
    )
    if reply.split is None:
        for frame in frames:
            if frame.delay:
                await asyncio.sleep(frame.delay)
            await connection.write_chunk(frame.data)
    else:
        frames = list(frames)
        first = next((frame.delay for frame in frames if frame.delay), 0.0)
        for index, piece in enumerate(_pieces(frames, reply.split)):
            delay = first if index == 0 else (reply.token_delay or 0.0)
            if delay:
                await asyncio.sleep(delay)
            await connection.write_chunk(piece)
    if reply.ending == "reset":
        connection.reset()
        raise Disconnected
    if reply.ending == "hang":
        await connection.wait_lost()
        raise Disconnected
    await connection.end_chunks()
