"""What each fake upstream says, byte for byte: streams, whole replies, error bodies.

Every function here is pure: it turns a request body and a :class:`Reply` script
into frames (bytes plus the delay before them) or JSON documents, following the
shapes in the provider wire-format reference (Anthropic Messages, OpenAI Chat
Completions, OpenRouter's quirks, Ollama). The server module only sends them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Literal

import attrs

__all__ = [
    "ERROR_TYPES",
    "Flavour",
    "Frame",
    "Reply",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "default_text",
    "input_tokens",
    "openai_completion",
    "openai_error",
    "openai_stream",
    "split_text",
]

Flavour = Literal["openai", "openrouter", "ollama"]
Ending = Literal["complete", "truncate", "reset", "hang", "error", "malformed"]

#: Anthropic error ``type`` per HTTP status (the fake's default for each).
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_CODES: Final[Mapping[int, tuple[str, str | None]]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


@attrs.frozen(kw_only=True)
class Reply:
    """A scripted successful (or cut-short) reply.

    Args:
        text: the reply; ``None`` echoes the last user message as ``"You said: ..."``.
        chunks: how many text deltas the reply is split into (``None``: server default).
        first_token_delay: seconds before the first text delta (``None``: default).
        token_delay: seconds between text deltas (``None``: default).
        split: re-cut the whole body into HTTP chunks of these sizes (cycled; an int
            is one size), ignoring event boundaries: inside lines, JSON, UTF-8
            characters and between CR and LF. ``None`` sends one chunk per event.
        line_ending: ``"\\n"``, ``"\\r\\n"`` or ``"\\r"`` for the SSE lines.
        ending: ``complete``, or how the stream goes wrong after ``end_after`` deltas:
            ``truncate`` (clean end without the terminator), ``reset`` (TCP RST),
            ``hang`` (stop sending, keep the connection), ``error`` (the provider's
            mid-stream error event), ``malformed`` (a data line of broken JSON).
        error_type: the error ``type``/``code`` for ``ending="error"``.
        json_body: answer with a whole JSON reply even though a stream was asked for.
        stop_reason: the stop reason to report (provider default when ``None``).
        keepalives: interleave ``ping`` events / ``:`` comments.
        hold: the reply waits (headers and all) until the test sets this event, so it
            is still in flight for as long as the test needs.
    """

    text: str | None = None
    chunks: int | None = None
    first_token_delay: float | None = None
    token_delay: float | None = None
    split: int | tuple[int, ...] | None = None
    line_ending: str = "\n"
    ending: Ending = "complete"
    end_after: int = 1
    error_type: str | None = None
    json_body: bool = False
    stop_reason: str | None = None
    keepalives: bool = True
    hold: threading.Event | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Frame:
    """Bytes to send and the seconds to wait before sending them."""

    data: bytes
    delay: float = 0.0


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block.get("text", "") for block in content if isinstance(block, dict)
        )
    return ""


def default_text(body: Mapping[str, Any]) -> str:
    """The fake's reply to a request: ``"You said: <last user message>"``."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return f"You said: {_message_text(message.get('content'))}"
    return "You said nothing."


def input_tokens(body: Mapping[str, Any]) -> int:
    """Deterministic input "tokens": whitespace-separated words in system + messages.

    Output "tokens" are the number of text deltas the reply was split into.
    """
    words = len(_message_text(body.get("system") or "").split())
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            words += len(_message_text(message.get("content")).split())
    return words


