"""Serves the browser UI: the static files of the top-level ``web/`` folder.

A wheel ships ``web/`` as ``chatbot/_web`` (hatch ``force-include``), found with
:mod:`importlib.resources`; a source checkout serves the repository's ``web/`` next
to the package. There is no build step: what is in the folder is what the browser
gets. Files are revalidated on each load (``no-cache`` + ETag), so an upgrade is
picked up at once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart.blueprints import BlueprintSetupState
from quart_schema import hide
from werkzeug.exceptions import NotFound
from werkzeug.routing import PathConverter

__all__ = ["assets", "find_web_root"]

assets = Blueprint("assets", __name__)


class _AssetPath(PathConverter):
    """A path outside ``/api/``, so the API's 404s and ``Allow`` headers stay its own."""

    regex = r"(?!api(?:/|$))[^/].*?"


@assets.record_once
def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["asset"] = _AssetPath


def find_web_root() -> Path | None:
    """The folder holding ``index.html``: the installed package's, else the checkout's."""
    packaged = resources.files("chatbot").joinpath("_web")
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent.parent / "web"
    if checkout.is_dir():
        return checkout
    return None


_ROOT = find_web_root()


async def _send(filename: str) -> Response:
    if _ROOT is None or filename.startswith(".") or "/." in filename:
        raise NotFound()
    response = await send_from_directory(_ROOT, filename)
    response.headers["Cache-Control"] = "no-cache"
    return response


@assets.get("/")
@hide
async def index() -> Response:
    return await _send("index.html")


@assets.get("/<asset:filename>")
@hide
async def static_file(filename: str) -> Response:
    return await _send(filename)
