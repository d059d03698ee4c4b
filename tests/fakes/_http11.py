"""A minimal HTTP/1.1 server core for fake upstreams, on asyncio protocols.

Hand-written rather than a framework so a fake controls every byte: each write can
be its own HTTP chunk (so clients see exactly the chunk boundaries a test asks for),
a connection can be reset (RST) or left hanging, and the moment a client goes away
is observed at once (``connection_lost``), also while the fake is sleeping between
tokens. Keep-alive and pipelined requests are supported, so benchmarks can reuse
connections. It runs on whatever asyncio loop calls :func:`open_http_server`: a
thread of its own in tests (so tests on trio can use it), the main loop as a process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import attrs

__all__ = ["Connection", "Disconnected", "HTTPRequest", "Handler", "open_http_server"]

_MAX_HEAD: Final = 64 * 1024
_log = logging.getLogger(__name__)


class Disconnected(Exception):
    """The client closed the connection (or reset it) before the response was done."""


@attrs.frozen(kw_only=True)
class HTTPRequest:
    """A parsed request: header names are lower-case."""

    method: str
    target: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    keep_alive: bool


Handler = Callable[["Connection", HTTPRequest], Awaitable[None]]


class _BadRequest(Exception):
    pass


class Connection(asyncio.Protocol):
    """One client connection: parses requests, and lets a handler write the reply.

    ``lost`` is set as soon as the client disconnects; writes after that raise
    :class:`Disconnected`. ``on_lost`` callbacks run once, at that moment.
    """

    _count = itertools.count(1)

    def __init__(self, handler: Handler, connections: set[Connection]) -> None:
        self.number = next(self._count)  # which connection this is, for keep-alive checks
        self._handler = handler
        self._connections = connections
        self._buffer = bytearray()
        self._queue: asyncio.Queue[HTTPRequest | None] = asyncio.Queue()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._task: asyncio.Task[None] | None = None
        self._answering = False  # a status line went out for the current request
        self.lost = asyncio.Event()
        self.on_lost: list[Callable[[], None]] = []
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (request := self._parse()) is not None:
                self._queue.put_nowait(request)
        except _BadRequest:
            self.close_after(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    def eof_received(self) -> bool:
        return False  # the client is gone: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self._can_write.set()
        self._connections.discard(self)
        self._queue.put_nowait(None)
        callbacks, self.on_lost = self.on_lost, []
        for callback in callbacks:
            callback()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- request parsing ----------------------------------------------------------

    def _parse(self) -> HTTPRequest | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise _BadRequest
            return None
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _BadRequest from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _BadRequest
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            decoded = _dechunk(self._buffer, start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest from None
            if len(self._buffer) < start + length:
                return None
            body, consumed = bytes(self._buffer[start : start + length]), start + length
        del self._buffer[:consumed]
        split = urlsplit(target)
        connection = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and connection != "close") or connection == "keep-alive"
        return HTTPRequest(
            method=method,
            target=target,
            path=split.path,
            query=dict(parse_qsl(split.query)),
            headers=headers,
            body=body,
            keep_alive=keep_alive,
        )

    async def _serve(self) -> None:
        while (request := await self._queue.get()) is not None:
            self._answering = False
            try:
                await self._handler(self, request)
            except Disconnected:
                return
            except Exception as exc:  # a bug in the fake: say so loudly, then hang up
                _log.exception("fake upstream failed on %s %s", request.method, request.target)
                if self._answering:
                    self.reset()
                else:
                    body = f"fake upstream bug: {exc!r}".encode()
                    self.close_after(_head(500, {"content-type": "text/plain"}, len(body)) + body)
                return
            if not request.keep_alive:
                self.close()
                return

    # -- writing ------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting while the client's window is full.

        Raises:
            Disconnected: the client is gone.
        """
        if self.lost.is_set() or self.transport is None:
            raise Disconnected
        self._answering = True
        self.transport.write(data)
        if not self._can_write.is_set():
            await self._can_write.wait()
        if self.lost.is_set():
            raise Disconnected

    async def write_head(
        self, status: int, headers: Mapping[str, str], *, length: int | None = None
    ) -> None:
        """Send the status line and headers; ``length=None`` means a chunked body."""
        await self.write(_head(status, headers, length))

    async def write_chunk(self, data: bytes) -> None:
        """Send ``data`` as one HTTP chunk (nothing for empty data)."""
        if data:
            await self.write(b"%x\r\n%b\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        """Finish a chunked body cleanly."""
        await self.write(b"0\r\n\r\n")

    async def send(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send a complete response with a ``content-length``."""
        await self.write(_head(status, headers or {}, len(body)) + body)

    async def wait_lost(self) -> None:
        """Wait until the client disconnects (a hang, as a test double does it)."""
        await self.lost.wait()

    def reset(self) -> None:
        """Abort the connection with a TCP RST, as a crashing upstream would."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close_after(self, data: bytes) -> None:
        if self.transport is not None and not self.lost.is_set():
            self.transport.write(data)
            self.transport.close()


def _head(status: int, headers: Mapping[str, str], length: int | None) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if length is None:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    body = bytearray()
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
        except ValueError:
            raise _BadRequest from None
        pos = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 2
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos : pos + size]
        pos += size + 2


async def open_http_server(
    handler: Handler, host: str, port: int
) -> tuple[asyncio.Server, set[Connection]]:
    """Listen on ``host:port`` (0 picks a free port) and serve ``handler``.

    Returns the server and the live set of its connections, so the owner can abort
    them on shutdown.
    """
    connections: set[Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(handler, connections), host, port)
    return server, connections
