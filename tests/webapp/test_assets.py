"""The browser UI's static files."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.webapp.assets import find_web_root

from .conftest import Web

pytestmark = pytest.mark.anyio

WEB = Path(__file__).resolve().parents[2] / "web"


def test_the_checkout_web_folder_is_found() -> None:
    root = find_web_root()
    assert root is not None
    assert root.resolve() == WEB.resolve()


async def test_index_is_served_at_the_root(web: Web) -> None:
    response = await web.client().get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-cache"
    assert await response.get_data() == (WEB / "index.html").read_bytes()


async def test_scripts_are_served_as_javascript(web: Web) -> None:
    response = await web.client().get("/app.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["Content-Type"]
    assert await response.get_data() == (WEB / "app.js").read_bytes()


async def test_conditional_requests(web: Web) -> None:
    client = web.client()
    first = await client.get("/app.js")
    etag = first.headers.get("ETag")
    assert etag
    again = await client.get("/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/vendor/../../README.md", "/.env", "/missing.js"],
)
async def test_nothing_outside_the_folder(web: Web, path: str) -> None:
    response = await web.client().get(path)
    assert response.status_code == 404
    assert (await response.get_json())["code"] == "not_found"


async def test_assets_are_not_in_the_api_document(web: Web) -> None:
    document = await (await web.client().get("/openapi.json")).get_json()
    assert all(path.startswith("/api/") for path in document["paths"])
