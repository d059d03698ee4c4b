"""The JSON API under ``/api``: parse the request, call the supervisor, format the answer.

This module has the connection and turn routes and what every API request goes
through; the conversation routes are in :mod:`.conversations`. Every route works on
behalf of the browser session found by :func:`before_api_request` (cookie,
cross-site check, access token). Conversations belong to the session that created
them; any other id is answered with 404, never 403, so ids cannot be probed. The
routes hold no conversation state of their own: the supervisor's actors do.
"""

from __future__ import annotations

import json
from typing import Any, Final, final

import attrs
from quart import Blueprint, Response, current_app, g, request

from chatbot._config import DEFAULT_SYSTEM_PROMPT, ProviderConfig, Settings
from chatbot._errors import NotConnected, UnknownConversation
from chatbot._supervisor import Supervisor
from chatbot.providers._registry import provider_specs
from chatbot.store import ConversationInfo

from .errors import ApiError, body_too_large_message, json_response
from .schemas import (
    EVENT_STREAM_CONTENT,
    READ_ERRORS,
    WRITE_ERRORS,
    ChatBody,
    ChatResponse,
    ConnectBody,
    ConnectResponse,
    LoginBody,
    ModelsResponse,
    OkResponse,
    ProvidersResponse,
    StatusResponse,
    StopBody,
    StopResponse,
    body,
    media,
    parse_body,
    responds,
)
from .security import AccessControl, BaseUrlPolicy, TokenBucket, check_same_origin
from .sessions import (
    COOKIE_MAX_AGE,
    COOKIE_NAME,
    LOGIN_COOKIE_NAME,
    BrowserSession,
    SessionManager,
)
from .sse import EVENT_STREAM_HEADERS, Prefixed, TurnTracker, reply_body, run_turn, stream_turn

__all__ = [
    "WebState",
    "after_api_request",
    "api",
    "before_api_request",
    "check_owned",
    "current_session",
    "make_current",
    "owned_conversation",
    "set_cookie",
    "web_state",
]

api = Blueprint("api", __name__, url_prefix="/api")

_PUBLIC: Final = frozenset({"api.status", "api.login"})
_ID_MAX: Final = 200


@final
@attrs.define(eq=False, kw_only=True)
class WebState:
    """What the routes share: built once by ``create_app``."""

    supervisor: Supervisor
    settings: Settings
    sessions: SessionManager
    base_urls: BaseUrlPolicy
    access: AccessControl
    turns: TurnTracker = attrs.field(factory=TurnTracker)
    login_failures: TokenBucket = attrs.field(factory=lambda: TokenBucket(30.0, 10))
    providers_body: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        providers = [
            {
                "name": spec.name,
                "label": spec.label,
                "default_model": spec.default_model,
                "default_base_url": spec.default_base_url,
                "needs_key": spec.needs_key,
            }
            for spec in provider_specs()
        ]
        self.providers_body = json.dumps({"ok": True, "providers": providers}).encode()

    def connection(self, session: BrowserSession) -> ProviderConfig | None:
        """The session's own connection, else the server-configured provider."""
        return session.connection or self.settings.provider


def web_state() -> WebState:
    state: WebState = current_app.extensions["chatbot"]
    return state


def current_session() -> BrowserSession:
    session: BrowserSession = g.session
    return session


# -- every request -----------------------------------------------------------------


@api.before_request
async def before_api_request() -> None:
    """Size check, cross-site check, session, access token: before any API route.

    Raises:
        ApiError: 413 body too large, 403 cross-site, 401 access token needed.
        StoreError: the session could not be loaded.
    """
    web = web_state()
    length = request.content_length
    if length is not None and length > web.settings.limits.max_body_bytes:
        raise ApiError(413, "limit_exceeded", body_too_large_message(web.settings.limits.max_body_bytes))
    cookies = request.cookies
    cookie = cookies.get(COOKIE_NAME)
    if cookie is not None:
        headers = request.headers
        check_same_origin(
            request.method,
            request.host,
            headers.get("Origin"),
            headers.get("Referer"),
            headers.get("Sec-Fetch-Site"),
        )
    session = await web.sessions.get(cookie)
    g.session = session
    authenticated = not web.access.enabled or (
        web.access.bearer_ok(request.headers.get("Authorization"))
        or web.access.proof_ok(session.id, cookies.get(LOGIN_COOKIE_NAME))
    )
    g.authenticated = authenticated
    if not authenticated and request.endpoint not in _PUBLIC:
        raise AccessControl.required()


