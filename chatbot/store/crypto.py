"""Encrypting a session's provider connection, API key included, for the store.

A browser's connection (provider, model, endpoint, key) is kept in the session so
that a restarted server, or another instance, can continue the conversation. The
store never sees it in plain text: :class:`ConnectionCipher` turns a
:class:`~chatbot._config.ProviderConfig` into a Fernet token (AES-128-CBC with an
HMAC-SHA256, from ``cryptography``) and back.

The Fernet key is derived from ``CHATBOT_SECRET_KEY`` with scrypt, so any string
works as a secret and a short one still costs an attacker who has the database a
scrypt per guess. The salt is fixed, because every instance sharing the database
must derive the same key from the same secret.

A token that does not decrypt (the secret changed, the row was tampered with, or it
was written by a release whose format this one does not read) is not an error:
:meth:`ConnectionCipher.decrypt` returns ``None`` and the user is asked to connect
again, exactly as when no secret is set. The key never appears in a repr, a log
line or an exception.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Final, final

import cattrs
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chatbot._config import ProviderConfig
from chatbot._errors import ChatbotError, ConfigError

__all__ = ["ConnectionCipher"]

logger = logging.getLogger(__name__)

_SALT: Final = b"chatbot.store.crypto/connection/v1"
_SCRYPT_N: Final = 2**14
_FORMAT_VERSION: Final = 1


def _configure_converter() -> cattrs.Converter:
    """Unknown keys are ignored, so a field dropped by a later release does not make
    every stored connection unreadable."""
    return cattrs.Converter()


_converter = _configure_converter()


def _derive_key(secret_key: str) -> bytes:
    kdf = Scrypt(salt=_SALT, length=32, n=_SCRYPT_N, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(secret_key.encode("utf-8")))


@final
class ConnectionCipher:
    """Encrypts and decrypts provider connections with a key derived from a secret.

    Derivation takes a few tens of milliseconds: build one cipher at startup and
    share it.
    """

    __slots__ = ("_fernet",)

    def __init__(self, secret_key: str) -> None:
        """Derive the encryption key from ``secret_key`` (``CHATBOT_SECRET_KEY``).

        Raises:
            ConfigError: the secret is empty or only whitespace.
        """
        if not secret_key.strip():
            raise ConfigError(
                "CHATBOT_SECRET_KEY is empty: set a long random string, or unset it.",
                variable="CHATBOT_SECRET_KEY",
            )
        self._fernet = Fernet(_derive_key(secret_key))

    def __repr__(self) -> str:
        return "ConnectionCipher(<secret>)"

    def encrypt(self, config: ProviderConfig) -> bytes:
        """The token to store for ``config``: opaque bytes, different on every call."""
        payload = {"v": _FORMAT_VERSION, "config": _converter.unstructure(config)}
        return self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode())

    def decrypt(self, token: bytes) -> ProviderConfig | None:
        """The connection stored as ``token``, or None when it cannot be read back.

        None means "ask the user to connect again": the token was made with another
        secret, was altered, or holds a connection this release rejects (for example
        a provider that no longer exists).
        """
        try:
            plain = self._fernet.decrypt(token)
        except (InvalidToken, TypeError):
            logger.warning(
                "A stored connection could not be decrypted "
                "(was CHATBOT_SECRET_KEY changed?); the user must connect again."
            )
            return None
        try:
            payload: Any = json.loads(plain)
            if not isinstance(payload, dict) or payload.get("v") != _FORMAT_VERSION:
                raise ValueError("unknown connection format")
            return _converter.structure(payload["config"], ProviderConfig)
        except (ValueError, TypeError, KeyError, ChatbotError, cattrs.BaseValidationError) as exc:
            # The message names the problem, never the values (the key is one of them).
            logger.warning(
                "A stored connection is no longer valid (%s); the user must connect again.",
                type(exc).__name__,
            )
            return None
