"""The API's request and response shapes, and how they reach ``/openapi.json``.

Request models are strict (no ``"5"`` for a number, no ``false`` for ``0``) and
forbid unknown fields: a typo in a client is an error, not a silently ignored
setting. Bodies are parsed straight from bytes by pydantic (one pass, no
intermediate ``dict``); responses are plain dicts encoded by the stdlib, and the
response models here only document them. ``tests/webapp/test_schemathesis.py``
checks that every response matches its documented model.

Each route declares the error statuses it can answer with :func:`responds`, so the
OpenAPI document lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import request
from quart_schema import document_querystring, document_request, document_response
from quart_schema.openapi import OpenAPIProvider
from quart_schema.validation import DataSource
from werkzeug.routing.rules import Rule

from chatbot.providers._registry import provider_specs

from .errors import ApiError

__all__ = [
    "EVENT_STREAM_CONTENT",
    "READ_ERRORS",
    "WRITE_ERRORS",
    "ChatBody",
    "ChatResponse",
    "ConnectBody",
    "ConnectResponse",
    "ConversationDetailResponse",
    "ConversationListResponse",
    "ConversationResponse",
    "CreateConversationBody",
    "ErrorResponse",
    "ExportDocument",
    "ExportQuery",
    "LoginBody",
    "ModelsResponse",
    "OkResponse",
    "OpenAPI",
    "ProvidersResponse",
    "RenameBody",
    "StatusResponse",
    "StopBody",
    "StopResponse",
    "media",
    "parse_body",
    "parse_query",
    "responds",
]

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

TITLE_MAX = 200

# Error statuses every route that reads, or that takes a body, can answer with.
READ_ERRORS: Final = (401, 413, 500, 503)
WRITE_ERRORS: Final = (400, 401, 403, 408, 413, 415, 422, 500, 503)
_NOT_BLANK = r"\S"  # JSON Schema patterns search, like pydantic's: "has a non-space character"


class _Strict(BaseModel):
    # pydantic caches the short strings it decodes from JSON, by default values too: each
    # browser's messages and ids would stay in memory long after its conversations left
    # (and pin allocator pages a busy spell would otherwise give back). Keys only.
    model_config = ConfigDict(strict=True, extra="forbid", cache_strings="keys")


def _provider_names() -> list[str]:
    return [name for spec in provider_specs() for name in (spec.name, *spec.aliases)]


# -- requests --------------------------------------------------------------------


class ConnectBody(_Strict):
    """Connect this browser session to a provider (and start a new conversation)."""

    provider: Annotated[
        str, Field(max_length=50, json_schema_extra={"enum": _provider_names()})
    ]
    model: Annotated[str, Field(min_length=1, max_length=200, pattern=_NOT_BLANK)]
    api_key: Annotated[str | None, Field(max_length=1000)] = None
    base_url: Annotated[str | None, Field(max_length=2000)] = None
    system_prompt: Annotated[str | None, Field(max_length=100_000)] = None
    max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None


class ChatBody(_Strict):
    message: Annotated[str, Field(min_length=1, pattern=_NOT_BLANK)]
    conversation_id: Annotated[str | None, Field(min_length=1, max_length=200)] = None


class StopBody(_Strict):
    conversation_id: Annotated[str | None, Field(min_length=1, max_length=200)] = None


class CreateConversationBody(_Strict):
    title: Annotated[str | None, Field(max_length=TITLE_MAX)] = None


class RenameBody(_Strict):
    title: Annotated[str, Field(min_length=1, max_length=TITLE_MAX, pattern=_NOT_BLANK)]


class LoginBody(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=1000)]


class ExportQuery(_Strict):
    format: Literal["md", "json"] = "md"


# -- the export document (also the import body) ------------------------------------

_Timestamp = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0, le=10**12)]


class UsageModel(_Strict):
    input_tokens: _Count
    output_tokens: _Count


class ExportedMessage(_Strict):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=10_000_000)]
    usage: UsageModel | None = None
    stopped: bool = False
    created_at: _Timestamp | None = None


class ExportedConversation(_Strict):
    title: Annotated[str, Field(max_length=TITLE_MAX)] = ""
    provider: Annotated[str | None, Field(max_length=50)] = None
    model: Annotated[str | None, Field(max_length=200)] = None
    system_prompt: Annotated[str | None, Field(max_length=100_000)] = None
    created_at: _Timestamp | None = None


class ExportDocument(_Strict):
    """A conversation as exported by ``?format=json``; ``POST /api/conversations/import`` reads it back."""

    version: Literal[1]
    conversation: ExportedConversation
    messages: Annotated[list[ExportedMessage], Field(max_length=100_000)]


# -- responses -----------------------------------------------------------------------


class ErrorResponse(BaseModel):
    """Every error: a sentence for the user and a code for programs."""

    ok: Literal[False]
    error: str
    code: str


class OkResponse(BaseModel):
    ok: Literal[True]


class StatusResponse(BaseModel):
    ok: Literal[True]
    connected: bool
    provider: str | None
    model: str | None
    provider_error: str | None
    conversation_id: str | None
    auth_required: bool


class ProviderInfo(BaseModel):
    name: str
    label: str
    default_model: str
    default_base_url: str
    needs_key: bool


class ProvidersResponse(BaseModel):
    ok: Literal[True]
    providers: list[ProviderInfo]


class ConnectResponse(BaseModel):
    ok: Literal[True]
    provider: str
    model: str
    conversation_id: str


class ModelsResponse(BaseModel):
    ok: Literal[True]
    models: list[str]


class ChatResponse(BaseModel):
    ok: Literal[True]
    reply: str
    conversation_id: str
    usage: UsageModel
    stopped: bool


class StopResponse(BaseModel):
    ok: Literal[True]
    stopped: bool


class ConversationModel(BaseModel):
    id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int
    provider: str | None
    model: str | None


class MessageModel(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    usage: UsageModel | None
    stopped: bool
    created_at: float


class ConversationListResponse(BaseModel):
    ok: Literal[True]
    conversations: list[ConversationModel]


class ConversationResponse(BaseModel):
    ok: Literal[True]
    conversation: ConversationModel


class ConversationDetailResponse(BaseModel):
    ok: Literal[True]
    conversation: ConversationModel
    messages: list[MessageModel]


_USAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["input_tokens", "output_tokens"],
    "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
}


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        }
    }


EVENT_STREAM_CONTENT: dict[str, Any] = {
    "text/event-stream": {
        "schema": {
            "description": (
                "One server-sent event: any number of `delta`, then one `done` or `error`. "
                "`data` is one line of JSON."
            ),
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"enum": ["delta", "done", "error"]},
                "data": {"type": "string"},
            },
            "oneOf": [
                _event(
                    "delta",
                    {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                ),
                _event(
                    "done",
                    {
                        "type": "object",
                        "required": ["reply", "usage", "stopped", "conversation_id"],
                        "properties": {
                            "reply": {"type": "string"},
                            "usage": _USAGE_SCHEMA,
                            "stopped": {"type": "boolean"},
                            "conversation_id": {"type": "string"},
                        },
                    },
                ),
                _event(
                    "error",
                    {
                        "type": "object",
                        "required": ["error", "code"],
                        "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
                    },
                ),
            ],
        }
    }
}
"""How ``/api/chat/stream`` documents its 200 response."""


# -- parsing -------------------------------------------------------------------------


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    kind = first.get("type", "")
    if kind == "missing":
        return f"The field '{where}' is required."
    if kind == "extra_forbidden":
        return f"Unknown field '{where}'."
    if not where:
        return "The request body must be a JSON object."
    message = str(first.get("msg", "is invalid")).rstrip(".")
    return f"The field '{where}' is invalid: {message[:1].lower()}{message[1:]}."


async def parse_body(model: type[M]) -> M:
    """Read and validate the JSON body (strict mode).

    Raises:
        ApiError: 415 not JSON, 400 empty or malformed JSON, 422 invalid fields.
        RequestEntityTooLarge: the body exceeds ``MAX_CONTENT_LENGTH`` (413).
    """
    if not _is_json(request.content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the request body as JSON (Content-Type: application/json).",
        )
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        raise ApiError(400, "bad_request", "The request body is empty; send a JSON object.")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors(include_url=False)):
            raise ApiError(400, "bad_json", "The request body is not valid JSON.") from None
        raise ApiError(422, "validation_error", _describe(exc)) from None


def parse_query(model: type[M]) -> M:
    """Validate the query string.

    Raises:
        ApiError: 422 an unknown or invalid parameter.
    """
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(422, "validation_error", _describe(exc)) from None


# -- documentation -------------------------------------------------------------------

_MEDIA_ATTRIBUTE = "_chatbot_media"


def responds(model: type[BaseModel], *errors: int) -> Callable[[F], F]:
    """Document the 200 response and each error status the route can answer with."""

    def decorator(func: F) -> F:
        func = document_response(model, 200)(func)  # type: ignore[arg-type]
        for status in errors:
            func = document_response(ErrorResponse, status)(func)  # type: ignore[arg-type]
        return func

    return decorator


def body(model: type[BaseModel]) -> Callable[[F], F]:
    """Document the JSON request body (parsing happens in the route with :func:`parse_body`)."""
    return document_request(model, source=DataSource.JSON)  # type: ignore[arg-type]


def query(model: type[BaseModel]) -> Callable[[F], F]:
    return document_querystring(model)  # type: ignore[arg-type]


def media(status: int, content: Mapping[str, Any], *, replace: bool) -> Callable[[F], F]:
    """Document non-JSON content for a status (an event stream, a Markdown download)."""

    def decorator(func: F) -> F:
        entries = dict(getattr(func, _MEDIA_ATTRIBUTE, {}))
        entries[status] = (replace, dict(content))
        setattr(func, _MEDIA_ATTRIBUTE, entries)
        return func

    return decorator


class OpenAPI(OpenAPIProvider):
    """quart-schema's generator, plus required request bodies and non-JSON responses.

    The document is built on the first request and kept: routes do not change once
    the app serves.
    """

    _cached: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        if self._cached is None:
            self._cached = super().schema()
        return self._cached

    def build_request_body(
        self, model: type[Any], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        request_body, definitions = super().build_request_body(model, source)
        request_body["required"] = True
        return request_body, definitions

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        extra: dict[int, tuple[bool, dict[str, Any]]] = getattr(func, _MEDIA_ATTRIBUTE, {})
        if extra:
            for operations in paths.values():
                for operation in operations.values():
                    responses = dict(operation["responses"])
                    for status, (replace, content) in extra.items():
                        entry = dict(responses.get(status, {"description": ""}))
                        entry["content"] = (
                            dict(content) if replace else {**entry.get("content", {}), **content}
                        )
                        responses[status] = entry
                    operation["responses"] = responses
        return paths, components
