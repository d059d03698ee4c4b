"""Ollama: chat over its OpenAI-compatible /v1, models from /api/tags."""

from __future__ import annotations

import pytest

from chatbot._errors import BadUpstreamResponse, UpstreamRejected, UpstreamUnavailable
from chatbot.providers import collect
from chatbot.providers.ollama import OllamaProvider
from chatbot.providers.openai_compat import OpenAICompatProvider
from tests.fakes import Fail, FakeUpstream, Raw, Reply
from tests.providers.conftest import MakeProvider, chat_request

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def ollama_flavour(fake_upstream: FakeUpstream) -> None:
    fake_upstream.flavour = "ollama"


async def test_chat_without_a_key_sends_no_authorization(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    provider = make_provider("ollama", api_key=None, model="llama3.2")
    assert isinstance(provider, OllamaProvider)
    text, end = await collect(provider.stream(chat_request("hola", model="llama3.2")))
    assert text == "You said: hola"
    assert end.model == "llama3.2"
    assert end.usage.input_tokens == 3
    [request] = fake_upstream.requests
    assert request.path == "/v1/chat/completions"
    assert "authorization" not in request.headers
    assert request.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request.json["max_tokens"] == 256


async def test_a_configured_key_is_sent_as_bearer(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    await collect(make_provider("ollama", api_key="ollama-cloud-key").stream(chat_request()))
    assert fake_upstream.requests[0].headers["authorization"] == "Bearer ollama-cloud-key"


async def test_split_stream(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(text="ünïcödé ✓", chunks=4, split=1, line_ending="\r\n"))
    text, _ = await collect(make_provider("ollama", api_key=None).stream(chat_request()))
    assert text == "ünïcödé ✓"


async def test_model_not_pulled(make_provider: MakeProvider) -> None:
    provider = make_provider("ollama", api_key=None)
    with pytest.raises(UpstreamRejected, match="try pulling it first") as caught:
        await collect(provider.stream(chat_request(model="mistral")))
    assert caught.value.status == 404


async def test_queue_full_is_unavailable(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Fail(status=503, message="server busy, please try again"))
    with pytest.raises(UpstreamUnavailable, match="server busy"):
        await collect(make_provider("ollama", api_key=None).stream(chat_request()))


async def test_list_models_from_tags(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.models = ("llama3.2", "qwen2.5:7b")
    assert await make_provider("ollama", api_key=None).list_models() == [
        "llama3.2:latest",
        "qwen2.5:7b",
    ]
    [request] = fake_upstream.requests
    assert (request.method, request.path) == ("GET", "/api/tags")


async def test_list_models_with_nothing_installed(
    make_provider: MakeProvider, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.models = ()
    provider = make_provider("ollama", api_key=None)
    assert await provider.list_models() == []
    # Ollama's /v1/models says ``"data": null`` then; the OpenAI-compatible path copes.
    compat = OpenAICompatProvider(config=provider.config, client=provider.client)  # type: ignore[attr-defined]
    assert await compat.list_models() == []
    assert fake_upstream.requests[-1].path == "/v1/models"


async def test_tags_errors(make_provider: MakeProvider, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Raw(body=[b'{"models": 5}'], content_type="application/json"))
    with pytest.raises(BadUpstreamResponse):
        await make_provider("ollama", api_key=None).list_models()
    fake_upstream.enqueue(Fail(status=500, message="boom"))
    with pytest.raises(UpstreamUnavailable, match="boom"):
        await make_provider("ollama", api_key=None).list_models()
