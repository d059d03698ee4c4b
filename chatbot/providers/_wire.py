"""Plumbing every adapter shares: one streamed POST, one JSON GET, and decoding.

:func:`stream_sse` owns the life of a streamed reply: it opens the response inside
:func:`~chatbot.providers._http.map_http_errors`, turns a non-2xx reply into its error,
feeds the body through the SSE decoder into the adapter's :class:`StreamParser`, and
closes the response when the caller stops iterating. Adapters supply only what
differs: the URL, headers, payload and parser.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import cattrs
import httpx

from chatbot._errors import BadUpstreamResponse, ProviderError
from chatbot._http_client import UpstreamClient

from ._base import StreamEnd, StreamEvent, TextDelta
from ._http import error_from_response, map_http_errors, open_body, provider_label, read_error
from ._sse import ServerSentEvent, SSEDecoder

__all__ = [
    "Endpoint",
    "StreamParser",
    "decode_json",
    "get_json",
    "make_converter",
    "stream_sse",
    "structure",
    "truncated",
]

T = TypeVar("T")


def _is_optional(type_: Any) -> bool:
    args = typing.get_args(type_)
    return (
        typing.get_origin(type_) in (typing.Union, types.UnionType)
        and len(args) == 2
        and types.NoneType in args
    )


def make_converter() -> cattrs.Converter:
    """A new converter for upstream JSON: extra keys ignored, ``X | None`` fields fast.

    Each adapter module builds its own from this and keeps it private. Reply chunks
    are mostly optional fields and are structured once per streamed event, so each
    ``X | None`` gets a hook that calls ``X``'s hook directly instead of cattrs'
    generic union dispatch (a quarter less time per chunk).
    """
    converter = cattrs.Converter(detailed_validation=False)

    def optional(type_: Any) -> Callable[[Any, Any], Any]:
        inner_type = next(arg for arg in typing.get_args(type_) if arg is not types.NoneType)
        inner = converter.get_structure_hook(inner_type)

        def structure_optional(value: Any, _: Any) -> Any:
            return None if value is None else inner(value, inner_type)

        return structure_optional

    converter.register_structure_hook_factory(_is_optional, optional)
    return converter


def decode_json(provider: str, data: str | bytes) -> Any:
    """``json.loads`` that reports a malformed body as the upstream's fault.

    Raises:
        BadUpstreamResponse: ``data`` is not JSON.
    """
    try:
        return json.loads(data)
    except ValueError as exc:
        raise BadUpstreamResponse(
            f"{provider_label(provider)} sent malformed JSON.", provider=provider
        ) from exc


def truncated(provider: str) -> BadUpstreamResponse:
    """The error for a stream that ended cleanly but before the provider's terminator."""
    return BadUpstreamResponse(
        f"{provider_label(provider)} ended the stream before the reply was complete.",
        provider=provider,
    )


def structure(converter: cattrs.Converter, provider: str, payload: Any, cls: type[T]) -> T:
    """Structure a decoded JSON value into a wire class, tolerating extra keys.

    Raises:
        BadUpstreamResponse: a required field is missing or has the wrong type.
    """
    try:
        return converter.structure(payload, cls)
    except (ValueError, TypeError, KeyError, AttributeError, cattrs.BaseValidationError) as exc:
        raise BadUpstreamResponse(
            f"{provider_label(provider)} sent a reply in an unexpected shape.", provider=provider
        ) from exc


class StreamParser(Protocol):
    """One reply's worth of provider-specific stream state, driven by :func:`stream_sse`."""

    def feed(self, event: ServerSentEvent) -> str | None:
        """Consume one event; return reply text to pass on, if it carried any.

        Raises:
            ProviderError: the event reports an error, or is malformed.
        """
        ...

    def finish(self) -> StreamEnd:
        """The stream ended: return usage and stop reason.

        Raises:
            BadUpstreamResponse: the provider's terminator never came.
        """
        ...

    def complete(self, payload: Any) -> tuple[str, StreamEnd]:
        """Read a whole non-streaming reply (an upstream that ignored ``stream: true``).

        Raises:
            BadUpstreamResponse: the body has the wrong shape.
        """
        ...


