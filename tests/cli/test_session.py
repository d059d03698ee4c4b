"""Which connection ``--provider`` / ``/provider`` and the other flags produce."""

from __future__ import annotations

import pytest

from chatbot import ConfigError, ProviderConfig, UnknownProvider
from chatbot.cli.session import Overrides, provider_config, same_provider

ENV = {
    "PROVIDER": "openai",
    "OPENAI_API_KEY": "sk-openai",
    "ANTHROPIC_API_KEY": "sk-ant",
    "MODEL": "gpt-4o-mini",
    "BASE_URL": "http://gateway.test/v1",
    "MAX_TOKENS": "99",
}


def test_without_a_name_it_is_the_environments_connection() -> None:
    config = provider_config(ENV)
    assert (config.provider, config.model, config.base_url) == (
        "openai",
        "gpt-4o-mini",
        "http://gateway.test",
    )
    assert config.api_key == "sk-openai"


def test_the_same_provider_keeps_model_and_base_url() -> None:
    config = provider_config(ENV, "OpenAI")
    assert (config.model, config.base_url) == ("gpt-4o-mini", "http://gateway.test")


def test_another_provider_takes_its_key_and_defaults() -> None:
    config = provider_config(ENV, "anthropic")
    assert config.provider == "claude"
    assert config.api_key == "sk-ant"
    assert (config.model, config.base_url) == (
        "claude-sonnet-4-20250514",
        "https://api.anthropic.com",
    )
    assert config.max_tokens == 99  # not provider-specific: kept


def test_without_provider_in_the_environment_model_and_base_url_apply() -> None:
    env = {"BASE_URL": "http://local.test:8080", "MODEL": "m"}
    config = provider_config(env, "ollama")
    assert (config.provider, config.model, config.base_url) == (
        "ollama",
        "m",
        "http://local.test:8080",
    )


def test_another_provider_without_its_key_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match="PROVIDER=openrouter needs an API key: set OPENROUTER_API_KEY"
    ):
        provider_config(ENV, "openrouter")


def test_an_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProvider, match="choose one of claude, openai, ollama, openrouter"):
        provider_config(ENV, "gemini")


def test_overrides_apply_only_what_was_given() -> None:
    config = ProviderConfig(provider="ollama")
    assert Overrides().apply(config) is config
    changed = Overrides(model="qwen", system_prompt="", base_url="http://h:1/v1/").apply(config)
    assert (changed.model, changed.system_prompt, changed.base_url) == ("qwen", "", "http://h:1")
    with pytest.raises(ConfigError, match="not an http") as raised:
        Overrides(base_url="ftp://nope").apply(config)
    assert raised.value.variable == "--base-url"


def test_same_provider_understands_aliases_and_unknown_names() -> None:
    config = ProviderConfig(provider="claude", api_key="k")
    assert same_provider("anthropic", config)
    assert not same_provider("openai", config)
    assert not same_provider("retired-provider", config)
    assert not same_provider(None, config)
