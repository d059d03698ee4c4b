"""Claude through Anthropic's native Messages API.

``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``,
the system prompt as the top-level ``system`` field, and ``stream: true`` always (a
non-streaming call collects the stream). The reply is a stream of named SSE events::

    message_start → content_block_start → content_block_delta* → content_block_stop
                  → message_delta → message_stop          (ping and error anywhere)

``message_start`` carries the input token count; ``message_delta`` carries the stop
reason and the *cumulative* usage. Events and block types this module does not know
are skipped, as Anthropic's versioning policy asks. A stream that ends before
``message_stop`` is truncated and raises :class:`BadUpstreamResponse`.

A 429 without ``retry-after`` is Anthropic's spend cap and is reported as final
(:class:`UpstreamRejected`), not as a rate limit worth waiting out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import cattrs
import httpx
from cattrs.gen import make_dict_unstructure_fn, override

from chatbot._messages import Usage

from ._base import ChatRequest, StreamEnd, StreamEvent
from ._http import error_from_status, error_info
from ._sse import ServerSentEvent
from ._wire import Endpoint, decode_json, get_json, make_converter, stream_sse, structure, truncated

if TYPE_CHECKING:
    from chatbot._config import ProviderConfig

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]

ANTHROPIC_VERSION: Final = "2023-06-01"
_MAX_MODEL_PAGES: Final = 50


# -- wire types: request ------------------------------------------------------------


@attrs.frozen
class _WireMessage:
    role: str
    content: str


@attrs.frozen(kw_only=True)
class _MessagesRequest:
    model: str
    max_tokens: int
    messages: list[_WireMessage]
    system: str | None = None
    stream: bool = True


# -- wire types: reply --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def input_total(self) -> int | None:
        """All input tokens: fresh plus cache writes plus cache reads."""
        if self.input_tokens is None:
            return None
        return (
            self.input_tokens
            + (self.cache_creation_input_tokens or 0)
            + (self.cache_read_input_tokens or 0)
        )


@attrs.frozen(kw_only=True)
class _MessageInfo:
    model: str = ""
    usage: _Usage = _Usage()


@attrs.frozen
class _MessageStart:
    message: _MessageInfo


@attrs.frozen(kw_only=True)
class _BlockDelta:
    type: str = ""
    text: str | None = None


@attrs.frozen(kw_only=True)
class _ContentBlockDelta:
    delta: _BlockDelta
    index: int = 0


@attrs.frozen(kw_only=True)
class _StopInfo:
    stop_reason: str | None = None


@attrs.frozen(kw_only=True)
class _MessageDelta:
    delta: _StopInfo = _StopInfo()
    usage: _Usage | None = None


@attrs.frozen(kw_only=True)
class _ContentBlock:
    type: str = ""
    text: str | None = None


@attrs.frozen(kw_only=True)
class _Message:
    """A whole (non-streaming) reply."""

    content: list[_ContentBlock]
    model: str = ""
    stop_reason: str | None = None
    usage: _Usage = _Usage()


@attrs.frozen
class _ModelInfo:
    id: str


@attrs.frozen(kw_only=True)
class _ModelPage:
    data: list[_ModelInfo] | None = None
    has_more: bool = False
    last_id: str | None = None


def _configure_converter() -> cattrs.Converter:
    converter = make_converter()
    converter.register_unstructure_hook(
        _MessagesRequest,
        make_dict_unstructure_fn(
            _MessagesRequest, converter, system=override(omit_if_default=True)
        ),
    )
    return converter


_converter: Final = _configure_converter()


# -- the stream -----------------------------------------------------------------------


@final
class _Parser:
    """State of one streamed reply: usage so far, stop reason, and whether it ended."""

    __slots__ = ("input_tokens", "model", "output_tokens", "provider", "secret", "stop_reason", "stopped")

    def __init__(self, provider: str, secret: str | None) -> None:
        self.provider = provider
        self.secret = secret
        self.model = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None
        self.stopped = False

    def feed(self, event: ServerSentEvent) -> str | None:
        if self.stopped:
            return None  # nothing follows message_stop; the body is only drained
        kind = event.event
        if kind == "ping":
            return None
        payload = decode_json(self.provider, event.data)
        if kind == "message" and isinstance(payload, dict):
            kind = str(payload.get("type", ""))  # an event without an ``event:`` line
        if kind == "content_block_delta":
            delta = structure(_converter, self.provider, payload, _ContentBlockDelta).delta
            return delta.text if delta.type == "text_delta" else None
        if kind == "message_start":
            message = structure(_converter, self.provider, payload, _MessageStart).message
            self.model = message.model
            self._add_usage(message.usage)
        elif kind == "message_delta":
            update = structure(_converter, self.provider, payload, _MessageDelta)
            self.stop_reason = update.delta.stop_reason or self.stop_reason
            if update.usage is not None:
                self._add_usage(update.usage)
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            raise error_from_status(self.provider, None, error_info(payload), secret=self.secret)
        return None

    def _add_usage(self, usage: _Usage) -> None:
        # message_delta usage is cumulative: later values replace earlier ones.
        total_input = usage.input_total()
        if total_input is not None:
            self.input_tokens = total_input
        if usage.output_tokens is not None:
            self.output_tokens = usage.output_tokens

    def finish(self) -> StreamEnd:
        if not self.stopped:
            raise truncated(self.provider)
        return StreamEnd(
            usage=Usage(self.input_tokens, self.output_tokens),
            stop_reason=self.stop_reason,
            model=self.model,
        )

    def complete(self, payload: Any) -> tuple[str, StreamEnd]:
        message = structure(_converter, self.provider, payload, _Message)
        text = "".join(block.text or "" for block in message.content if block.type == "text")
        usage = Usage(message.usage.input_total() or 0, message.usage.output_tokens or 0)
        return text, StreamEnd(usage=usage, stop_reason=message.stop_reason, model=message.model)


def _make_headers(provider: AnthropicProvider) -> Mapping[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if provider.config.api_key:
        headers["x-api-key"] = provider.config.api_key
    return headers


def _messages_endpoint(provider: AnthropicProvider) -> Endpoint:
    return Endpoint.prepare(provider.client, f"{provider.config.base_url}/v1/messages", provider._headers)


@final
@attrs.frozen
class AnthropicProvider:
    """Claude over the Anthropic Messages API; holds its config and a shared client.

    The API key is sent as ``x-api-key`` and never appears in reprs or messages.
    """

    config: ProviderConfig
    client: httpx.AsyncClient = attrs.field(repr=False)
    _headers: Mapping[str, str] = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_make_headers, takes_self=True)
    )
    _messages: Endpoint = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_messages_endpoint, takes_self=True)
    )

    @property
    def name(self) -> str:
        return self.config.provider

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream one reply; see :meth:`chatbot.providers.Provider.stream`.

        Raises:
            AuthenticationFailed: 401/403, or an ``authentication_error`` event.
            RateLimited: 429 with ``retry-after`` (or a ``rate_limit_error`` event).
            UpstreamRejected: other 4xx, and a 429 without ``retry-after`` (spend cap).
            UpstreamUnavailable: 5xx, 529, ``overloaded_error``, connect errors, resets.
            UpstreamTimeout: an httpx timeout.
            BadUpstreamResponse: malformed JSON or a stream cut before ``message_stop``.
        """
        wire = _MessagesRequest(
            model=request.model,
            max_tokens=request.max_tokens,
            messages=[_WireMessage(m.role.value, m.content) for m in request.messages],
            system=request.system or None,
        )
        return stream_sse(
            self.client,
            self._messages,
            payload=_converter.unstructure(wire),
            provider=self.name,
            parser=_Parser(self.name, self.config.api_key),
            bare_429_is_final=True,
            secret=self.config.api_key,
        )

    async def list_models(self) -> list[str]:
        """Model ids from ``GET /v1/models``, following ``has_more`` pages.

        Raises:
            ProviderError: any subclass, as for :meth:`stream`.
        """
        models: list[str] = []
        params = {"limit": "1000"}
        for _ in range(_MAX_MODEL_PAGES):
            payload = await get_json(
                self.client,
                f"{self.config.base_url}/v1/models",
                headers=self._headers,
                params=params,
                provider=self.name,
                secret=self.config.api_key,
            )
            page = structure(_converter, self.name, payload, _ModelPage)
            models.extend(model.id for model in page.data or ())
            if not page.has_more or not page.last_id:
                break
            params = {"limit": "1000", "after_id": page.last_id}
        return list(dict.fromkeys(models))
