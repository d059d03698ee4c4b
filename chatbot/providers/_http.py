"""The one boundary where httpx failures and upstream error replies become ProviderErrors.

Two kinds of failure reach an adapter:

* **Transport failures** (httpx exceptions) are translated by :func:`map_http_errors`,
  which every adapter wraps around its HTTP calls, chained with ``raise ... from exc``:

  ======================================  ==========================================
  httpx                                   chatbot
  ======================================  ==========================================
  ConnectTimeout / ReadTimeout / ...      UpstreamTimeout(phase="connect"/"read"/...)
  ConnectError, ProxyError                UpstreamUnavailable (status None)
  ReadError, RemoteProtocolError, ...     UpstreamUnavailable (a reset or a cut
                                          connection, also mid-stream)
  DecodingError, TooManyRedirects         BadUpstreamResponse
  UnsupportedProtocol, InvalidURL         UpstreamRejected (the base URL is unusable)
  ======================================  ==========================================

  The aiohttp transport reports any aiohttp connection error (a reset included) as
  ConnectTimeout; unless its cause really is a timeout, it becomes
  UpstreamUnavailable. A stream that ends *cleanly* before the provider's terminator
  is not a transport failure; adapters report it as BadUpstreamResponse.

* **Error replies** (non-2xx, always JSON even for streaming requests, or an error
  event inside a 200 stream) are turned into the most specific error by
  :func:`error_from_status`, which uses the provider's own message when it sent one:
  401/403 → AuthenticationFailed, 408 → UpstreamTimeout, 429 → RateLimited (with
  ``retry_after`` from ``retry-after-ms`` or ``retry-after``, seconds or HTTP date),
  5xx/529 → UpstreamUnavailable, any other 4xx → UpstreamRejected.

A 429 that waiting will not fix is reported as :class:`UpstreamRejected` with
``status == 429`` rather than :class:`RateLimited`, so the retry loop and the user
see it as final: OpenAI's ``insufficient_quota``, any 429 with ``x-should-retry:
false``, and (for adapters that ask for it) a 429 without ``retry-after``, which is how
Anthropic signals a spend cap.

Provider messages are cleaned before they reach ``str(exc)``: one line, bounded
length, and anything shaped like an API key (or the configured key itself) redacted,
because OpenAI echoes part of a rejected key back.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final

import attrs
import cattrs
import httpx
from cattrs.gen import make_dict_structure_fn

from chatbot._errors import (
    AuthenticationFailed,
    BadUpstreamResponse,
    ProviderError,
    RateLimited,
    UnknownProvider,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

from ._registry import lookup_provider

__all__ = [
    "ErrorInfo",
    "error_from_response",
    "error_from_status",
    "error_info",
    "map_http_errors",
    "open_body",
    "parse_retry_after",
    "provider_label",
    "read_error",
]

#: Error bodies are short JSON documents; anything longer is cut before parsing.
ERROR_BODY_LIMIT: Final = 64 * 1024
_DETAIL_LIMIT: Final = 300

# Error ``type``/``code`` strings (Anthropic, OpenAI, OpenRouter, Ollama's /v1) and the
# HTTP status each one stands for, used for error events inside a 200 stream.
_KIND_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_FINAL_429_KINDS: Final = frozenset({"insufficient_quota"})
_KEY_LIKE: Final = re.compile(r"\bsk[-_][A-Za-z0-9_\-*.]{6,}")  # sk-, sk-proj-, sk-ant-, sk-or-
_WHITESPACE: Final = re.compile(r"\s+")


@attrs.frozen
class ErrorInfo:
    """What an upstream said about an error: its message, ``type`` and ``code``."""

    message: str = ""
    type: str = ""
    code: str = ""

    @property
    def kinds(self) -> tuple[str, str]:
        return (self.type, self.code)


@attrs.frozen
class _ErrorEnvelope:
    # {"error": {...}} (Anthropic, OpenAI, OpenRouter), {"error": "text"} (Ollama),
    # or a bare {"message": ...} from a proxy in front of the API.
    error: ErrorInfo | None = None
    message: str = ""


def _configure_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=False)
    structure_info = make_dict_structure_fn(ErrorInfo, converter)

    def info(value: Any, _: type) -> ErrorInfo:
        # OpenRouter sends ``code`` as an int before the first token and as a string
        # mid-stream; Ollama sends the whole error as a string.
        if isinstance(value, str):
            return ErrorInfo(message=value)
        if not isinstance(value, dict):
            return ErrorInfo()
        return structure_info(
            {
                key: "" if item is None else item if isinstance(item, str) else str(item)
                for key, item in value.items()
                if key in ("message", "type", "code")
            },
            ErrorInfo,
        )

    converter.register_structure_hook(ErrorInfo, info)
    return converter


_converter: Final = _configure_converter()


def error_info(payload: Any) -> ErrorInfo:
    """Extract the provider's error description from a decoded JSON error body.

    Unknown shapes give an empty :class:`ErrorInfo`; this never raises.
    """
    if not isinstance(payload, dict):
        return ErrorInfo()
    try:
        envelope = _converter.structure(payload, _ErrorEnvelope)
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError):
        return ErrorInfo()
    if envelope.error is not None:
        return envelope.error
    return ErrorInfo(message=envelope.message)


def provider_label(provider: str) -> str:
    """The display name of a provider, for messages (``Claude (Anthropic)``)."""
    try:
        return lookup_provider(provider).label
    except UnknownProvider:
        return provider


def _clean(detail: str, secret: str | None) -> str:
    if secret and len(secret) >= 6:  # a one-letter placeholder key is no secret
        detail = detail.replace(secret, "[redacted]")
    detail = _KEY_LIKE.sub("[redacted]", detail)
    detail = _WHITESPACE.sub(" ", detail).strip()
    if len(detail) > _DETAIL_LIMIT:
        detail = detail[: _DETAIL_LIMIT - 1].rstrip() + "…"
    return detail


def parse_retry_after(headers: Mapping[str, str] | httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the upstream asked us to wait, from ``retry-after-ms`` or ``retry-after``.

    ``retry-after`` may be a number of seconds or an HTTP date. Missing, negative or
    unparseable values give ``None``; a date in the past gives ``0.0``.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            millis = float(raw_ms)
            if math.isfinite(millis) and millis >= 0:
                return millis / 1000
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _status_for(info: ErrorInfo) -> int | None:
    if info.code.isdigit():
        return int(info.code)
    for kind in info.kinds:
        if kind in _KIND_STATUS:
            return _KIND_STATUS[kind]
    return None


def error_from_status(
    provider: str,
    status: int | None,
    info: ErrorInfo,
    *,
    retry_after: float | None = None,
    final_429: bool = False,
    secret: str | None = None,
) -> ProviderError:
    """The most specific :class:`ProviderError` for an error reply or error event.

    Args:
        provider: canonical provider name, carried by the error.
        status: the HTTP status, or ``None`` for an error event inside a 200 stream;
            then the status is inferred from the error's ``code`` or ``type``.
        info: the provider's description of the error (see :func:`error_info`).
        retry_after: seconds from the response headers, if any.
        final_429: a 429 is final (not worth a retry), e.g. a spend cap.
        secret: the configured API key, redacted from the message.
    """
    label = provider_label(provider)
    http = status is not None
    if status is None:
        status = _status_for(info)
    detail = (
        _clean(info.message, secret)
        or (httpx.codes.get_reason_phrase(status) if status else "")
        or "no details given"
    )
    where = f" (HTTP {status})" if http else " mid-stream"
    if status in (401, 403):
        what = "refused the API key" if status == 401 else "denied access"
        return AuthenticationFailed(f"{label} {what}{where}: {detail}", provider=provider, status=status)
    if status == 429:
        if final_429 or _FINAL_429_KINDS.intersection(info.kinds):
            return UpstreamRejected(
                f"{label} refused the request: quota or spend limit reached{where}: {detail}",
                provider=provider,
                status=status,
            )
        wait = f" (retry in {math.ceil(retry_after)} s)" if retry_after is not None else ""
        return RateLimited(
            f"{label} is rate-limiting requests{where}: {detail}{wait}",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status == 408:
        return UpstreamTimeout(f"{label} timed out{where}: {detail}", provider=provider, phase="upstream")
    if status is None or status >= 500:
        what = "is overloaded" if status == 529 else "is unavailable"
        if not http:
            what = "failed"
        return UpstreamUnavailable(
            f"{label} {what}{where}: {detail}", provider=provider, status=status, retry_after=retry_after
        )
    if 400 <= status < 500:
        return UpstreamRejected(f"{label} rejected the request{where}: {detail}", provider=provider, status=status)
    return BadUpstreamResponse(
        f"{label} answered with unexpected HTTP status {status}.", provider=provider, status=status
    )


def error_from_response(
    provider: str,
    status: int,
    headers: Mapping[str, str] | httpx.Headers,
    body: bytes,
    *,
    bare_429_is_final: bool = False,
    secret: str | None = None,
) -> ProviderError:
    """The error for a non-2xx reply, given its status, headers and (JSON) body.

    Args:
        bare_429_is_final: treat a 429 without ``retry-after`` as final (Anthropic's
            spend cap) rather than as a rate limit to wait out.
        secret: the configured API key, redacted from the message.
    """
    try:
        info = error_info(json.loads(body))
    except ValueError:
        info = ErrorInfo()
    retry_after = parse_retry_after(headers)
    final = (headers.get("x-should-retry") or "").lower() == "false" or (
        bare_429_is_final and retry_after is None
    )
    return error_from_status(
        provider, status, info, retry_after=retry_after, final_429=final, secret=secret
    )


@contextlib.asynccontextmanager
async def open_body(response: httpx.Response) -> AsyncIterator[AsyncIterator[bytes]]:
    """The body of a streamed response as chunks; the iteration ends with the block.

    httpx reads through a chain of async generators (its own, then httpcore's). When
    a reader stops early (Stop, an error event, a size cap), they are left suspended,
    and trio warns about each one when it is collected while asyncio closes them
    later in the background. Closing the response first makes the next read fail at
    once, so running the iterator to its end afterwards finishes the whole chain
    here, deterministically; the read error this causes is expected and dropped.
    """
    chunks = response.aiter_bytes()
    try:
        yield chunks
    finally:
        await response.aclose()
        with contextlib.suppress(Exception):
            async for _ in chunks:
                pass


async def read_error(
    response: httpx.Response,
    provider: str,
    *,
    bare_429_is_final: bool = False,
    secret: str | None = None,
) -> ProviderError:
    """Read (at most 64 KiB of) a non-2xx response's body and build its error.

    Call it inside :func:`map_http_errors`: reading the body can fail too.
    """
    body = bytearray()
    async with open_body(response) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
    return error_from_response(
        provider,
        response.status_code,
        response.headers,
        bytes(body[:ERROR_BODY_LIMIT]),
        bare_429_is_final=bare_429_is_final,
        secret=secret,
    )


@contextlib.contextmanager
def map_http_errors(provider: str) -> Iterator[None]:
    """Translate httpx exceptions raised in the block into ProviderErrors.

    Raises:
        UpstreamTimeout: connect, read, write or pool timeout (``phase`` says which).
        UpstreamUnavailable: the connection could not be made or was lost.
        BadUpstreamResponse: the body could not be decoded, or redirects looped.
        UpstreamRejected: the base URL cannot be used.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        if _not_a_timeout(exc):
            # The aiohttp transport reports every connection error as ConnectTimeout;
            # its text is an internal repr, so the user gets a fixed sentence.
            raise UpstreamUnavailable(
                f"The connection to {provider_label(provider)} failed; please try again.",
                provider=provider,
            ) from exc
        phase, what = _TIMEOUTS.get(type(exc), ("read", "stopped responding"))
        raise UpstreamTimeout(
            f"{provider_label(provider)} {what}.", provider=provider, phase=phase
        ) from exc
    except (httpx.ConnectError, httpx.ProxyError) as exc:
        raise UpstreamUnavailable(
            f"Could not connect to {provider_label(provider)}: {_reason(exc)}.", provider=provider
        ) from exc
    except httpx.UnsupportedProtocol as exc:
        raise UpstreamRejected(
            f"The base URL for {provider_label(provider)} is not usable: {_reason(exc)}.",
            provider=provider,
        ) from exc
    except (httpx.DecodingError, httpx.TooManyRedirects) as exc:
        raise BadUpstreamResponse(
            f"{provider_label(provider)} sent a response that could not be read: {_reason(exc)}.",
            provider=provider,
        ) from exc
    except httpx.HTTPError as exc:
        # The transport's text (chunk sizes, payload reprs) means nothing to a user;
        # the cause stays chained for the logs.
        raise UpstreamUnavailable(
            f"The connection to {provider_label(provider)} was lost before the reply was "
            "complete; please try again.",
            provider=provider,
        ) from exc
    except httpx.InvalidURL as exc:
        raise UpstreamRejected(
            f"The base URL for {provider_label(provider)} is not valid: {_reason(exc)}.",
            provider=provider,
        ) from exc


_TIMEOUTS: Final[Mapping[type[httpx.TimeoutException], tuple[str, str]]] = {
    httpx.ConnectTimeout: ("connect", "did not accept the connection in time"),
    httpx.ReadTimeout: ("read", "stopped responding"),
    httpx.WriteTimeout: ("write", "did not accept the request in time"),
    httpx.PoolTimeout: ("pool", "has no free connection (all are busy)"),
}


def _not_a_timeout(exc: httpx.TimeoutException) -> bool:
    # The aiohttp transport maps every aiohttp connection error, a reset or a
    # disconnect included, to httpx.ConnectTimeout; only its timeout errors are
    # TimeoutError subclasses.
    cause = exc.__cause__
    return (
        cause is not None
        and type(cause).__module__.startswith("aiohttp")
        and not isinstance(cause, TimeoutError)
    )


def _reason(exc: Exception) -> str:
    text = _WHITESPACE.sub(" ", str(exc)).strip().rstrip(".")
    return (text[:_DETAIL_LIMIT] if text else type(exc).__name__) or "unknown error"

