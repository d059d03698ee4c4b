"""One terminal chat: which conversation it talks in and which connection it uses.

Both the interactive loop and pipe mode are thin clients of a :class:`~chatbot.Supervisor`
with a SQLite (or PostgreSQL) store. A :class:`ChatSession` holds the little state
the terminal keeps between turns: the conversation id and the
:class:`~chatbot.ProviderConfig` passed with every turn. ``/model``, ``/system`` and
``/provider`` change that config; the actor adopts it (keeping the history) on the
next turn.

Provider switching follows one rule, for ``--provider`` and ``/provider`` alike: the
key comes from that provider's variable (or ``API_KEY``); ``MODEL`` and ``BASE_URL``
are kept only when ``PROVIDER`` is unset or names the same provider, since they were
written for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs

from chatbot._config import ProviderConfig, Settings, provider_from_env
from chatbot._errors import ConfigError, UnknownConversation, UnknownProvider
from chatbot._supervisor import Supervisor, new_conversation_id
from chatbot.providers._registry import lookup_provider
from chatbot.store import ConversationInfo, open_store

__all__ = ["ChatSession", "Overrides", "open_session", "provider_config", "same_provider"]

# How many conversations an id prefix is matched against.
_PREFIX_SCAN = 1000


def same_provider(name: str | None, config: ProviderConfig) -> bool:
    """Whether ``name`` (as stored or typed) is ``config``'s provider, aliases included."""
    if not name:
        return False
    try:
        return lookup_provider(name) == config.spec
    except UnknownProvider:
        return False


def provider_config(env: Mapping[str, str], name: str | None = None) -> ProviderConfig:
    """The connection the environment describes, optionally for another provider.

    Raises:
        UnknownProvider: ``name`` (or ``PROVIDER``) is not a known provider.
        ConfigError: the provider's key is missing or a value (``MAX_TOKENS``...) is bad.
    """
    if name is None:
        return provider_from_env(env)
    spec = lookup_provider(name, variable="--provider")
    patched = dict(env, PROVIDER=spec.name)
    current = env.get("PROVIDER", "").strip()
    if current:
        try:
            keep = lookup_provider(current) == spec
        except UnknownProvider:
            keep = False
        if not keep:
            # An empty value makes the config reader fall back to the provider's default.
            patched.update(MODEL="", BASE_URL="")
    return provider_from_env(patched)


@attrs.frozen(kw_only=True)
class Overrides:
    """Command-line flags that change the connection for one run."""

    model: str | None = None
    system_prompt: str | None = None
    base_url: str | None = None

    def apply(self, config: ProviderConfig) -> ProviderConfig:
        """``config`` with the flags given applied.

        Raises:
            ConfigError: ``--base-url`` is not an http(s) URL.
        """
        changes: dict[str, object] = {}
        if self.model:
            changes["model"] = self.model
        if self.system_prompt is not None:
            changes["system_prompt"] = self.system_prompt
        if self.base_url:
            changes["base_url"] = self.base_url
        try:
            return config.evolve(**changes) if changes else config
        except ConfigError as exc:
            raise ConfigError(str(exc), variable="--base-url") from None


@attrs.define(kw_only=True)
class ChatSession:
    """The terminal's current conversation and connection."""

    supervisor: Supervisor
    env: Mapping[str, str]
    config: ProviderConfig
    conversation_id: str = attrs.field(factory=new_conversation_id)

    async def find(self, reference: str) -> ConversationInfo:
        """The stored conversation with this id, or the only one whose id starts with it.

        Raises:
            UnknownConversation: none matches, or the prefix matches several.
            StoreError: the store failed.
        """
        reference = reference.strip()
        if not reference:
            raise UnknownConversation("Give a conversation id.")
        try:
            return await self.supervisor.conversation(reference)
        except UnknownConversation:
            pass
        listed = await self.supervisor.list_conversations(None, limit=_PREFIX_SCAN)
        matches = [info for info in listed if info.id.startswith(reference)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownConversation(
                f"{reference!r} matches {len(matches)} conversations: type more of the id.",
                conversation_id=reference,
            )
        raise UnknownConversation(f"No conversation {reference!r}.", conversation_id=reference)

    async def resume(self, reference: str) -> ConversationInfo:
        """Continue a stored conversation, with its model and system prompt if the provider matches.

        Raises:
            UnknownConversation, StoreError: see :meth:`find`.
        """
        info = await self.find(reference)
        self.conversation_id = info.id
        if same_provider(info.provider, self.config):
            self.config = self.config.evolve(
                model=info.model or self.config.model,
                system_prompt=(
                    info.system_prompt
                    if info.system_prompt is not None
                    else self.config.system_prompt
                ),
            )
        return info

    def start_new(self) -> None:
        """Talk in a fresh conversation from the next message on."""
        self.conversation_id = new_conversation_id()

    def use_provider(self, name: str) -> None:
        """Switch to another provider, keeping the current system prompt.

        Raises:
            UnknownProvider, ConfigError: see :func:`provider_config`.
        """
        config = provider_config(self.env, name)
        self.config = config.evolve(system_prompt=self.config.system_prompt)


@asynccontextmanager
async def open_session(
    settings: Settings,
    env: Mapping[str, str],
    config: ProviderConfig,
    *,
    resume: str | None = None,
    overrides: Overrides | None = None,
) -> AsyncIterator[ChatSession]:
    """Open the store and a supervisor, and start (or resume) a conversation.

    Exceptions raised in the block come out as themselves, not wrapped in the
    supervisor's task group's ``ExceptionGroup``.

    Raises:
        StoreError: the store cannot be opened.
        UnknownConversation: ``resume`` names no stored conversation.
        ConfigError: an override is invalid.
    """
    overrides = overrides or Overrides()
    failure: Exception | None = None
    async with open_store(settings.store_url) as store:
        async with Supervisor(
            store=store, default_config=config, policy=settings.policy, limits=settings.limits
        ) as supervisor:
            try:
                session = ChatSession(supervisor=supervisor, env=env, config=config)
                if resume is not None:
                    await session.resume(resume)
                session.config = overrides.apply(session.config)
                yield session
            except Exception as exc:
                failure = exc
        if failure is not None:
            raise failure
