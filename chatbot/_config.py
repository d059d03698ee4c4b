"""Configuration: a provider connection, upstream policy, limits and server settings.

Everything enters through :meth:`Settings.from_env`, which reads the process
environment and a ``.env`` file (the process environment wins). Bad values become a
:class:`~chatbot.ConfigError` whose message names the variable and the fix, so the
command line can print one line and exit 2.

A missing API key is not fatal for the web server (users can connect from the UI),
so :class:`Settings` keeps it apart: ``provider`` is ``None`` and ``provider_error``
holds the reason. Every other bad value is raised.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import attrs
from dotenv import dotenv_values

from ._errors import ConfigError, LimitExceeded, MissingApiKey
from .providers._registry import ProviderSpec, lookup_provider

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Limits",
    "ProviderConfig",
    "Settings",
    "UpstreamPolicy",
    "normalize_base_url",
    "provider_from_env",
    "read_environment",
]

DEFAULT_SYSTEM_PROMPT = "You are a helpful, concise assistant."
DEFAULT_MAX_TOKENS = 1024

T = TypeVar("T")


def normalize_base_url(url: str) -> str:
    """Accept a base URL with or without a trailing ``/`` or ``/v1``; return it without.

    Raises:
        ConfigError: the URL is not ``http(s)://host...``.
    """
    cleaned = url.strip().rstrip("/")
    if cleaned.endswith("/v1"):
        cleaned = cleaned[: -len("/v1")].rstrip("/")
    scheme, sep, rest = cleaned.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or " " in cleaned:
        raise ConfigError(
            f"Base URL {url!r} is not an http(s) URL: use e.g. https://api.openai.com.",
            variable="BASE_URL",
        )
    return cleaned


def _canonical_provider(name: str) -> str:
    return lookup_provider(name).name


def _default_model(config: ProviderConfig) -> str:
    return config.spec.default_model


def _base_url(value: str | None, config: ProviderConfig) -> str:
    return normalize_base_url(value or config.spec.default_base_url)


def _model(value: str | None, config: ProviderConfig) -> str:
    model = (value or "").strip() or config.spec.default_model
    return model


def _api_key(value: str | None) -> str | None:
    return (value or "").strip() or None


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """How to reach one model: provider, model, key, endpoint and generation settings.

    Omitted fields take the provider's defaults (see ``GET /api/providers``). The API
    key never appears in ``repr()``, logs or tracebacks.

    Raises:
        UnknownProvider: ``provider`` is not a registered name or alias.
        ConfigError: the provider needs a key and none was given, or a value is invalid.
    """

    provider: str = attrs.field(converter=_canonical_provider)
    model: str = attrs.field(
        default=None, converter=attrs.Converter(_model, takes_self=True)  # type: ignore[call-overload, misc]
    )
    api_key: str | None = attrs.field(default=None, repr=False, converter=_api_key)
    base_url: str = attrs.field(
        default=None, converter=attrs.Converter(_base_url, takes_self=True)  # type: ignore[call-overload, misc]
    )
    max_tokens: int = DEFAULT_MAX_TOKENS
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __attrs_post_init__(self) -> None:
        if self.spec.needs_key and not self.api_key:
            raise MissingApiKey(
                f"{self.spec.label} needs an API key: set {self.spec.key_env} (or API_KEY).",
                variable=self.spec.key_env,
            )
        if not 1 <= self.max_tokens <= 1_000_000:
            raise ConfigError(
                "max_tokens must be a whole number from 1 to 1000000.", variable="MAX_TOKENS"
            )

    @property
    def spec(self) -> ProviderSpec:
        return lookup_provider(self.provider)

    def evolve(self, **changes: object) -> ProviderConfig:
        """A copy with some fields changed (for ``/model``, ``/system`` and the like)."""
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class UpstreamPolicy:
    """Timeouts (seconds) and retries for upstream calls; each timeout has one owner.

    ``connect_timeout`` bounds opening the connection, ``first_token_timeout`` the wait
    for the first streamed token, ``idle_timeout`` any gap between chunks after that,
    and ``total_timeout`` the whole turn. Retries happen only before the first token
    reached the user, on connect errors, 429 and 500/502/503/529.
    """

    connect_timeout: float = 10.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    max_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 30.0


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds that keep one user, one conversation or one upstream from hurting the rest."""

    max_body_bytes: int = 1_048_576
    max_message_chars: int = 100_000
    context_budget_tokens: int = 150_000
    max_actors: int = 10_000
    inbox_size: int = 8
    busy_timeout: float = 5.0
    idle_evict_after: float = 900.0
    rate_limit_per_minute: float = 0.0
    rate_limit_burst: int = 10

    def check_message(self, text: str) -> None:
        """Refuse a user message longer than ``max_message_chars``.

        Raises:
            LimitExceeded: naming the limit and its variable.
        """
        if len(text) > self.max_message_chars:
            raise LimitExceeded(
                f"The message is {len(text)} characters long; the limit is "
                f"{self.max_message_chars} (CHATBOT_MAX_MESSAGE_CHARS).",
                limit="message_chars",
            )


