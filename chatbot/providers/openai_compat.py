"""OpenAI Chat Completions, as spoken by OpenAI, OpenRouter and Ollama's ``/v1``.

``POST {base}/v1/chat/completions`` with ``Authorization: Bearer <key>`` only when a
key is configured (Ollama needs none), the system prompt as the first message,
``max_tokens`` (the field all three accept), ``stream: true`` and
``stream_options.include_usage``, so the usage arrives in a final chunk with
``"choices": []``. The stream is ``data:`` lines ending with ``data: [DONE]``;
comment lines (OpenRouter's ``: OPENROUTER PROCESSING``) are skipped by the SSE
decoder. A chunk with a top-level ``error`` (OpenRouter sends ``code`` as a string
there, a number elsewhere) raises the matching error; a stream that ends without
``[DONE]`` is truncated and raises :class:`BadUpstreamResponse`.

Ollama differs only in its model listing, see :mod:`chatbot.providers.ollama`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import cattrs
import httpx

from chatbot._messages import Usage

from ._base import ChatRequest, StreamEnd, StreamEvent
from ._http import error_from_status, error_info
from ._sse import ServerSentEvent
from ._wire import Endpoint, decode_json, get_json, make_converter, stream_sse, structure, truncated

if TYPE_CHECKING:
    from chatbot._config import ProviderConfig

__all__ = ["OpenAICompatProvider"]

_DONE: Final = "[DONE]"


# -- wire types: request ------------------------------------------------------------


@attrs.frozen
class _WireMessage:
    role: str
    content: str


@attrs.frozen
class _StreamOptions:
    include_usage: bool = True


@attrs.frozen(kw_only=True)
class _CompletionRequest:
    model: str
    messages: list[_WireMessage]
    max_tokens: int
    stream: bool = True
    stream_options: _StreamOptions = _StreamOptions()


# -- wire types: reply --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Delta:
    content: str | None = None


@attrs.frozen(kw_only=True)
class _Choice:
    delta: _Delta | None = None
    message: _Delta | None = None  # whole replies carry ``message`` instead of ``delta``
    finish_reason: str | None = None


@attrs.frozen(kw_only=True)
class _Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@attrs.frozen(kw_only=True)
class _Chunk:
    """One streamed chunk, or (with ``message`` choices) a whole reply."""

    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    model: str | None = None


@attrs.frozen
class _ModelInfo:
    id: str


@attrs.frozen
class _ModelList:
    data: list[_ModelInfo] | None = None  # Ollama sends null when no model is installed


def _configure_converter() -> cattrs.Converter:
    return make_converter()


_converter: Final = _configure_converter()


# -- the stream -----------------------------------------------------------------------


@final
class _Parser:
    """State of one streamed reply: usage, finish reason, and whether ``[DONE]`` came."""

    __slots__ = ("done", "finish_reason", "model", "provider", "secret", "usage")

    def __init__(self, provider: str, secret: str | None) -> None:
        self.provider = provider
        self.secret = secret
        self.model = ""
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, event: ServerSentEvent) -> str | None:
        if self.done:
            return None  # nothing follows [DONE]; the body is only drained
        if event.data == _DONE:
            self.done = True
            return None
        payload = decode_json(self.provider, event.data)
        if isinstance(payload, dict) and payload.get("error"):
            raise error_from_status(self.provider, None, error_info(payload), secret=self.secret)
        chunk = structure(_converter, self.provider, payload, _Chunk)
        return self._take(chunk, "delta")

    def _take(self, chunk: _Chunk, field: str) -> str | None:
        if chunk.model and not self.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        delta = choice.delta if field == "delta" else choice.message
        return delta.content if delta is not None else None

    def finish(self) -> StreamEnd:
        if not self.done:
            raise truncated(self.provider)
        return StreamEnd(usage=self.usage, stop_reason=self.finish_reason, model=self.model)

    def complete(self, payload: Any) -> tuple[str, StreamEnd]:
        if isinstance(payload, dict) and payload.get("error"):
            raise error_from_status(self.provider, None, error_info(payload), secret=self.secret)
        text = self._take(structure(_converter, self.provider, payload, _Chunk), "message")
        self.done = True
        return text or "", self.finish()


def _make_headers(provider: OpenAICompatProvider) -> Mapping[str, str]:
    key = provider.config.api_key
    return {"authorization": f"Bearer {key}"} if key else {}


def _chat_endpoint(provider: OpenAICompatProvider) -> Endpoint:
    return Endpoint.prepare(
        provider.client, f"{provider.config.base_url}/v1/chat/completions", provider._headers
    )


@attrs.frozen
class OpenAICompatProvider:
    """An OpenAI-compatible chat API; holds its config and a shared client.

    Subclassed by :class:`~chatbot.providers.ollama.OllamaProvider`, which lists
    models differently. The key travels only in the ``Authorization`` header.
    """

    config: ProviderConfig
    client: httpx.AsyncClient = attrs.field(repr=False)
    _headers: Mapping[str, str] = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_make_headers, takes_self=True)
    )
    _chat: Endpoint = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_chat_endpoint, takes_self=True)
    )

    @property
    def name(self) -> str:
        return self.config.provider

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream one reply; see :meth:`chatbot.providers.Provider.stream`.

        Raises:
            AuthenticationFailed: 401/403.
            RateLimited: 429 (``retry_after`` from the headers).
            UpstreamRejected: other 4xx, and 429 ``insufficient_quota``.
            UpstreamUnavailable: 5xx, connect errors, resets, mid-stream error chunks.
            UpstreamTimeout: an httpx timeout.
            BadUpstreamResponse: malformed JSON or a stream cut before ``[DONE]``.
        """
        messages = [_WireMessage("system", request.system)] if request.system else []
        messages.extend(_WireMessage(m.role.value, m.content) for m in request.messages)
        wire = _CompletionRequest(
            model=request.model, messages=messages, max_tokens=request.max_tokens
        )
        return stream_sse(
            self.client,
            self._chat,
            payload=_converter.unstructure(wire),
            provider=self.name,
            parser=_Parser(self.name, self.config.api_key),
            secret=self.config.api_key,
        )

    async def list_models(self) -> list[str]:
        """Model ids from ``GET /v1/models`` (``data: null`` means none).

        Raises:
            ProviderError: any subclass, as for :meth:`stream`.
        """
        payload = await get_json(
            self.client,
            f"{self.config.base_url}/v1/models",
            headers=self._headers,
            provider=self.name,
            secret=self.config.api_key,
        )
        listing = structure(_converter, self.name, payload, _ModelList)
        return list(dict.fromkeys(model.id for model in listing.data or ()))
