"""The web front door: a Quart app over a running :class:`~chatbot.Supervisor`.

:func:`create_app` is a factory, not a module-level app, so tests (and embedders)
can build several apps over different supervisors. The app owns no event loop and
no task group: ``chatbot.server`` runs it under Hypercorn inside the supervisor's
``async with`` block, one process, one loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from quart import Quart, Response
from quart_schema import Info, QuartSchema

from chatbot._config import Settings
from chatbot._supervisor import Supervisor

from .api import WebState, api, web_state
from .assets import assets
from .conversations import conversations
from .errors import register_error_handlers
from .schemas import OpenAPI
from .security import SECURITY_HEADERS, AccessControl, BaseUrlPolicy
from .sessions import SessionManager

if TYPE_CHECKING:
    from chatbot.store.crypto import ConnectionCipher

__all__ = ["WebState", "begin_shutdown", "create_app", "web_state"]


class TelemetryHook(Protocol):
    """What ``create_app`` needs of ``chatbot.telemetry.Telemetry``."""

    def install(self, app: Quart, supervisor: Supervisor) -> None: ...


def _cipher(settings: Settings) -> ConnectionCipher | None:
    if not settings.secret_key:
        return None
    from chatbot.store.crypto import ConnectionCipher

    return ConnectionCipher(settings.secret_key)


def create_app(
    supervisor: Supervisor, settings: Settings, *, telemetry: TelemetryHook | None = None
) -> Quart:
    """Build the web app (API, UI assets, ``/openapi.json``) over ``supervisor``.

    The supervisor must be running (entered) while the app serves requests.

    Raises:
        ConfigError: ``CHATBOT_ALLOWED_BASE_URLS`` or ``CHATBOT_SECRET_KEY`` is invalid.
    """
    from chatbot import __version__

    app = Quart(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_body_bytes
    base_urls = BaseUrlPolicy(settings.allowed_base_urls)
    app.extensions["chatbot"] = WebState(
        supervisor=supervisor,
        settings=settings,
        sessions=SessionManager(
            supervisor.store,
            cipher=_cipher(settings),
            base_urls=base_urls,
            capacity=max(1_000, supervisor.limits.max_actors),
        ),
        base_urls=base_urls,
        access=AccessControl(settings.auth_token),
    )
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info=Info(
            title="chatbot",
            version=__version__,
            description=(
                "Chat with Claude, OpenAI, Ollama or OpenRouter models. Every error is "
                '{"ok": false, "error": "<sentence>", "code": "<code>"}. The browser session '
                "is the chatbot_session cookie."
            ),
        ),
        openapi_provider_class=OpenAPI,
    )
    # quart-schema wraps make_response to convert returned models; every route here
    # returns a ready Response, so skip that layer on the hot path.
    del app.make_response
    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(conversations)
    app.register_blueprint(assets)

    @app.after_request
    async def _security_headers(response: Response) -> Response:
        headers = response.headers
        for name, value in SECURITY_HEADERS:
            headers[name] = value
        return response

    if telemetry is not None:
        telemetry.install(app, supervisor)
    return app


async def begin_shutdown(app: Quart) -> int:
    """Refuse new turns and stop the running ones, so in-flight streams end promptly.

    Each stopped stream ends with an ``error`` event (``shutting_down``) after the actor
    saved the partial reply. Returns how many conversations were asked to stop.
    """
    state: WebState = app.extensions["chatbot"]
    return await state.turns.stop_all(state.supervisor)
