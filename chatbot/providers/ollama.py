"""Ollama through its OpenAI-compatible ``/v1`` API.

Chat is exactly the OpenAI-compatible path (no key needed locally; if one is set it
goes out as a Bearer token, as Ollama Cloud expects). Only the model listing
differs: the installed models come from Ollama's native ``GET /api/tags``.
"""

from __future__ import annotations

from typing import Final, final

import attrs
import cattrs

from ._wire import get_json, make_converter, structure
from .openai_compat import OpenAICompatProvider

__all__ = ["OllamaProvider"]


@attrs.frozen
class _Tag:
    name: str = ""
    model: str = ""


@attrs.frozen
class _Tags:
    models: list[_Tag] | None = None


def _configure_converter() -> cattrs.Converter:
    return make_converter()


_converter: Final = _configure_converter()


@final
@attrs.frozen
class OllamaProvider(OpenAICompatProvider):
    """A local (or cloud) Ollama server; chat as OpenAI-compatible, models from tags."""

    async def list_models(self) -> list[str]:
        """Installed model names from ``GET /api/tags``.

        Raises:
            ProviderError: any subclass: unreachable server, error reply, bad body.
        """
        payload = await get_json(
            self.client,
            f"{self.config.base_url}/api/tags",
            headers=self._headers,
            provider=self.name,
            secret=self.config.api_key,
        )
        tags = structure(_converter, self.name, payload, _Tags)
        return list(dict.fromkeys(tag.name or tag.model for tag in tags.models or () if tag.name or tag.model))