@api.after_request
async def after_api_request(response: Response) -> Response:
    """Send a new session's cookie; API answers are never cached."""
    session: BrowserSession | None = g.get("session")
    if session is not None and session.issued:
        set_cookie(response, COOKIE_NAME, session.id)
        session.issued = False
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


def set_cookie(response: Response, name: str, value: str) -> None:
    """An HttpOnly, SameSite=Lax cookie for the whole site; Secure over https."""
    response.set_cookie(
        name,
        value,
        max_age=COOKIE_MAX_AGE,
        path="/",
        secure=request.scheme == "https",
        httponly=True,
        samesite="Lax",
    )


# -- helpers -----------------------------------------------------------------------


def _not_found(conversation_id: str) -> UnknownConversation:
    return UnknownConversation("No such conversation.", conversation_id=conversation_id)


async def owned_conversation(
    web: WebState, session: BrowserSession, conversation_id: str
) -> ConversationInfo:
    """The conversation, if this session owns it.

    Raises:
        UnknownConversation: it does not exist, or another session owns it (404 both).
    """
    if len(conversation_id) > _ID_MAX:
        raise _not_found(conversation_id)
    info = await web.supervisor.conversation(conversation_id)
    if info.owner != session.id:
        raise _not_found(conversation_id)
    session.remember_owned(conversation_id)
    return info


async def check_owned(web: WebState, session: BrowserSession, conversation_id: str) -> None:
    """Like :func:`owned_conversation`, without a store read for ids already known to be ours.

    Raises:
        UnknownConversation: not this session's.
    """
    if conversation_id not in session.owned:
        await owned_conversation(web, session, conversation_id)


def _not_connected() -> NotConnected:
    return NotConnected("No model provider is connected: connect one first.")


async def make_current(
    web: WebState, session: BrowserSession, conversation_id: str | None
) -> None:
    """Make a conversation (known to be the session's) current; saved only when it changes.

    Raises:
        StoreError: the session could not be saved.
    """
    if conversation_id is not None:
        session.remember_owned(conversation_id)
    if session.current_conversation != conversation_id:
        session.current_conversation = conversation_id
        await web.sessions.save(session)


async def _prepare_turn(
    web: WebState, session: BrowserSession, data: ChatBody
) -> tuple[str, ProviderConfig | None]:
    """Checks before a turn, cheapest first; returns the conversation and the config to use.

    Raises:
        ShuttingDown, LimitExceeded (rate, length), NotConnected, UnknownConversation.
    """
    web.turns.check_open()
    limits = web.settings.limits
    if limits.rate_limit_per_minute > 0:
        if session.bucket is None:
            session.bucket = TokenBucket(limits.rate_limit_per_minute, limits.rate_limit_burst)
        session.bucket.take()
    web.supervisor.limits.check_message(data.message)
    if web.connection(session) is None:
        raise _not_connected()
    conversation_id = data.conversation_id or session.current_conversation
    if conversation_id is None:
        info = await web.supervisor.create_conversation(owner=session.id, config=session.connection)
        conversation_id = info.id
    else:
        await check_owned(web, session, conversation_id)
    await make_current(web, session, conversation_id)
    return conversation_id, session.connection


# -- status and connection ---------------------------------------------------------


@api.get("/status")
@responds(StatusResponse, 413, 500, 503)
async def status() -> Response:
    """Whether this browser is connected, to what, and its current conversation."""
    web = web_state()
    session = current_session()
    connection = web.connection(session)
    error = web.settings.provider_error
    return json_response(
        {
            "ok": True,
            "connected": connection is not None,
            "provider": connection.provider if connection else None,
            "model": connection.model if connection else None,
            "provider_error": str(error) if error is not None else None,
            "conversation_id": session.current_conversation,
            "auth_required": not g.authenticated,
        }
    )


@api.get("/providers")
@responds(ProvidersResponse, *READ_ERRORS)
async def providers() -> Response:
    """The providers one can connect to, with their defaults."""
    return Response(web_state().providers_body, content_type="application/json")


