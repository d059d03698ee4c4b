"""Retries and stream deadlines around a provider, and collecting a stream into text.

:func:`resilient_stream` wraps ``provider.stream(request)``:

* **Retries** happen only before the first :class:`TextDelta` was passed on, so the
  user never sees text twice. Retried: :class:`RateLimited` (after ``retry_after``
  when the upstream gave one), :class:`UpstreamUnavailable` for connect errors,
  resets (``status is None``) and 500/502/503/529, and connect timeouts. Waits
  grow exponentially with full jitter, ``uniform(0, min(backoff_max, backoff_initial
  * 2**n))``. A ``retry_after`` longer than ``policy.retry_after_max`` is not waited
  out: the error goes to the caller at once, with its ``retry_after`` for the user.
  ``policy.max_attempts`` counts every attempt, the first included.
* **Deadlines** are cancel scopes around each step of the stream:
  ``first_token_timeout`` until the first text (or the end of a reply without any),
  then ``idle_timeout`` for each gap between events. When one passes, the upstream
  response is closed and :class:`UpstreamTimeout` is raised with ``phase`` set to
  ``"first_token"`` or ``"idle"``. Timeouts are not retried: the upstream is slow,
  and asking again would double the wait.

Each timeout has one owner. The HTTP client owns connecting (``httpx.Timeout``
``connect``); its read timeout must be unset or longer than both deadlines here,
which own reading phase by phase (``chatbot._http_client.create_http_client`` sets
it to the longer of the two plus a margin, as a backstop for model listing). The
caller owns ``total_timeout`` (the actor wraps the whole turn in ``fail_after``).

Backend-neutral: anyio only, so it runs on asyncio and trio.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Final

import anyio

from chatbot._errors import ProviderError, RateLimited, UpstreamTimeout, UpstreamUnavailable

from ._base import ChatRequest, Provider, StreamEnd, StreamEvent, TextDelta
from ._http import provider_label

if TYPE_CHECKING:
    from chatbot._config import UpstreamPolicy

__all__ = ["collect", "is_retryable", "resilient_stream"]

#: Statuses worth another attempt; others (501, 504, 505, ...) will not change.
RETRY_STATUSES: Final = frozenset({500, 502, 503, 529})

OnRetry = Callable[[int, ProviderError, float], None]


def is_retryable(exc: ProviderError) -> bool:
    """Whether another attempt could succeed where ``exc`` failed."""
    if isinstance(exc, RateLimited):
        return True
    if isinstance(exc, UpstreamUnavailable):
        return exc.status is None or exc.status in RETRY_STATUSES
    return isinstance(exc, UpstreamTimeout) and exc.phase == "connect"


def _backoff(policy: UpstreamPolicy, attempt: int, exc: ProviderError) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None to give up now."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return retry_after if retry_after <= policy.retry_after_max else None
    ceiling = min(policy.backoff_max, policy.backoff_initial * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


async def _next_event(
    stream: AsyncIterator[StreamEvent], seconds: float, phase: str, provider: str
) -> StreamEvent | None:
    """The stream's next event within ``seconds``; None when the stream is exhausted.

    The cancel scope covers only the wait, never a ``yield`` to the caller. When it
    fires, the cancellation runs through the provider's generator, which closes the
    upstream response on its way out.

    Raises:
        UpstreamTimeout: nothing came in time.
    """
    with anyio.move_on_after(seconds):
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None
    if phase == "first_token":
        what = f"did not start answering within {seconds:g} s"
    else:
        what = f"stopped sending for more than {seconds:g} s"
    raise UpstreamTimeout(f"{provider_label(provider)} {what}.", provider=provider, phase=phase)


async def resilient_stream(
    provider: Provider,
    request: ChatRequest,
    policy: UpstreamPolicy,
    *,
    on_retry: OnRetry | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """``provider.stream(request)`` with retries and first-token/idle deadlines.

    Args:
        on_retry: called as ``on_retry(attempt, error, delay)`` before each wait,
            where ``attempt`` is the 1-based number of the attempt that failed.

    Raises:
        UpstreamTimeout: a first-token or idle deadline passed (``phase`` says which).
        ProviderError: any other subclass, after the last attempt, or at once when it
            is not retryable or the first text was already passed on.
    """
    attempt = 0
    while True:
        attempt += 1
        started = False
        stream = provider.stream(request)
        try:
            while True:
                if started:
                    event = await _next_event(stream, policy.idle_timeout, "idle", provider.name)
                else:
                    event = await _next_event(
                        stream, policy.first_token_timeout, "first_token", provider.name
                    )
                if event is None:
                    return
                started = True  # from here on, a failure must not repeat text
                yield event
        except ProviderError as exc:
            if started or attempt >= policy.max_attempts or not is_retryable(exc):
                raise
            delay = _backoff(policy, attempt, exc)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
        finally:
            await stream.aclose()
        await anyio.sleep(delay)


async def collect(stream: AsyncIterator[StreamEvent]) -> tuple[str, StreamEnd]:
    """Read a whole stream: the reply text and its :class:`StreamEnd`.

    The stream is closed on the way out, also when this is cancelled.

    Raises:
        ProviderError: whatever the stream raises.
        RuntimeError: the stream ended without a :class:`StreamEnd` (a provider bug).
    """
    parts: list[str] = []
    end: StreamEnd | None = None
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                end = event
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if end is None:
        raise RuntimeError("the provider stream ended without a StreamEnd event")
    return "".join(parts), end
