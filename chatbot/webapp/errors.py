"""The one place where errors become HTTP statuses and ``{ok: false, error, code}`` bodies.

Every failure the API reports has the same shape: ``error`` is one sentence fit to
show a user (``str(exc)`` of a :class:`~chatbot.ChatbotError`), and ``code`` is a
stable machine-readable identifier. The core's exceptions are mapped by class, most
specific first, through :data:`_STATUS`; failures that exist only at the HTTP edge
(a cross-site request, a missing access token, a malformed body) are
:class:`ApiError`.

Quart's own HTML error pages (404, 405, 413 ...) are replaced by the same JSON
shape, keeping headers such as ``Allow``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from quart import Quart, Response, current_app
from werkzeug.exceptions import HTTPException

from chatbot._errors import (
    ActorCrashed,
    AuthenticationFailed,
    Busy,
    ChatbotError,
    ConfigError,
    LimitExceeded,
    NotConnected,
    ProviderError,
    RateLimited,
    ShuttingDown,
    StoreError,
    UnknownConversation,
    UnknownProvider,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatbot.store import StoreConflict

__all__ = [
    "ApiError",
    "body_too_large_message",
    "error_body",
    "error_response",
    "json_response",
    "register_error_handlers",
    "status_for",
]

logger = logging.getLogger("chatbot.webapp")

# Most specific first: the first class in an exception's MRO found here wins.
_STATUS: Final[Mapping[type[ChatbotError], int]] = {
    UnknownProvider: 422,
    ConfigError: 422,
    AuthenticationFailed: 502,
    RateLimited: 429,
    UpstreamTimeout: 504,
    UpstreamUnavailable: 502,
    ProviderError: 502,
    UnknownConversation: 404,
    NotConnected: 409,
    Busy: 409,
    ShuttingDown: 503,
    ActorCrashed: 500,
    StoreConflict: 409,
    StoreError: 503,
    LimitExceeded: 413,
    ChatbotError: 500,
}

# Codes and sentences for the HTTP errors Quart raises itself.
_HTTP_CODES: Final[Mapping[int, tuple[str, str]]] = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    408: ("request_timeout", "The request body took too long to arrive."),
    413: ("limit_exceeded", "The request body is too large."),
    415: ("unsupported_media_type", "Send the request body as JSON (Content-Type: application/json)."),
}

_JSON = "application/json"


class ApiError(Exception):
    """A failure that exists only at the HTTP edge (auth, cross-site, malformed request).

    ``str(exc)`` is the user-facing sentence, as for :class:`~chatbot.ChatbotError`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message


def json_response(
    payload: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response, encoded with the stdlib (ASCII-safe, so odd upstream text can't break it).

    The body is written in one piece, so it gets no send timeout: Quart would otherwise
    wrap every send in ``asyncio.wait_for``, a task per request.
    """
    response = Response(
        json.dumps(payload, separators=(",", ":")),
        status=status,
        content_type=_JSON,
        headers=dict(headers) if headers else None,
    )
    response.timeout = None
    return response


def status_for(exc: ChatbotError) -> int:
    """The HTTP status for a core error: its class's entry, or its nearest base class's."""
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


def _code_for(exc: ChatbotError) -> str:
    if isinstance(exc, LimitExceeded) and exc.limit == "rate":
        return "rate_limited"
    return exc.code


def error_body(exc: ChatbotError | ApiError) -> dict[str, Any]:
    """The ``{ok: false, error, code}`` body; also the data of an SSE ``error`` event."""
    code = exc.code if isinstance(exc, ApiError) else _code_for(exc)
    return {"ok": False, "error": str(exc), "code": code}


def _retry_after(exc: ChatbotError) -> float | None:
    value = getattr(exc, "retry_after", None)
    return value if isinstance(value, int | float) and value >= 0 else None


def error_response(exc: ChatbotError | ApiError) -> Response:
    """The response for ``exc``, with ``Retry-After`` when the error carries one."""
    if isinstance(exc, ApiError):
        return json_response(error_body(exc), exc.status, exc.headers)
    status = status_for(exc)
    if isinstance(exc, LimitExceeded) and exc.limit == "rate":
        status = 429
    headers: dict[str, str] = {}
    retry_after = _retry_after(exc)
    if retry_after is not None and status in (429, 502, 503):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return json_response(error_body(exc), status, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code, sentence = _HTTP_CODES.get(status, (_snake(exc.name), f"{exc.name}."))
    if status == 413:
        sentence = body_too_large_message(current_app.config.get("MAX_CONTENT_LENGTH"))
    headers = {
        name: value for name, value in exc.get_headers() if name.lower() != "content-type"
    }
    return json_response({"ok": False, "error": sentence, "code": code}, status, headers)


def body_too_large_message(limit: int | None) -> str:
    if not limit:
        return "The request body is too large."
    return f"The request body is larger than the limit of {limit} bytes (CHATBOT_MAX_BODY_BYTES)."


def _snake(name: str) -> str:
    return "_".join(name.lower().split()) or "error"


def register_error_handlers(app: Quart) -> None:
    """Make every error, expected or not, a JSON body with the right status."""

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return error_response(exc)

    @app.errorhandler(ChatbotError)
    async def _chatbot_error(exc: ChatbotError) -> Response:
        if status_for(exc) >= 500 and not isinstance(exc, ShuttingDown):
            logger.warning("request failed: %s (%s)", exc.code, type(exc).__name__)
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def _http_exception(exc: HTTPException) -> Response:
        return _http_error(exc)

    @app.errorhandler(UnicodeDecodeError)
    async def _undecodable(exc: UnicodeDecodeError) -> Response:
        return json_response(
            {"ok": False, "error": "The request is not valid UTF-8.", "code": "bad_request"}, 400
        )

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error while handling a request")
        return json_response(
            {
                "ok": False,
                "error": "Something went wrong on the server; please try again.",
                "code": "internal_error",
            },
            500,
        )
