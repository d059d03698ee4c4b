"""The conversation routes under ``/api/conversations``: list, create, read, rename,
delete, export and import.

Only the browser session that owns a conversation reaches it; any other id is
answered with 404 (see :func:`~chatbot.webapp.api.owned_conversation`). The JSON
export is also the import format::

    {"version": 1,
     "conversation": {"title", "provider", "model", "system_prompt", "created_at"},
     "messages": [{"role", "content", "usage", "stopped", "created_at"}, ...]}
"""

from __future__ import annotations

import re
from typing import Any

from quart import Blueprint, Response, request
from quart.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from chatbot._messages import Message, Usage
from chatbot._transfer import ConversationExport, ExportFormatError, from_json, to_json, to_markdown
from chatbot.store import ConversationInfo

from .api import (
    after_api_request,
    before_api_request,
    check_owned,
    current_session,
    make_current,
    owned_conversation,
    web_state,
)
from .errors import ApiError, json_response
from .schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    ConversationDetailResponse,
    ConversationListResponse,
    ConversationResponse,
    CreateConversationBody,
    ExportDocument,
    ExportQuery,
    OkResponse,
    RenameBody,
    body,
    media,
    parse_body,
    parse_query,
    query,
    responds,
)

__all__ = ["conversations"]

conversations = Blueprint("conversations", __name__, url_prefix="/api/conversations")
conversations.before_request(before_api_request)
conversations.after_request(after_api_request)


class _ConversationId(BaseConverter):
    """Any path segment but ``import``, which is its own route (and ``Allow`` header)."""

    regex = r"(?!import$)[^/]+"


@conversations.record_once
def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["conversation"] = _ConversationId


def _conversation(info: ConversationInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "title": info.title,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "message_count": info.message_count,
        "provider": info.provider,
        "model": info.model,
    }


def _usage(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def _message(message: Message) -> dict[str, Any]:
    return {
        "role": message.role.value,
        "content": message.content,
        "usage": _usage(message.usage),
        "stopped": message.stopped,
        "created_at": message.created_at,
    }


@conversations.get("")
@responds(ConversationListResponse, *READ_ERRORS)
async def list_conversations() -> Response:
    """This browser's conversations, most recent first."""
    web = web_state()
    session = current_session()
    infos = await web.supervisor.list_conversations(session.id)
    for info in infos:
        session.remember_owned(info.id)
    return json_response({"ok": True, "conversations": [_conversation(i) for i in infos]})


@conversations.post("")
@body(CreateConversationBody)
@responds(ConversationResponse, *WRITE_ERRORS)
async def create_conversation() -> Response:
    """Start a new conversation; it becomes the current one."""
    data = await parse_body(CreateConversationBody)
    web = web_state()
    session = current_session()
    info = await web.supervisor.create_conversation(
        owner=session.id, config=session.connection, title=(data.title or "").strip()
    )
    await make_current(web, session, info.id)
    return json_response({"ok": True, "conversation": _conversation(info)})


@conversations.post("/import")
@body(ExportDocument)
@responds(ConversationResponse, *WRITE_ERRORS)
async def import_conversation() -> Response:
    """Create a conversation from a JSON export."""
    await parse_body(ExportDocument)  # the documented shape; the export module reads it
    try:
        export = from_json(await request.get_data())
    except ExportFormatError as exc:
        raise ApiError(422, "validation_error", f"Not a conversation export: {exc}.") from None
    web = web_state()
    session = current_session()
    info = export.info("", owner=session.id)
    info = await web.supervisor.create_conversation(
        owner=session.id, config=session.connection, title=info.title, messages=export.messages
    )
    session.remember_owned(info.id)
    return json_response({"ok": True, "conversation": _conversation(info)})


@conversations.get("/<conversation:conversation_id>")
@responds(ConversationDetailResponse, *READ_ERRORS, 404)
async def get_conversation(conversation_id: str) -> Response:
    """A conversation and its messages."""
    web = web_state()
    info = await owned_conversation(web, current_session(), conversation_id)
    messages = await web.supervisor.history(conversation_id)
    return json_response(
        {
            "ok": True,
            "conversation": _conversation(info),
            "messages": [_message(m) for m in messages],
        }
    )


@conversations.patch("/<conversation:conversation_id>")
@body(RenameBody)
@responds(ConversationResponse, *WRITE_ERRORS, 404)
async def rename_conversation(conversation_id: str) -> Response:
    """Rename a conversation."""
    data = await parse_body(RenameBody)
    web = web_state()
    await check_owned(web, current_session(), conversation_id)
    info = await web.supervisor.rename(conversation_id, data.title.strip())
    return json_response({"ok": True, "conversation": _conversation(info)})


@conversations.delete("/<conversation:conversation_id>")
@responds(OkResponse, 401, 403, 404, 413, 500, 503)
async def delete_conversation(conversation_id: str) -> Response:
    """Delete a conversation (stopping its reply, if one is running)."""
    web = web_state()
    session = current_session()
    await check_owned(web, session, conversation_id)
    await web.supervisor.delete(conversation_id)
    session.forget_owned(conversation_id)
    if session.current_conversation == conversation_id:
        await make_current(web, session, None)
    return json_response({"ok": True})


@conversations.get("/<conversation:conversation_id>/export")
@query(ExportQuery)
@responds(ExportDocument, *READ_ERRORS, 404, 422)
@media(200, {"text/markdown": {"schema": {"type": "string"}}}, replace=False)
async def export_conversation(conversation_id: str) -> Response:
    """Download a conversation as Markdown or as JSON (which can be imported again)."""
    options = parse_query(ExportQuery)
    web = web_state()
    info = await owned_conversation(web, current_session(), conversation_id)
    messages = await web.supervisor.history(conversation_id)
    name = _filename(info.title)
    if options.format == "json":
        content = to_json(ConversationExport.of(info, messages))
        content_type, extension = "application/json", "json"
    else:
        content = to_markdown(info, messages)
        content_type, extension = "text/markdown; charset=utf-8", "md"
    return Response(
        content,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{name}.{extension}"'},
    )


def _filename(title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:60].rstrip("-")
    return slug or "conversation"