def read_environment(
    environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """The environment merged over the ``.env`` file (the environment wins).

    Raises:
        ConfigError: ``CHATBOT_ENV_FILE`` names a file that does not exist.
    """
    base = dict(os.environ if environ is None else environ)
    path = Path(env_file) if env_file else Path(base.get("CHATBOT_ENV_FILE") or ".env")
    from_file: dict[str, str] = {}
    if path.is_file():
        from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
    elif env_file or base.get("CHATBOT_ENV_FILE"):
        raise ConfigError(
            f"CHATBOT_ENV_FILE points to {str(path)!r}, which is not a file: fix the path or unset it.",
            variable="CHATBOT_ENV_FILE",
        )
    return {**from_file, **base}


class _Reader:
    """Parses typed values out of an environment mapping, naming the variable on error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str = "") -> str:
        value = self.env.get(name, "").strip()
        return value or default

    def _parse(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {raw!r}.", variable=name) from None

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not minimum <= value <= maximum:
                raise ValueError
            return value

        return self._parse(name, default, parse, f"a whole number from {minimum} to {maximum}")

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not value >= minimum or value != value or value == float("inf"):
                raise ValueError
            return value

        return self._parse(name, default, parse, f"a number of at least {minimum:g}")

    def listing(self, name: str) -> tuple[str, ...] | None:
        raw = self.env.get(name, "").strip()
        if not raw:
            return None
        return tuple(part.strip() for part in raw.replace("\n", ",").split(",") if part.strip())


def provider_from_env(env: Mapping[str, str]) -> ProviderConfig:
    """The provider connection the environment describes.

    Raises:
        ConfigError: a variable names an unknown provider, a missing key or a bad value.
    """
    read = _Reader(env)
    spec = lookup_provider(read.text("PROVIDER", "claude"), variable="PROVIDER")
    api_key = read.text(spec.key_env) or read.text("API_KEY") if spec.key_env else read.text("API_KEY")
    if spec.needs_key and not api_key:
        raise MissingApiKey(
            f"PROVIDER={spec.name} needs an API key: set {spec.key_env} (or API_KEY) in the environment or .env.",
            variable=spec.key_env,
        )
    try:
        base_url = normalize_base_url(read.text("BASE_URL", spec.default_base_url))
    except ConfigError as exc:
        raise ConfigError(f"BASE_URL: {exc}", variable="BASE_URL") from None
    return ProviderConfig(
        provider=spec.name,
        model=read.text("MODEL", spec.default_model),
        api_key=api_key or None,
        base_url=base_url,
        max_tokens=read.integer("MAX_TOKENS", DEFAULT_MAX_TOKENS, minimum=1, maximum=1_000_000),
        system_prompt=read.text("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
    )


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the server and the CLI read from the environment, validated once.

    Build it with :meth:`from_env`; the constructor takes already-parsed values.
    """

    provider: ProviderConfig | None = None
    provider_error: ConfigError | None = attrs.field(default=None, eq=False)
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    database_url: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    auth_token: str | None = attrs.field(default=None, repr=False)
    allowed_base_urls: tuple[str, ...] | None = None
    policy: UpstreamPolicy = UpstreamPolicy()
    limits: Limits = Limits()
    log_level: str = "INFO"
    log_format: str = "text"
    record_content_in_traces: bool = False

    @property
    def store_url(self) -> str:
        """Where conversations live: ``DATABASE_URL``, else SQLite in ``CHATBOT_DATA_DIR``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'chatbot.db'}"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) over a ``.env`` file.

        The file is ``env_file``, else ``$CHATBOT_ENV_FILE``, else ``./.env`` if present.

        Raises:
            ConfigError: a variable has a bad value. Only a missing API key is not
                raised: it is kept in ``provider_error``, because the web UI can
                still connect to a provider.
        """
        env = read_environment(environ, env_file)
        read = _Reader(env)
        provider: ProviderConfig | None = None
        provider_error: ConfigError | None = None
        try:
            provider = provider_from_env(env)
        except MissingApiKey as exc:
            provider_error = exc
        log_format = read.text("LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}.", variable="LOG_FORMAT")
        log_level = read.text("LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}.",
                variable="LOG_LEVEL",
            )
        database_url = read.text("DATABASE_URL") or None
        if database_url and not database_url.startswith(
            ("postgresql://", "postgres://", "sqlite://", "memory:")
        ):
            raise ConfigError(
                "DATABASE_URL must start with postgresql://, sqlite:/// or memory:.",
                variable="DATABASE_URL",
            )
        return cls(
            provider=provider,
            provider_error=provider_error,
            host=read.text("HOST", "127.0.0.1"),
            port=read.integer("PORT", 8080, minimum=0, maximum=65535),
            data_dir=Path(read.text("CHATBOT_DATA_DIR", "data")),
            database_url=database_url,
            secret_key=read.text("CHATBOT_SECRET_KEY") or None,
            auth_token=read.text("CHATBOT_AUTH_TOKEN") or None,
            allowed_base_urls=read.listing("CHATBOT_ALLOWED_BASE_URLS"),
            policy=UpstreamPolicy(
                connect_timeout=read.number("CHATBOT_CONNECT_TIMEOUT", 10.0, minimum=0.001),
                first_token_timeout=read.number("CHATBOT_FIRST_TOKEN_TIMEOUT", 60.0, minimum=0.001),
                idle_timeout=read.number("CHATBOT_IDLE_TIMEOUT", 60.0, minimum=0.001),
                total_timeout=read.number("CHATBOT_TOTAL_TIMEOUT", 600.0, minimum=0.001),
                max_attempts=read.integer("CHATBOT_RETRY_ATTEMPTS", 3, minimum=1, maximum=10),
            ),
            limits=Limits(
                max_body_bytes=read.integer("CHATBOT_MAX_BODY_BYTES", 1_048_576, minimum=1024),
                max_message_chars=read.integer("CHATBOT_MAX_MESSAGE_CHARS", 100_000, minimum=1),
                context_budget_tokens=read.integer(
                    "CHATBOT_CONTEXT_BUDGET_TOKENS", 150_000, minimum=100
                ),
                max_actors=read.integer("CHATBOT_MAX_ACTORS", 10_000, minimum=1),
                idle_evict_after=read.number("CHATBOT_ACTOR_IDLE_SECONDS", 900.0, minimum=0.01),
                rate_limit_per_minute=read.number("CHATBOT_RATE_LIMIT_PER_MINUTE", 0.0),
                rate_limit_burst=read.integer("CHATBOT_RATE_LIMIT_BURST", 10, minimum=1),
            ),
            log_level=log_level,
            log_format=log_format,
            record_content_in_traces=read.text(
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
            ).lower()
            in ("1", "true", "yes"),
        )
