"""The load generator: a lean HTTP/1.1 client on uvloop, in a process of its own.

It plays N concurrent browser sessions (or N direct API clients) in a closed loop:
each worker opens a keep-alive connection, sends ``turns`` requests one after another,
then starts a fresh session (a new cookie, a new connection unless told otherwise),
until ``rounds`` sessions, ``duration`` seconds or ``max_sessions_total`` is reached.
With ``stagger_s`` the workers' first turns are spread evenly over that many seconds
instead of all starting at once.

Targets (``kind``):

* ``ours``: ``POST /api/chat`` or ``POST /api/chat/stream`` with ``{"message": ...}``
  and the session cookie the server set on the first response;
* ``openai``: ``POST /v1/chat/completions`` with the system prompt and the whole
  history, as the gateway itself would send it (the fake upstream directly, or
  the LiteLLM proxy). The assistant turns of that history are rebuilt with
  :mod:`bench._script`, so they are byte for byte what the gateway would send.

The spec is one JSON object on stdin; the result is one JSON object on stdout with
every latency and time to first token (ms), errors with samples, and the client's
own CPU seconds so a report can show the client was not the bottleneck. With
``canary`` set, every session puts a unique token in its messages and checks each
reply (the fake echoes the request's user messages): a foreign token is a leak, a
reply that is not exactly this session's own history echoed back is an integrity
failure, and conversation ids must be stable within and distinct across sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Final, cast

from bench._script import reply_text

__all__ = ["main", "run"]

_CANARY: Final = re.compile(r"cnry\d{5}x[0-9a-f]{8}")
_OPENAI_FIRST: Final = re.compile(rb'"content":\s*"[^"]')
_OURS_FIRST: Final = b"event: delta"
_COOKIE: Final = "chatbot_session"


class _Response:
    __slots__ = ("body", "first_at", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.first_at = 0.0


class _Probe:
    """Finds the first token in a streamed body, across chunk boundaries."""

    __slots__ = ("_pattern", "_tail")

    def __init__(self, pattern: bytes | re.Pattern[bytes]) -> None:
        self._pattern = pattern
        self._tail = b""

    def __call__(self, piece: bytes) -> bool:
        window = self._tail + piece
        if isinstance(self._pattern, bytes):
            found = self._pattern in window
        else:
            found = self._pattern.search(window) is not None
        self._tail = window[-32:]
        return found


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Response] | None = None
        self._response: _Response | None = None
        self._probe: Callable[[bytes], bool] | None = None
        self._state = 0  # 0 head, 1 content-length, 2 chunked, 3 until close
        self._remaining = 0
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._state == 3 and self._response is not None:
                waiter.set_result(self._response)
            else:
                waiter.set_exception(ConnectionError(f"connection lost: {exc or 'closed by server'}"))
        self._waiter = None

    def progress(self) -> str:
        """What arrived of the response in flight, for error reports."""
        response = self._response
        if response is None:
            return "nothing in flight"
        if not response.status:
            return f"no response head yet ({len(self._buffer)} bytes buffered)"
        return f"HTTP {response.status}, {len(response.body)} body bytes, ending {bytes(response.body[-120:])!r}"

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
        self.closed = True

    def request(self, data: bytes, probe: Callable[[bytes], bool] | None) -> asyncio.Future[_Response]:
        if self.closed or self._transport is None:
            raise ConnectionError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._response = _Response()
        self._probe = probe
        self._state = 0
        self._transport.write(data)
        return self._waiter

    # -- response parsing ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            return  # nothing asked: ignore stray bytes
        self._buffer += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            waiter = self._waiter
            self.close()
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError(f"bad response: {exc}"))

    def _body(self, piece: bytes) -> None:
        response = self._response
        assert response is not None
        response.body += piece
        if self._probe is not None and piece and self._probe(piece):
            response.first_at = time.perf_counter()
            self._probe = None

    def _complete(self) -> None:
        response, waiter = self._response, self._waiter
        self._response = None
        self._waiter = None
        self._state = 0
        if waiter is not None and not waiter.done() and response is not None:
            waiter.set_result(response)

    def _parse(self) -> None:
        buffer = self._buffer
        while self._response is not None:
            if self._state == 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
                del buffer[: end + 4]
                response = self._response
                response.status = int(lines[0].split(" ", 2)[1])
                length = -1
                chunked = False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    value = value.strip()
                    if name == "connection":
                        value = value.lower()
                    response.headers.append((name, value))
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                if chunked:
                    self._state = 2
                elif length >= 0:
                    self._state, self._remaining = 1, length
                elif response.status in (204, 304) or 100 <= response.status < 200:
                    self._complete()
                    return
                else:
                    self._state = 3
            elif self._state == 1:
                take = min(self._remaining, len(buffer))
                if take:
                    self._body(bytes(buffer[:take]))
                    del buffer[:take]
                    self._remaining -= take
                if self._remaining == 0:
                    self._complete()
                return
            elif self._state == 2:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
                if size == 0:
                    trailer_end = buffer.find(b"\r\n\r\n", line_end)
                    if trailer_end < 0:
                        return
                    del buffer[: trailer_end + 4]
                    self._complete()
                    return
                if len(buffer) < line_end + 2 + size + 2:
                    return
                self._body(bytes(buffer[line_end + 2 : line_end + 2 + size]))
                del buffer[: line_end + 2 + size + 2]
            else:
                if buffer:
                    self._body(bytes(buffer))
                    buffer.clear()
                return


# -- the sessions ---------------------------------------------------------------------


class _Results:
    def __init__(self) -> None:
        self.latency_ms: list[float] = []
        self.ttft_ms: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.leaks = 0
        self.leak_samples: list[str] = []
        self.integrity_failures = 0
        self.sessions = 0
        self.conversations: dict[str, int] = {}
        self.first_start = 0.0
        self.last_end = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 8:
            self.error_samples.append(what[:300])

    def leak(self, what: str) -> None:
        self.leaks += 1
        if len(self.leak_samples) < 8:
            self.leak_samples.append(what[:300])


def _cookie_from(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name == "set-cookie" and value.startswith(_COOKIE + "="):
            return value.split(";", 1)[0]
    return None


def _sse_events(body: bytes) -> list[tuple[str, str]]:
    events = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


class _Session:
    """One browser session (or one direct client's conversation)."""

    def __init__(self, spec: dict[str, Any], results: _Results, index: int) -> None:
        self.spec = spec
        self.results = results
        self.index = index
        self.cookie: str | None = None
        self.users: list[str] = []
        self.history: list[dict[str, str]] = []
        self.conversation_id: str | None = None
        self.canary = f"cnry{index:05d}x{os.urandom(4).hex()}" if spec.get("canary") else ""

    def message(self, turn: int) -> str:
        if self.canary:
            return f"{self.canary} turn {turn}"
        return f"hello from session {self.index}, turn {turn}"

    def build(self, text: str) -> tuple[bytes, Callable[[bytes], bool] | None]:
        spec = self.spec
        stream = bool(spec["stream"])
        authority = f"{spec['host']}:{spec['port']}"
        headers = [f"host: {authority}", "content-type: application/json"]
        if spec["kind"] == "ours":
            path = "/api/chat/stream" if stream else "/api/chat"
            body = json.dumps({"message": text}).encode()
            headers.append(f"origin: http://{authority}")
            if stream:
                headers.append("accept: text/event-stream")
            if self.cookie:
                headers.append(f"cookie: {self.cookie}")
            probe: Callable[[bytes], bool] | None = _Probe(_OURS_FIRST) if stream else None
        else:
            path = spec.get("path", "/v1/chat/completions")
            messages = [{"role": "system", "content": spec["system"]}] if spec.get("system") else []
            messages += self.history
            messages.append({"role": "user", "content": text})
            payload: dict[str, Any] = {
                "model": spec["model"],
                "messages": messages,
                "max_tokens": spec.get("max_tokens", 1024),
                "stream": stream,
            }
            if stream and spec.get("include_usage", True):
                payload["stream_options"] = {"include_usage": True}
            body = json.dumps(payload).encode()
            headers.append(f"authorization: Bearer {spec.get('api_key', 'sk-bench')}")
            probe = _Probe(_OPENAI_FIRST) if stream else None
        head = f"POST {path} HTTP/1.1\r\n" + "\r\n".join(headers) + f"\r\ncontent-length: {len(body)}\r\n\r\n"
        return head.encode() + body, probe

    def check(self, response: _Response, text: str) -> bool:
        """Record problems with a reply; True if the session can go on."""
        spec = self.spec
        results = self.results
        if response.status != 200:
            results.error(f"HTTP {response.status}: {bytes(response.body[:200])!r}")
            return False
        if spec["kind"] != "ours":
            if spec["stream"] and not response.body.rstrip().endswith(b"data: [DONE]"):
                results.error("stream ended without [DONE]")
                return False
            self.users.append(text)
            self.history.append({"role": "user", "content": text})
            self.history.append({
                "role": "assistant",
                "content": reply_text(self.users, spec["chunks"], echo_all=spec.get("echo_all", False)),
            })
            return True
        if spec["stream"]:
            if b"event: done" not in response.body or b"event: error" in response.body:
                results.error(f"stream without done: {bytes(response.body[-300:])!r}")
                return False
            if not self.canary and self.conversation_id is not None:
                return True
            deltas: list[str] = []
            done: dict[str, Any] = {}
            for name, data in _sse_events(bytes(response.body)):
                if name == "delta":
                    deltas.append(json.loads(data)["text"])
                elif name == "done":
                    done = json.loads(data)
            reply = str(done.get("reply", ""))
            conversation_id = done.get("conversation_id")
            if self.canary and "".join(deltas) != reply:
                results.integrity_failures += 1
        else:
            document = json.loads(response.body)
            if not document.get("ok"):
                results.error(f"ok is false: {bytes(response.body[:200])!r}")
                return False
            reply = str(document.get("reply", ""))
            conversation_id = document.get("conversation_id")
        if self.conversation_id is None and isinstance(conversation_id, str):
            self.conversation_id = conversation_id
            if self.canary:
                owner = results.conversations.setdefault(conversation_id, self.index)
                if owner != self.index:
                    results.leak(f"session {self.index} got conversation {conversation_id} of session {owner}")
        elif self.canary and conversation_id != self.conversation_id:
            results.leak(f"session {self.index}: conversation changed to {conversation_id}")
        if self.canary:
            self.users.append(text)
            foreign = {token for token in _CANARY.findall(reply) if token != self.canary}
            if foreign:
                results.leak(f"session {self.index} saw {sorted(foreign)[:3]} in {reply[:120]!r}")
            elif reply != reply_text(self.users, spec["chunks"], echo_all=spec.get("echo_all", False)):
                results.integrity_failures += 1
                if len(results.error_samples) < 8:
                    results.error_samples.append(f"integrity: session {self.index}: {reply[:160]!r}")
        return True


async def _worker(spec: dict[str, Any], results: _Results, worker: int, counter: list[int], deadline: float) -> None:
    host, port = spec["host"], int(spec["port"])
    timeout = float(spec.get("timeout", 60.0))
    fresh_connection = bool(spec.get("new_connection_per_session", True))
    max_total = int(spec.get("max_sessions_total", 0))
    workers = int(spec["sessions"])
    connection: _Connection | None = None
    stagger = float(spec.get("stagger_s", 0.0))
    if stagger > 0:
        # Users do not all press Enter in the same millisecond: spread the first turns.
        await asyncio.sleep(stagger * worker / workers)
    try:
        for round_ in range(int(spec.get("rounds", 1))):
            if round_ and time.perf_counter() > deadline:
                break
            if max_total:
                if counter[0] >= max_total:
                    break
                counter[0] += 1
            session = _Session(spec, results, worker + workers * round_)
            results.sessions += 1
            if connection is not None and (fresh_connection or connection.closed):
                connection.close()
                connection = None
            for turn in range(1, int(spec["turns"]) + 1):
                text = session.message(turn)
                data, probe = session.build(text)
                start = time.perf_counter()
                try:
                    if connection is None:
                        connection = await asyncio.wait_for(_Connection.open(host, port), timeout)
                    response = await asyncio.wait_for(connection.request(data, probe), timeout)
                except (TimeoutError, OSError) as exc:
                    results.error(
                        f"session {session.index} turn {turn}: {type(exc).__name__} {exc} "
                        f"after {time.perf_counter() - start:.1f} s; "
                        f"{connection.progress() if connection else 'no connection'}"
                    )
                    if connection is not None:
                        connection.close()
                        connection = None
                    break
                end = time.perf_counter()
                if not results.first_start or start < results.first_start:
                    results.first_start = start
                results.last_end = max(results.last_end, end)
                if not session.check(response, text):
                    connection.close()
                    connection = None
                    break
                if ("connection", "close") in response.headers:
                    connection.close()  # the server ends keep-alive (Hypercorn: after 1,000 requests)
                    connection = None
                results.latency_ms.append(round((end - start) * 1000, 3))
                if response.first_at:
                    results.ttft_ms.append(round((response.first_at - start) * 1000, 3))
                if session.cookie is None and spec["kind"] == "ours":
                    session.cookie = _cookie_from(response.headers)
                    if session.cookie is None:
                        results.error("no session cookie was set")
    finally:
        if connection is not None:
            connection.close()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load the spec describes and return the measurements."""
    if spec["host"] not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the load generator only targets loopback addresses")
    results = _Results()
    before = resource.getrusage(resource.RUSAGE_SELF)
    counter = [0]
    deadline = time.perf_counter() + float(spec.get("duration") or 1e9)
    await asyncio.gather(*(
        _worker(spec, results, worker, counter, deadline) for worker in range(int(spec["sessions"]))
    ))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "turns": len(results.latency_ms),
        "sessions": results.sessions,
        "errors": results.errors,
        "error_samples": results.error_samples,
        "leaks": results.leaks,
        "leak_samples": results.leak_samples,
        "integrity_failures": results.integrity_failures,
        "wall_s": max(0.0, results.last_end - results.first_start),
        "cpu_s": cpu,
        "latency_ms": results.latency_ms,
        "ttft_ms": results.ttft_ms,
    }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop

        outcome = uvloop.run(run(spec))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        outcome = asyncio.run(run(spec))
    json.dump(outcome, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
