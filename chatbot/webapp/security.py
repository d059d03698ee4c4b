"""What keeps a shared deployment safe: headers, cross-site checks, access token, limits.

* **Headers.** Every response carries a strict Content-Security-Policy (no inline
  script or style, no framing) and ``nosniff``/``no-referrer``/``DENY``.
* **Cross-site requests.** The session cookie is ``SameSite=Lax``, and on top of that
  a state-changing request (POST/PATCH/DELETE) that carries the cookie is refused
  when the browser says it comes from another site: ``Sec-Fetch-Site: cross-site``,
  or an ``Origin`` (else ``Referer``) whose host and port differ from ``Host``.
  Requests without the cookie (API clients with a bearer token) or without those
  headers (curl) are not browser requests and pass. JSON bodies are required too,
  which a cross-site form cannot send.
* **Access token.** With ``CHATBOT_AUTH_TOKEN`` set, the API wants either
  ``Authorization: Bearer <token>`` or a session that logged in. The login proof is
  an HMAC of the session id under the token, in its own HttpOnly cookie: it survives
  a restart and works on every instance, and changing the token logs everyone out.
* **Base URLs.** ``/api/connect`` makes the server call a URL the browser chose, so
  only ``CHATBOT_ALLOWED_BASE_URLS`` (default: each provider's public endpoint and
  localhost on any port) are accepted; ``*`` allows any.
* **Rate limit.** A token bucket per session on the chat endpoints, off unless
  ``CHATBOT_RATE_LIMIT_PER_MINUTE`` is set.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable
from typing import Final, final
from urllib.parse import urlsplit

import attrs

from chatbot._config import normalize_base_url
from chatbot._errors import ConfigError, LimitExceeded
from chatbot.providers._registry import provider_specs

from .errors import ApiError

__all__ = [
    "SECURITY_HEADERS",
    "AccessControl",
    "BaseUrlPolicy",
    "TokenBucket",
    "check_same_origin",
]

SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _cross_site() -> ApiError:
    return ApiError(
        403,
        "cross_site",
        "This request came from another site and was refused; use the chatbot page itself.",
    )


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """``(host, port)`` with the scheme's default port written as None; None if invalid."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return (parts.hostname.lower(), port)


def check_same_origin(
    method: str,
    host: str,
    origin: str | None,
    referer: str | None,
    fetch_site: str | None,
) -> None:
    """Refuse a cookie-carrying, state-changing request that a browser says is cross-site.

    The caller checks that the request carries the session cookie.

    Raises:
        ApiError: 403 ``cross_site``.
    """
    if method not in _STATE_CHANGING:
        return
    if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
        raise _cross_site()
    source = origin if origin is not None else referer
    if source is None:
        return
    if source.strip().lower() == "null":
        raise _cross_site()
    parsed = urlsplit(source.strip())
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.netloc:
        raise _cross_site()
    source_host = _host_port(parsed.netloc, scheme)
    if source_host is None or source_host != _host_port(host, scheme):
        raise _cross_site()


@final
@attrs.frozen
class _Pattern:
    scheme: str
    host: str
    port: int | None  # None: any port
    path: str

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if scheme != self.scheme or host != self.host:
            return False
        if self.port is not None and port != self.port:
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")


def _default_port(scheme: str, port: int | None) -> int:
    return port if port is not None else _DEFAULT_PORTS[scheme]


def _parse_pattern(entry: str) -> _Pattern:
    wildcard = False
    text = entry.strip()
    scheme, sep, rest = text.partition("://")
    netloc, slash, path = rest.partition("/")
    if netloc.endswith(":*"):
        wildcard = True
        netloc = netloc[:-2]
    try:
        cleaned = normalize_base_url(f"{scheme}{sep}{netloc}{slash}{path}")
        parts = urlsplit(cleaned)
        port = parts.port
    except (ConfigError, ValueError):
        raise ConfigError(
            f"CHATBOT_ALLOWED_BASE_URLS has an invalid entry {entry!r}: "
            "use URLs like https://api.openai.com or http://localhost:*.",
            variable="CHATBOT_ALLOWED_BASE_URLS",
        ) from None
    scheme_lower = parts.scheme.lower()
    return _Pattern(
        scheme=scheme_lower,
        host=(parts.hostname or "").lower(),
        port=None if wildcard else _default_port(scheme_lower, port),
        path=parts.path.rstrip("/"),
    )


def default_allowed_base_urls() -> tuple[str, ...]:
    """Each provider's public endpoint, plus localhost on any port."""
    defaults = tuple(spec.default_base_url for spec in provider_specs())
    return (*defaults, "http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")


@final
class BaseUrlPolicy:
    """Decides which upstream base URLs a browser may connect the server to."""

    __slots__ = ("_any", "_patterns")

    def __init__(self, entries: Iterable[str] | None) -> None:
        """
        Raises:
            ConfigError: an entry is not a URL pattern.
        """
        listed = tuple(entries) if entries is not None else default_allowed_base_urls()
        self._any = any(entry.strip() == "*" for entry in listed)
        self._patterns = tuple(_parse_pattern(e) for e in listed if e.strip() not in ("", "*"))

    def allows(self, base_url: str) -> bool:
        if self._any:
            return True
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or parts.username is not None or parts.password is not None:
            return False
        try:
            port = _default_port(scheme, parts.port)
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        path = parts.path.rstrip("/")
        return any(p.matches(scheme, host, port, path) for p in self._patterns)

    def check(self, base_url: str) -> None:
        """
        Raises:
            ApiError: 400 ``base_url_not_allowed``, naming the variable to change.
        """
        if not self.allows(base_url):
            raise ApiError(
                400,
                "base_url_not_allowed",
                f"This server may not connect to {base_url}: ask its operator to add it "
                "to CHATBOT_ALLOWED_BASE_URLS.",
            )


@final
class AccessControl:
    """The optional access token: bearer header, or a session that logged in."""

    __slots__ = ("_token",)

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def token_matches(self, candidate: str) -> bool:
        if self._token is None:
            return True
        return hmac.compare_digest(candidate.encode(), self._token)

    def bearer_ok(self, authorization: str | None) -> bool:
        if self._token is None or not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def session_proof(self, session_id: str) -> str:
        """The value of the login cookie for this session."""
        assert self._token is not None
        return hmac.new(self._token, b"chatbot-login:" + session_id.encode(), hashlib.sha256).hexdigest()

    def proof_ok(self, session_id: str, proof: str | None) -> bool:
        if self._token is None:
            return True
        if not proof:
            return False
        return hmac.compare_digest(proof.encode(), self.session_proof(session_id).encode())

    @staticmethod
    def required() -> ApiError:
        return ApiError(
            401,
            "auth_required",
            "This server needs an access token: log in, or send Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"},
        )


@final
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; each chat request takes one."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, per_minute: float, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def check(self) -> None:
        """Like :meth:`take`, without taking a token.

        Raises:
            LimitExceeded: no token left.
        """
        self._refill()
        if self._tokens < 1.0:
            raise self._exceeded()

    def take(self) -> None:
        """
        Raises:
            LimitExceeded: no token left; ``retry_after`` says when the next one comes.
        """
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        raise self._exceeded()

    def _exceeded(self) -> LimitExceeded:
        wait = (1.0 - self._tokens) / self._rate
        return LimitExceeded(
            f"Too many requests; wait {max(1, math.ceil(wait))} s and try again.",
            limit="rate",
            retry_after=wait,
        )
