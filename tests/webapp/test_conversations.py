"""The conversation routes: list, create, read, rename, delete, export and import."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatbot import Usage
from chatbot.providers import StreamEnd

from .conftest import Web

pytestmark = pytest.mark.anyio


async def _json(response: Any) -> Any:
    return json.loads(await response.get_data(as_text=True))


async def test_conversation_lifecycle(web: Web) -> None:
    client = await web.connected_client()
    created = await _json(await client.post("/api/conversations", json={"title": " Plans "}))
    conversation = created["conversation"]
    assert conversation["title"] == "Plans"
    assert set(conversation) == {
        "id", "title", "created_at", "updated_at", "message_count", "provider", "model",
    }
    cid = conversation["id"]
    assert (await _json(await client.get("/api/status")))["conversation_id"] == cid

    web.provider.enqueue("Sure.", StreamEnd(usage=Usage(5, 2)))
    await client.post("/api/chat", json={"message": "plan a trip"})
    detail = await _json(await client.get(f"/api/conversations/{cid}"))
    assert detail["conversation"]["message_count"] == 2
    assert [(m["role"], m["content"], m["stopped"]) for m in detail["messages"]] == [
        ("user", "plan a trip", False),
        ("assistant", "Sure.", False),
    ]
    assert detail["messages"][0]["usage"] is None
    assert detail["messages"][1]["usage"] == {"input_tokens": 5, "output_tokens": 2}

    renamed = await _json(await client.patch(f"/api/conversations/{cid}", json={"title": "Trip"}))
    assert renamed["conversation"]["title"] == "Trip"
    listing = await _json(await client.get("/api/conversations"))
    assert cid in [c["id"] for c in listing["conversations"]]

    assert await _json(await client.delete(f"/api/conversations/{cid}")) == {"ok": True}
    assert (await client.get(f"/api/conversations/{cid}")).status_code == 404
    assert (await _json(await client.get("/api/status")))["conversation_id"] is None
    assert (await client.delete(f"/api/conversations/{cid}")).status_code == 404


async def test_rename_validation(web: Web) -> None:
    client = await web.connected_client()
    cid = (await _json(await client.get("/api/status")))["conversation_id"]
    for body in ({"title": ""}, {"title": "   "}, {"title": "x" * 201}, {}):
        response = await client.patch(f"/api/conversations/{cid}", json=body)
        assert response.status_code == 422, body


async def test_export_markdown(web: Web) -> None:
    client = await web.connected_client()
    await client.post("/api/chat", json={"message": "Tell me *everything*"})
    cid = (await _json(await client.get("/api/status")))["conversation_id"]
    response = await client.get(f"/api/conversations/{cid}/export?format=md")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/markdown")
    assert response.headers["Content-Disposition"] == 'attachment; filename="tell-me-everything.md"'
    text = await response.get_data(as_text=True)
    assert text.startswith("# Tell me *everything*\n")
    assert "## You\n\nTell me *everything*\n" in text
    assert "## Assistant\n\nYou said: Tell me *everything*\n" in text


async def test_export_json_imports_back(web: Web) -> None:
    client = await web.connected_client(system_prompt="Be kind.")
    await client.post("/api/chat", json={"message": "first"})
    web.provider.enqueue("partial", StreamEnd())
    await client.post("/api/chat", json={"message": "second"})
    cid = (await _json(await client.get("/api/status")))["conversation_id"]
    response = await client.get(f"/api/conversations/{cid}/export?format=json")
    assert response.headers["Content-Disposition"].startswith("attachment; ")
    document = await _json(response)
    assert document["version"] == 1
    assert document["conversation"]["title"] == "first"
    assert document["conversation"]["provider"] == "openai"
    assert document["conversation"]["model"] == "gpt-test"
    assert document["conversation"]["system_prompt"] == "Be kind."
    assert len(document["messages"]) == 4

    other = web.client()
    imported = await other.post("/api/conversations/import", json=document)
    assert imported.status_code == 200
    conversation = (await _json(imported))["conversation"]
    assert conversation["id"] != cid
    assert conversation["title"] == "first"
    assert conversation["message_count"] == 4
    detail = await _json(await other.get(f"/api/conversations/{conversation['id']}"))
    strip = [{k: m[k] for k in ("role", "content", "usage", "stopped", "created_at")} for m in detail["messages"]]
    assert strip == document["messages"]


async def test_export_format_is_validated(web: Web) -> None:
    client = await web.connected_client()
    cid = (await _json(await client.get("/api/status")))["conversation_id"]
    response = await client.get(f"/api/conversations/{cid}/export?format=pdf")
    assert response.status_code == 422
    payload = await _json(response)
    assert (payload["ok"], payload["code"]) == (False, "validation_error")


@pytest.mark.parametrize(
    "document",
    [
        {"version": 2, "conversation": {}, "messages": []},
        {"version": 1, "conversation": {}, "messages": [{"role": "system", "content": "x"}]},
        {
            "version": 1,
            "conversation": {},
            "messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
        },
        {"version": 1, "conversation": {}, "messages": [{"role": "user", "content": "x", "usage": {"input_tokens": -1, "output_tokens": 0}}]},
    ],
)
async def test_import_rejects_bad_documents(web: Web, document: dict[str, Any]) -> None:
    client = web.client()
    response = await client.post("/api/conversations/import", json=document)
    assert response.status_code == 422
    assert (await _json(await client.get("/api/conversations")))["conversations"] == []


async def test_import_derives_a_title(web: Web) -> None:
    document = {
        "version": 1,
        "conversation": {},
        "messages": [{"role": "user", "content": "Where is Kyiv?"}, {"role": "assistant", "content": "Ukraine."}],
    }
    payload = await _json(await web.client().post("/api/conversations/import", json=document))
    assert payload["conversation"]["title"] == "Where is Kyiv?"


