"""Provider names, aliases, defaults and factories.

This is the only module that compares provider-name strings. Everything else asks a
:class:`ProviderSpec` (``needs_key``, ``default_model``, ...) or the provider object.
OpenRouter and Ollama reuse the OpenAI-compatible adapter with other defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .._errors import UnknownProvider

if TYPE_CHECKING:
    import httpx

    from .._config import ProviderConfig
    from ._base import Provider

__all__ = ["ProviderSpec", "create_provider", "lookup_provider", "provider_specs"]

Factory = Callable[["ProviderConfig", "httpx.AsyncClient"], "Provider"]


@attrs.frozen(kw_only=True)
class ProviderSpec:
    """What the rest of the program may know about a provider without naming it.

    ``gen_ai_system`` is the OpenTelemetry GenAI name of the API the provider speaks.
    """

    name: str
    label: str
    default_model: str
    default_base_url: str
    needs_key: bool
    key_env: str
    gen_ai_system: str
    aliases: tuple[str, ...] = ()
    factory: Factory = attrs.field(repr=False, eq=False)


def _anthropic(config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    from .anthropic import AnthropicProvider

    return AnthropicProvider(config=config, client=client)


def _openai_compat(config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    from .openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(config=config, client=client)


def _ollama(config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    from .ollama import OllamaProvider

    return OllamaProvider(config=config, client=client)


_SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        name="claude",
        gen_ai_system="anthropic",
        label="Claude (Anthropic)",
        aliases=("anthropic",),
        default_model="claude-sonnet-4-20250514",
        default_base_url="https://api.anthropic.com",
        needs_key=True,
        key_env="ANTHROPIC_API_KEY",
        factory=_anthropic,
    ),
    ProviderSpec(
        name="openai",
        gen_ai_system="openai",
        label="OpenAI",
        default_model="gpt-4o",
        default_base_url="https://api.openai.com",
        needs_key=True,
        key_env="OPENAI_API_KEY",
        factory=_openai_compat,
    ),
    ProviderSpec(
        name="ollama",
        gen_ai_system="ollama",
        label="Ollama (local)",
        default_model="llama3.2",
        default_base_url="http://localhost:11434",
        needs_key=False,
        key_env="OLLAMA_API_KEY",
        factory=_ollama,
    ),
    ProviderSpec(
        name="openrouter",
        gen_ai_system="openrouter",
        label="OpenRouter",
        default_model="anthropic/claude-sonnet-4",
        default_base_url="https://openrouter.ai/api",
        needs_key=True,
        key_env="OPENROUTER_API_KEY",
        factory=_openai_compat,
    ),
)

_BY_NAME: dict[str, ProviderSpec] = {
    key: spec for spec in _SPECS for key in (spec.name, *spec.aliases)
}


def provider_specs() -> tuple[ProviderSpec, ...]:
    """Every registered provider, in display order."""
    return _SPECS


def lookup_provider(name: str, *, variable: str | None = None) -> ProviderSpec:
    """The spec for a provider name or alias (case-insensitive).

    Raises:
        UnknownProvider: listing the valid names.
    """
    spec = _BY_NAME.get(name.strip().lower())
    if spec is None:
        raise UnknownProvider(name, tuple(s.name for s in _SPECS), variable=variable)
    return spec


def create_provider(config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    """Build the adapter for ``config``, sharing the supervisor's pooled ``client``."""
    return config.spec.factory(config, client)
