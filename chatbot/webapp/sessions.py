"""Browser sessions: a random cookie id mapped to a connection and a current conversation.

Each browser gets ``chatbot_session``, 256 random bits from :mod:`secrets`, HttpOnly
and SameSite=Lax (Secure over https). Conversations are owned by the session id, and
every route checks ownership: another browser's conversation is answered with 404,
exactly like one that does not exist.

State lives in a bounded in-memory cache, so a request from a known browser costs a
dictionary look-up, no store read. A browser unseen for as long as an actor may idle
(``CHATBOT_ACTOR_IDLE_SECONDS``) leaves the cache (:meth:`SessionManager.forget_idle`),
so a busy spell's sessions do not hold memory for hours. It is written through to the store
(:class:`~chatbot.store.SessionRecord`) whenever it changes, so another instance or
a restarted server recognises the browser. The connection's API key is stored only
encrypted, with ``CHATBOT_SECRET_KEY``; without a secret the connection stays in
this process, and after a restart the browser is asked to connect again while its
conversations carry on.

An id the server never issued (or has forgotten) is not adopted: the browser gets a
fresh id, so nobody can pick a session id for someone else.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, final

import anyio
import attrs

from chatbot._config import ProviderConfig
from chatbot.store import SessionRecord, Store

from .security import BaseUrlPolicy, TokenBucket

if TYPE_CHECKING:
    from chatbot.store.crypto import ConnectionCipher

__all__ = ["COOKIE_NAME", "LOGIN_COOKIE_NAME", "BrowserSession", "SessionManager"]

COOKIE_NAME: Final = "chatbot_session"
LOGIN_COOKIE_NAME: Final = "chatbot_login"
COOKIE_MAX_AGE: Final = 90 * 24 * 3600

_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_OWNED_MAX: Final = 1024
_OWNED_TUPLE_MAX: Final = 8


def new_session_id() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


@final
@attrs.define(eq=False)
class BrowserSession:
    """One browser's state. Only the request handlers of that browser touch it."""

    id: str
    connection: ProviderConfig | None = attrs.field(default=None, repr=False)
    current_conversation: str | None = None
    created_at: float = attrs.field(factory=time.time)
    issued: bool = False  # the cookie still has to be sent
    # time.monotonic() to the second (SessionManager._clock): a float of its own would
    # add 32 bytes to every cached browser.
    last_seen: float = attrs.field(default=0.0, repr=False)
    bucket: TokenBucket | None = attrs.field(default=None, repr=False)
    # Conversation ids known to be ours. Most browsers have a handful, and an idle one
    # stays cached: a short tuple costs a fifth of a set until it outgrows it.
    owned: tuple[str, ...] | set[str] = attrs.field(default=(), repr=False)

    def remember_owned(self, conversation_id: str) -> None:
        owned = self.owned
        if conversation_id in owned:
            return
        if isinstance(owned, tuple):
            self.owned = (*owned, conversation_id) if len(owned) < _OWNED_TUPLE_MAX else {*owned, conversation_id}
            return
        if len(owned) >= _OWNED_MAX:
            owned.clear()
        owned.add(conversation_id)

    def forget_owned(self, conversation_id: str) -> None:
        if isinstance(self.owned, tuple):
            self.owned = tuple(known for known in self.owned if known != conversation_id)
        else:
            self.owned.discard(conversation_id)


@final
class SessionManager:
    """Finds, creates and saves browser sessions; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        cipher: ConnectionCipher | None,
        base_urls: BaseUrlPolicy,
        capacity: int = 10_000,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._base_urls = base_urls
        self._capacity = max(1, capacity)
        self._cache: OrderedDict[str, BrowserSession] = OrderedDict()
        self._loading: dict[str, anyio.Event] = {}
        # Sessions whose connection lives only here (no secret key): kept apart from
        # the cache so the cache's eviction never drops a connection the store lacks.
        self._connections: OrderedDict[str, ProviderConfig] = OrderedDict()
        self._tick = time.monotonic()

    @property
    def persists_connections(self) -> bool:
        return self._cipher is not None

    def __len__(self) -> int:
        return len(self._cache)

    async def get(self, cookie: str | None) -> BrowserSession:
        """The session for a cookie value, or a new one (``issued`` is then True).

        Raises:
            StoreError: the store could not be read.
        """
        if cookie is None or not _ID_PATTERN.fullmatch(cookie):
            return self._new()
        session = self._cache.get(cookie)
        if session is not None:
            self._cache.move_to_end(cookie)
            session.last_seen = self._clock()
            return session
        return await self._load(cookie)

    def forget_idle(self, idle_seconds: float) -> int:
        """Drop the cached sessions unseen for ``idle_seconds`` (to within a second);
        returns how many.

        Nothing is lost: the store has them, and a browser that comes back is loaded
        again (its connection too, from the store or from the in-process keys, which
        are kept apart). The cache is in order of use, so only its stale front is read.
        """
        horizon = time.monotonic() - idle_seconds
        forgotten = 0
        while self._cache:
            oldest = next(iter(self._cache.values()))
            if oldest.last_seen > horizon:
                break
            self._cache.popitem(last=False)
            forgotten += 1
        return forgotten

    def _clock(self) -> float:
        """Now, to the second: the sessions seen within one second share one float."""
        now = time.monotonic()
        if now - self._tick >= 1.0:
            self._tick = now
        return self._tick

    def _new(self) -> BrowserSession:
        session = BrowserSession(id=new_session_id(), issued=True)
        self._remember(session)
        return session

    def _remember(self, session: BrowserSession) -> None:
        session.last_seen = self._clock()
        self._cache[session.id] = session
        self._cache.move_to_end(session.id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def _load(self, session_id: str) -> BrowserSession:
        # One load per id at a time: concurrent first requests share the result.
        while (pending := self._loading.get(session_id)) is not None:
            await pending.wait()
            cached = self._cache.get(session_id)
            if cached is not None:
                return cached
        done = anyio.Event()
        self._loading[session_id] = done
        try:
            record = await self._store.get_session(session_id)
            if record is None:
                connection = self._connections.get(session_id)
                if connection is None:
                    return self._new()
                session = BrowserSession(id=session_id, connection=connection)
            else:
                session = BrowserSession(
                    id=record.id,
                    connection=self._restore_connection(record),
                    current_conversation=record.current_conversation,
                    created_at=record.created_at,
                )
            self._remember(session)
            return session
        finally:
            del self._loading[session_id]
            done.set()

    def _restore_connection(self, record: SessionRecord) -> ProviderConfig | None:
        connection = self._connections.get(record.id)
        if connection is None and record.connection is not None and self._cipher is not None:
            connection = self._cipher.decrypt(record.connection)
        if connection is not None and not self._base_urls.allows(connection.base_url):
            return None  # the allow-list was tightened since: connect again
        return connection

    async def save(self, session: BrowserSession) -> None:
        """Write the session through to the store (the key only ever encrypted).

        Raises:
            StoreError: the store could not be written.
        """
        encrypted: bytes | None = None
        if session.connection is not None:
            if self._cipher is not None:
                encrypted = self._cipher.encrypt(session.connection)
            else:
                self._connections[session.id] = session.connection
                self._connections.move_to_end(session.id)
                while len(self._connections) > self._capacity:
                    self._connections.popitem(last=False)
        else:
            self._connections.pop(session.id, None)
        await self._store.save_session(
            SessionRecord(
                id=session.id,
                current_conversation=session.current_conversation,
                connection=encrypted,
                created_at=session.created_at,
            )
        )