@attrs.frozen
class Endpoint:
    """A URL to POST JSON to, with every header, prepared once per adapter.

    ``httpx.AsyncClient.stream`` would parse the URL and merge the client's headers
    and cookies again for every turn; building the request from parts prepared
    here costs a fraction of that. Upstream cookies are never sent: the client is
    shared by every user of the server.
    """

    url: httpx.URL
    headers: httpx.Headers = attrs.field(repr=False)  # carries the API key
    timeout: Mapping[str, float | None]

    @classmethod
    def prepare(
        cls, client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
    ) -> Endpoint:
        merged = httpx.Headers(client.headers)
        merged.update(headers)
        merged["content-type"] = "application/json"
        return cls(httpx.URL(url), merged, client.timeout.as_dict())

    def post(self, payload: Any) -> httpx.Request:
        """The request posting ``payload`` as compact UTF-8 JSON, with the client's timeouts."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return httpx.Request(
            "POST",
            self.url,
            headers=self.headers,
            content=body.encode(),
            extensions={"timeout": dict(self.timeout)},
        )


async def stream_sse(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    *,
    payload: Any,
    provider: str,
    parser: StreamParser,
    bare_429_is_final: bool = False,
    secret: str | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """POST ``payload`` and stream the SSE reply through ``parser``.

    The response stays open only while the caller iterates: closing the generator
    (or cancelling the task) closes it, which is how Stop reaches the upstream. Text
    that arrives in one network read is yielded as one :class:`TextDelta`. The body
    is read to its end even after the terminator, so the connection goes back to the
    pool, and :class:`StreamEnd` is yielded once the response is closed.

    Raises:
        ProviderError: any subclass: error replies, error events, transport failures,
            malformed or truncated streams.
    """
    with map_http_errors(provider):
        response = await _open(client, endpoint.post(payload))
        try:
            if not response.is_success:
                raise await read_error(
                    response, provider, bare_429_is_final=bare_429_is_final, secret=secret
                )
            if response.headers.get("content-type", "").startswith("application/json"):
                text, end = parser.complete(decode_json(provider, await response.aread()))
                if text:
                    yield TextDelta(text)
                yield end
                return
            decoder = SSEDecoder()
            async with open_body(response) as chunks:
                async for chunk in chunks:
                    text, error = _text_of(decoder.feed(chunk), parser)
                    if text:
                        yield TextDelta(text)
                    if error is not None:
                        raise error
            decoder.close()
        finally:
            await response.aclose()
    yield parser.finish()


async def _open(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request``, its body left streaming: straight to the transport when the
    client is the server's own (:class:`~chatbot._http_client.UpstreamClient`)."""
    if isinstance(client, UpstreamClient):
        return await client.send_direct(request)
    return await client.send(request, stream=True)


def _text_of(
    events: Sequence[ServerSentEvent], parser: StreamParser
) -> tuple[str, ProviderError | None]:
    """The reply text carried by the events of one network read, joined, and the error
    an event reported, if any (the text before it still counts).

    Text that arrived in one read is passed on as one delta: the caller could not
    have shown it any sooner, and every delta costs a trip through the actor, the
    reply stream and the browser's event stream.
    """
    pieces: list[str] = []
    try:
        for event in events:
            piece = parser.feed(event)
            if piece:
                pieces.append(piece)
    except ProviderError as exc:
        return "".join(pieces), exc
    return "".join(pieces), None


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str],
    provider: str,
    params: Mapping[str, str] | None = None,
    secret: str | None = None,
) -> Any:
    """GET ``url`` and decode its JSON body (used by model listings).

    Raises:
        ProviderError: any subclass.
    """
    with map_http_errors(provider):
        response = await client.get(url, headers=headers, params=params)
    if not response.is_success:
        raise error_from_response(
            provider, response.status_code, response.headers, response.content, secret=secret
        )
    return decode_json(provider, response.content)
