"""What the fake upstreams check in a request, as the wire-format reference's checklist says.

A violation raises :class:`Invalid`, which the server answers with the provider's own
error body and status, so an adapter bug surfaces in a test as a typed error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._formats import Flavour

__all__ = ["Invalid", "check_auth", "check_body"]


class Invalid(Exception):
    """The request breaks a rule of the API it was sent to."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code



def check_auth(
    headers: Mapping[str, str], path: str, anthropic: bool, flavour: Flavour, api_key: str | None
) -> None:
    """Reject a request without the right key (and, for Anthropic, version) header."""
    bearer = headers.get("authorization", "")
    token = bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else None
    if anthropic:
        key = headers.get("x-api-key") or token
        if not key or (api_key is not None and key != api_key):
            raise Invalid(401, "invalid x-api-key")
        if "anthropic-version" not in headers:
            raise Invalid(400, "anthropic-version: header is required")
        return
    if flavour == "ollama" and path == "/api/tags":
        return
    if flavour == "ollama":
        if bearer and token is None:
            raise Invalid(401, "malformed Authorization header")
        return
    if not token or (api_key is not None and token != api_key):
        raise Invalid(401, "Incorrect API key provided: " + (token or "(none)"))

def check_body(
    body: Any, anthropic: bool, flavour: Flavour, models: tuple[str, ...]
) -> None:
    """Reject a chat body the real API would reject (and what our adapters must not send)."""
    if not isinstance(body, dict):
        raise Invalid(400, "The request body is not valid JSON.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Invalid(400, "model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid(400, "messages: at least one message is required")
    if anthropic:
        _check_anthropic(body, messages)
    else:
        _check_openai(body, messages)
    if model.removesuffix(":latest") not in models:
        if anthropic:
            raise Invalid(404, f"model: {model}")
        status = 400 if flavour == "openrouter" else 404
        if flavour == "ollama":
            raise Invalid(404, f'model "{model}" not found, try pulling it first')
        raise Invalid(status, f"The model `{model}` does not exist or you do not have access to it.")

def _check_anthropic(body: dict[str, Any], messages: list[Any]) -> None:
    if not isinstance(body.get("max_tokens"), int) or isinstance(body.get("max_tokens"), bool):
        raise Invalid(400, "max_tokens: Field required")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise Invalid(400, "system: Input should be a valid string or list")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            raise Invalid(
                400,
                'messages: Unexpected role "system". The Messages API accepts a '
                "top-level `system` parameter, not \"system\" as an input message role.",
            )
        if role not in ("user", "assistant"):
            raise Invalid(400, f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, str | list) or not content:
            raise Invalid(400, f"messages.{index}: text content blocks must be non-empty")
    if body.get("stream") not in (None, True, False):
        raise Invalid(400, "stream: Input should be a valid boolean")

def _check_openai(body: dict[str, Any], messages: list[Any]) -> None:
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise Invalid(400, f"Invalid value for 'messages[{index}].role'.")
        if role in ("system", "developer") and index != 0:
            raise Invalid(400, f"messages[{index}]: the system prompt must be the first message")
        if not isinstance(message.get("content"), str):
            raise Invalid(400, f"messages[{index}].content must be a string")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise Invalid(400, "Invalid 'max_tokens': must be a positive integer.")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise Invalid(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