@api.post("/connect")
@body(ConnectBody)
@responds(ConnectResponse, *WRITE_ERRORS)
async def connect() -> Response:
    """Connect this browser to a provider and start a fresh conversation.

    The API key stays on the server; connecting again switches provider.
    """
    data = await parse_body(ConnectBody)
    web = web_state()
    session = current_session()
    settings: dict[str, Any] = {
        "provider": data.provider,
        "model": data.model.strip(),
        "api_key": data.api_key,
        "base_url": data.base_url.strip() if data.base_url and data.base_url.strip() else None,
        "system_prompt": (
            data.system_prompt
            if data.system_prompt is not None and data.system_prompt.strip()
            else DEFAULT_SYSTEM_PROMPT
        ),
    }
    if data.max_tokens is not None:
        settings["max_tokens"] = data.max_tokens
    config = ProviderConfig(**settings)
    web.base_urls.check(config.base_url)
    info = await web.supervisor.create_conversation(owner=session.id, config=config)
    session.connection = config
    session.current_conversation = info.id
    session.remember_owned(info.id)
    await web.sessions.save(session)
    return json_response(
        {"ok": True, "provider": config.provider, "model": config.model, "conversation_id": info.id}
    )


@api.get("/models")
@responds(ModelsResponse, *READ_ERRORS, 409, 429, 502, 504)
async def models() -> Response:
    """The models the connected provider offers."""
    web = web_state()
    connection = web.connection(current_session())
    if connection is None:
        raise _not_connected()
    names = await web.supervisor.list_models(connection)
    return json_response({"ok": True, "models": names})


@api.post("/login")
@body(LoginBody)
@responds(OkResponse, *WRITE_ERRORS, 429)
async def login() -> Response:
    """Log this browser in with the server's access token (when one is set)."""
    data = await parse_body(LoginBody)
    web = web_state()
    if not web.access.enabled:
        return json_response({"ok": True})
    web.login_failures.check()
    if not web.access.token_matches(data.token):
        web.login_failures.take()
        raise ApiError(401, "auth_required", "That access token is not valid.")
    response = json_response({"ok": True})
    set_cookie(response, LOGIN_COOKIE_NAME, web.access.session_proof(current_session().id))
    return response


# -- turns -------------------------------------------------------------------------


@api.post("/chat")
@body(ChatBody)
@responds(ChatResponse, *WRITE_ERRORS, 404, 409, 429, 502, 504)
async def chat() -> Response:
    """Send a message and wait for the whole reply."""
    data = await parse_body(ChatBody)
    web = web_state()
    session = current_session()
    conversation_id, config = await _prepare_turn(web, session, data)
    reply = await run_turn(
        web.supervisor, web.turns, conversation_id, data.message, config=config, owner=session.id
    )
    return json_response({"ok": True, **reply_body(reply, conversation_id)})


@api.post("/chat/stream")
@body(ChatBody)
@responds(ChatResponse, *WRITE_ERRORS, 404, 409, 429, 502, 504)
@media(200, EVENT_STREAM_CONTENT, replace=True)
async def chat_stream() -> Response:
    """Send a message and stream the reply as server-sent events.

    Events: ``delta`` {text}, then ``done`` {reply, usage, stopped, conversation_id}
    or ``error`` {error, code}. Failures before the first token are JSON errors.
    """
    data = await parse_body(ChatBody)
    web = web_state()
    session = current_session()
    conversation_id, config = await _prepare_turn(web, session, data)
    events = stream_turn(
        web.supervisor, web.turns, conversation_id, data.message, config=config, owner=session.id
    )
    first = await events.__anext__()
    response = Response(
        Prefixed(first, events),
        status=200,
        content_type="text/event-stream",
        headers=EVENT_STREAM_HEADERS,
    )
    response.timeout = None
    return response


@api.post("/stop")
@body(StopBody)
@responds(StopResponse, *WRITE_ERRORS, 404)
async def stop() -> Response:
    """Stop the running reply; the text streamed so far is kept, marked as stopped."""
    data = await parse_body(StopBody)
    web = web_state()
    session = current_session()
    conversation_id = data.conversation_id or session.current_conversation
    if conversation_id is None:
        return json_response({"ok": True, "stopped": False})
    await check_owned(web, session, conversation_id)
    stopped = await web.supervisor.cancel(conversation_id)
    return json_response({"ok": True, "stopped": stopped})
