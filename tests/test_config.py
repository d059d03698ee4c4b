"""Settings from the environment and .env files; one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot import ConfigError, ProviderConfig, Settings, UnknownProvider
from chatbot._config import normalize_base_url, provider_from_env


def test_defaults_without_any_key_leave_the_provider_unconfigured() -> None:
    settings = Settings.from_env({})
    assert settings.provider is None
    assert settings.provider_error is not None
    assert "ANTHROPIC_API_KEY" in str(settings.provider_error)
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.store_url.endswith("data/chatbot.db")


@pytest.mark.parametrize(
    ("env", "provider", "model", "base_url"),
    [
        ({"ANTHROPIC_API_KEY": "k"}, "claude", "claude-sonnet-4-20250514", "https://api.anthropic.com"),
        ({"PROVIDER": "anthropic", "API_KEY": "k"}, "claude", "claude-sonnet-4-20250514", "https://api.anthropic.com"),
        ({"PROVIDER": "openai", "OPENAI_API_KEY": "k"}, "openai", "gpt-4o", "https://api.openai.com"),
        ({"PROVIDER": "ollama"}, "ollama", "llama3.2", "http://localhost:11434"),
        ({"PROVIDER": "OpenRouter", "OPENROUTER_API_KEY": "k"}, "openrouter", "anthropic/claude-sonnet-4", "https://openrouter.ai/api"),
        # The original's documented OpenRouter recipe: the OpenAI provider with another base URL.
        ({"PROVIDER": "openai", "OPENAI_API_KEY": "sk-or-x", "BASE_URL": "https://openrouter.ai/api/v1/", "MODEL": "anthropic/claude-sonnet-4"}, "openai", "anthropic/claude-sonnet-4", "https://openrouter.ai/api"),
    ],
)
def test_provider_from_env(env: dict[str, str], provider: str, model: str, base_url: str) -> None:
    config = provider_from_env(env)
    assert (config.provider, config.model, config.base_url) == (provider, model, base_url)


@pytest.mark.parametrize("url", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"])
def test_base_url_accepts_trailing_slash_and_v1(url: str) -> None:
    assert normalize_base_url(url) == "http://h:1"


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"PROVIDER": "gemini"}, "PROVIDER", "claude, openai, ollama, openrouter"),
        ({"PROVIDER": "openai"}, "OPENAI_API_KEY", "set OPENAI_API_KEY"),
        ({"PROVIDER": "ollama", "MAX_TOKENS": "abc"}, "MAX_TOKENS", "whole number"),
        ({"PROVIDER": "ollama", "BASE_URL": "localhost:11434"}, "BASE_URL", "http(s) URL"),
    ],
)
def test_bad_provider_values_name_the_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        provider_from_env(env)
    assert info.value.variable == variable
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_server_values_raise() -> None:
    with pytest.raises(ConfigError, match="PORT must be"):
        Settings.from_env({"PORT": "eighty"})


def test_process_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("PROVIDER=ollama\nMODEL=from-file\nPORT=9000\n")
    settings = Settings.from_env({"CHATBOT_ENV_FILE": str(env_file), "MODEL": "from-env"})
    assert settings.provider is not None
    assert settings.provider.model == "from-env"
    assert settings.port == 9000


def test_dot_env_in_the_current_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PROVIDER=ollama\nMODEL=local\n")
    settings = Settings.from_env({})
    assert settings.provider is not None and settings.provider.model == "local"


def test_a_missing_env_file_is_reported() -> None:
    with pytest.raises(ConfigError, match="CHATBOT_ENV_FILE"):
        Settings.from_env({"CHATBOT_ENV_FILE": "/nonexistent/.env"})


def test_api_keys_never_show_in_repr() -> None:
    config = ProviderConfig(provider="openai", api_key="sk-secret-canary")
    settings = Settings(provider=config, secret_key="fernet-canary", auth_token="token-canary")
    for text in (repr(config), repr(settings), str(config)):
        assert "canary" not in text


def test_provider_config_validates() -> None:
    with pytest.raises(UnknownProvider):
        ProviderConfig(provider="nope")
    with pytest.raises(ConfigError, match="needs an API key"):
        ProviderConfig(provider="claude")
    config = ProviderConfig(provider="ollama", base_url=None, model="")
    assert config.model == "llama3.2" and config.base_url == "http://localhost:11434"


def test_env_example_documents_every_variable() -> None:
    """Every variable the settings read appears in .env.example."""
    import re

    import chatbot._config as config_module
    from chatbot.providers._registry import provider_specs

    source = Path(config_module.__file__).read_text()
    read = set(re.findall(r'\.(?:text|integer|number|listing)\(\s*"([A-Z_]+)"', source))
    read |= {spec.key_env for spec in provider_specs() if spec.key_env} | {"CHATBOT_ENV_FILE"}
    assert {"PROVIDER", "MAX_TOKENS", "PORT", "CHATBOT_AUTH_TOKEN"} <= read
    example = (Path(__file__).parents[1] / ".env.example").read_text().splitlines()
    documented = {
        match.group(1) for line in example if (match := re.match(r"#? ?([A-Z_]+)=", line))
    }
    assert read - documented == set()
