"""The one exception tree of chatbot.

Every failure a user can cause or meet is a :class:`ChatbotError`; ``str(exc)`` is
the one-line message fit to show them, and the attributes carry the context an
operator or a program needs (``code``, ``provider``, ``status``)::

    ChatbotError
    ├── ConfigError                  bad setting, unknown provider, missing key
    │   ├── UnknownProvider
    │   └── MissingApiKey
    ├── ProviderError                the upstream model API failed
    │   ├── AuthenticationFailed     401 / 403
    │   ├── RateLimited              429 (carries retry_after)
    │   ├── UpstreamUnavailable      5xx, 529, connect errors, resets
    │   ├── UpstreamTimeout          connect / first token / idle gap / total
    │   ├── BadUpstreamResponse      malformed body or truncated stream
    │   └── UpstreamRejected         any other 4xx (bad model, bad request, billing)
    ├── ConversationError            routing a request to a conversation failed
    │   ├── UnknownConversation
    │   ├── NotConnected             no provider configured for the conversation
    │   ├── Busy                     inbox full, or another turn is running
    │   ├── ActorCrashed             the actor died; it was restarted
    │   └── ShuttingDown
    ├── StoreError                   the conversation store failed
    └── LimitExceeded                message or body too large, rate limit

Foreign exceptions (httpx, drivers) are translated at exactly one boundary each and
chained with ``raise ... from exc``. Misuse of our own API raises builtins.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ActorCrashed",
    "AuthenticationFailed",
    "BadUpstreamResponse",
    "Busy",
    "ChatbotError",
    "ConfigError",
    "ConversationError",
    "LimitExceeded",
    "MissingApiKey",
    "NotConnected",
    "ProviderError",
    "RateLimited",
    "ShuttingDown",
    "StoreError",
    "UnknownConversation",
    "UnknownProvider",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class ChatbotError(Exception):
    """Root of every error chatbot raises on purpose.

    ``str(exc)`` is a single sentence meant for the user; ``code`` is a stable,
    machine-readable identifier used by the HTTP API and the metrics.
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ChatbotError):
    """A setting is missing or has a bad value; the message names it and the fix."""

    code = "config_error"

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class UnknownProvider(ConfigError):
    """A provider name that the registry does not know."""

    code = "unknown_provider"

    def __init__(self, name: str, known: tuple[str, ...], *, variable: str | None = None) -> None:
        subject = f"{variable}={name}" if variable else f"Provider {name!r}"
        super().__init__(
            f"{subject} is not a known provider: choose one of {', '.join(known)}.",
            variable=variable,
        )
        self.name = name
        self.known = known


class MissingApiKey(ConfigError):
    """The chosen provider needs an API key and none was given.

    The web server still starts without one (users can connect from the UI); every
    other configuration error stops it.
    """

    code = "missing_api_key"


class ProviderError(ChatbotError):
    """The upstream model API failed; ``provider`` and ``status`` say where and how."""

    code = "upstream_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class AuthenticationFailed(ProviderError):
    """The upstream refused the API key (401) or its permissions (403)."""

    code = "upstream_auth_failed"


class RateLimited(ProviderError):
    """The upstream asked us to slow down (429); ``retry_after`` is in seconds."""

    code = "upstream_rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class UpstreamUnavailable(ProviderError):
    """The upstream is down, overloaded (5xx, 529) or unreachable."""

    code = "upstream_unavailable"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class UpstreamTimeout(ProviderError):
    """The upstream did not answer in time; ``phase`` says which deadline passed."""

    code = "upstream_timeout"

    def __init__(self, message: str, *, provider: str, phase: str = "total") -> None:
        super().__init__(message, provider=provider, status=None)
        self.phase = phase


class BadUpstreamResponse(ProviderError):
    """The upstream answered with something we cannot parse, or cut a stream short."""

    code = "upstream_bad_response"


class UpstreamRejected(ProviderError):
    """The upstream refused the request with a 4xx we cannot fix by retrying."""

    code = "upstream_rejected"


class ConversationError(ChatbotError):
    """A request could not be routed to or served by a conversation actor."""

    code = "conversation_error"

    def __init__(self, message: str, *, conversation_id: str | None = None) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id


class UnknownConversation(ConversationError):
    """No conversation with that id exists (or it belongs to someone else)."""

    code = "not_found"


class NotConnected(ConversationError):
    """The conversation has no provider configured yet."""

    code = "not_connected"


class Busy(ConversationError):
    """The conversation cannot take the request now: its inbox is full or a turn is running."""

    code = "busy"


class ActorCrashed(ConversationError):
    """The conversation's actor failed unexpectedly; it was restarted from the last commit."""

    code = "actor_crashed"

    @classmethod
    def restarted(cls, conversation_id: str | None = None) -> ActorCrashed:
        """The error as users see it, wherever the crash is noticed."""
        return cls(
            "Something went wrong in this conversation; it was restarted, please retry.",
            conversation_id=conversation_id,
        )


class ShuttingDown(ConversationError):
    """The supervisor is shutting down and takes no new requests."""

    code = "shutting_down"


class StoreError(ChatbotError):
    """The conversation store failed; nothing of the turn was written."""

    code = "store_error"


class LimitExceeded(ChatbotError):
    """A configured limit was exceeded: message length, body size, live actors or rate."""

    code = "limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after