def split_text(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` nearly equal, non-empty pieces (fewer if it is short)."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sse(eol: str, data: Any, event: str | None = None) -> bytes:
    lines = [f"event: {event}"] if event else []
    lines.append(f"data: {data if isinstance(data, str) else _dumps(data)}")
    return (eol.join(lines) + eol + eol).encode()




# -- Anthropic ------------------------------------------------------------------------


def anthropic_error(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": "req_fake",
    }


def anthropic_message(body: Mapping[str, Any], pieces: Sequence[str], reply: Reply) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "".join(pieces)}],
        "model": body.get("model", ""),
        "stop_reason": reply.stop_reason or "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens(body), "output_tokens": len(pieces)},
    }


def anthropic_stream(
    body: Mapping[str, Any], pieces: Sequence[str], reply: Reply, first: float, between: float
) -> Iterator[Frame]:
    """The named-event stream of a Messages reply, cut short as ``reply.ending`` says."""
    eol = reply.line_ending
    model = body.get("model", "")
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens(body), "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": None},
        },
    }
    yield Frame(_sse(eol, start, "message_start"))
    yield Frame(_sse(eol, {"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}}, "content_block_start"))
    if reply.keepalives:
        yield Frame(_sse(eol, {"type": "ping"}, "ping"))
        # A block type this client does not know must be skipped.
        yield Frame(_sse(eol, {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "citations_delta", "citation": {}}},
                                 "content_block_delta"))
    count = len(pieces) if reply.ending == "complete" else min(reply.end_after, len(pieces))
    for index, piece in enumerate(pieces[:count]):
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": piece}}
        yield Frame(_sse(eol, delta, "content_block_delta"),
                            first if index == 0 else between)
    if reply.ending == "error":
        error = anthropic_error(529, "Overloaded", reply.error_type or "overloaded_error")
        yield Frame(_sse(eol, error, "error"))
    elif reply.ending == "malformed":
        yield Frame(_sse(eol, '{"type":"content_block_delta","delta":{"type":', "content_block_delta"))
    if reply.ending != "complete":
        return
    yield Frame(_sse(eol, {"type": "content_block_stop", "index": 0}, "content_block_stop"))
    yield Frame(_sse(eol, {"type": "future_event_type", "detail": "ignored"}, "future_event_type"))
    yield Frame(_sse(eol, {"type": "message_delta",
                           "delta": {"stop_reason": reply.stop_reason or "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": len(pieces)}}, "message_delta"))
    yield Frame(_sse(eol, {"type": "message_stop"}, "message_stop"))


# -- OpenAI, OpenRouter, Ollama /v1 ---------------------------------------------------


def openai_error(
    flavour: Flavour, status: int, message: str, code: str | None = None
) -> dict[str, Any]:
    if flavour == "openrouter":
        return {"error": {"code": status, "message": message, "metadata": {}}}
    if flavour == "ollama":
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    kind, default_code = _OPENAI_CODES.get(status, ("api_error", None))
    if code == "insufficient_quota":
        kind = code
    return {"error": {"message": message, "type": kind, "param": None, "code": code or default_code}}


def _chunk(flavour: Flavour, model: str, choices: list[Any], **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "gen-fake" if flavour == "openrouter" else "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1733300000,
        "model": model,
        "choices": choices,
    }
    if flavour == "openrouter":
        chunk["provider"] = "Fake"
    elif flavour == "ollama":
        chunk["system_fingerprint"] = "fp_ollama"
    else:
        chunk["system_fingerprint"] = "fp_fake"
        chunk["obfuscation"] = "Xy12"
    chunk.update(extra)
    return chunk


def _choice(flavour: Flavour, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if flavour == "openrouter":
        choice["native_finish_reason"] = "end_turn" if finish else None
    return choice


def openai_completion(
    flavour: Flavour, body: Mapping[str, Any], pieces: Sequence[str], reply: Reply
) -> dict[str, Any]:
    text = "".join(pieces)
    prompt, completion = input_tokens(body), len(pieces)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1733300000,
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": reply.stop_reason or "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


def openai_stream(
    flavour: Flavour,
    body: Mapping[str, Any],
    pieces: Sequence[str],
    reply: Reply,
    first: float,
    between: float,
) -> Iterator[Frame]:
    """``data:`` chunks ending in ``[DONE]``, with each flavour's quirks."""
    eol = reply.line_ending
    model = body.get("model", "")
    options = body.get("stream_options") or {}
    with_usage = flavour == "openrouter" or bool(options.get("include_usage"))
    usage_field = {"usage": None} if with_usage and flavour != "openrouter" else {}
    comment = f": OPENROUTER PROCESSING{eol}{eol}".encode()
    if flavour == "openrouter" and reply.keepalives:
        yield Frame(comment)
    role = {"role": "assistant", "content": ""}
    yield Frame(_sse(eol, _chunk(flavour, model, [_choice(flavour, role)], **usage_field)))
    count = len(pieces) if reply.ending == "complete" else min(reply.end_after, len(pieces))
    for index, piece in enumerate(pieces[:count]):
        delta = {"content": piece}
        if flavour == "ollama":
            delta["role"] = "assistant"
        yield Frame(_sse(eol, _chunk(flavour, model, [_choice(flavour, delta)], **usage_field)),
                            first if index == 0 else between)
        if index == 0 and flavour == "openrouter" and reply.keepalives:
            yield Frame(comment)
    if reply.ending == "error":
        if flavour == "openrouter":
            error = _chunk(flavour, model, [_choice(flavour, {"content": ""}, "error")],
                           error={"code": reply.error_type or "server_error",
                                  "message": "Provider disconnected unexpectedly"})
        else:
            error = {"error": {"message": "The server had an error while processing your request.",
                               "type": reply.error_type or "server_error", "param": None, "code": None}}
        yield Frame(_sse(eol, error))
    elif reply.ending == "malformed":
        yield Frame(_sse(eol, '{"id":"chatcmpl-fake","choices":[{"delta":{"content":'))
    if reply.ending != "complete":
        return
    finish = _choice(flavour, {}, reply.stop_reason or "stop")
    yield Frame(_sse(eol, _chunk(flavour, model, [finish], **usage_field)))
    if with_usage:
        prompt, completion = input_tokens(body), len(pieces)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        yield Frame(_sse(eol, _chunk(flavour, model, [], usage=usage)))
    yield Frame(_sse(eol, "[DONE]"))
