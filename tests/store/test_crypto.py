"""ConnectionCipher: connections round-trip, keys never show, bad tokens read as None."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from anyio import to_thread
from cryptography.fernet import Fernet

from chatbot import ConfigError, ProviderConfig
from chatbot.store import SessionRecord
from chatbot.store.crypto import ConnectionCipher, _derive_key
from chatbot.store.sqlite import SQLiteStore, database_path

API_KEY = "sk-test-0123456789abcdef-very-secret"
SECRET = "correct horse battery staple"


@pytest.fixture(scope="module")
def cipher() -> ConnectionCipher:
    return ConnectionCipher(SECRET)


@pytest.fixture
def config() -> ProviderConfig:
    return ProviderConfig(
        provider="openai",
        model="gpt-4o-mini",
        api_key=API_KEY,
        base_url="https://llm.example.test/v1",
        max_tokens=2048,
        system_prompt="Answer in French.",
    )


def test_round_trip_keeps_every_field_and_the_key(
    cipher: ConnectionCipher, config: ProviderConfig
) -> None:
    restored = cipher.decrypt(cipher.encrypt(config))

    assert restored == config
    assert restored is not None and restored.api_key == API_KEY


def test_connection_without_a_key_round_trips(cipher: ConnectionCipher) -> None:
    config = ProviderConfig(provider="ollama")

    assert cipher.decrypt(cipher.encrypt(config)) == config


def test_token_reveals_nothing(cipher: ConnectionCipher, config: ProviderConfig) -> None:
    token = cipher.encrypt(config)

    for plain in (API_KEY, "llm.example.test", "Answer in French", "gpt-4o-mini"):
        assert plain.encode() not in token


def test_each_encryption_is_different(cipher: ConnectionCipher, config: ProviderConfig) -> None:
    first, second = cipher.encrypt(config), cipher.encrypt(config)

    assert first != second
    assert cipher.decrypt(first) == cipher.decrypt(second) == config


def test_instances_with_the_same_secret_share_tokens(config: ProviderConfig) -> None:
    token = ConnectionCipher(SECRET).encrypt(config)

    assert ConnectionCipher(SECRET).decrypt(token) == config


def test_wrong_secret_reads_as_no_connection(
    cipher: ConnectionCipher, config: ProviderConfig, caplog: pytest.LogCaptureFixture
) -> None:
    token = cipher.encrypt(config)

    with caplog.at_level(logging.WARNING, logger="chatbot.store.crypto"):
        assert ConnectionCipher("another secret").decrypt(token) is None

    assert "CHATBOT_SECRET_KEY" in caplog.text
    assert API_KEY not in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-1] + (b"A" if t[-1:] != b"A" else b"B"), id="altered"),
        pytest.param(lambda t: t[: len(t) // 2], id="truncated"),
        pytest.param(lambda t: b"not a token at all", id="garbage"),
        pytest.param(lambda t: b"", id="empty"),
    ],
)
def test_damaged_token_reads_as_no_connection(
    cipher: ConnectionCipher, config: ProviderConfig, mangle: Callable[[bytes], bytes]
) -> None:
    token = cipher.encrypt(config)

    assert cipher.decrypt(mangle(token)) is None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"v": 2, "config": {}}, id="future-format"),
        pytest.param({"v": 1, "config": {"provider": "no-such-provider"}}, id="unknown-provider"),
        pytest.param({"v": 1, "config": {"provider": "openai"}}, id="key-missing"),
        pytest.param({"v": 1}, id="no-config"),
        pytest.param(["v", 1], id="not-an-object"),
    ],
)
def test_readable_but_invalid_payload_reads_as_no_connection(
    payload: object, caplog: pytest.LogCaptureFixture
) -> None:
    token = Fernet(_derive_key(SECRET)).encrypt(json.dumps(payload).encode())

    with caplog.at_level(logging.WARNING, logger="chatbot.store.crypto"):
        assert ConnectionCipher(SECRET).decrypt(token) is None
    assert "connect again" in caplog.text


def test_empty_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        ConnectionCipher("   ")

    assert caught.value.variable == "CHATBOT_SECRET_KEY"


def test_repr_hides_the_secret(cipher: ConnectionCipher) -> None:
    assert SECRET not in repr(cipher)


@pytest.mark.anyio
async def test_stored_session_keeps_the_key_encrypted_on_disk(
    cipher: ConnectionCipher, config: ProviderConfig, sqlite_url: str
) -> None:
    store = await SQLiteStore.open(sqlite_url)
    try:
        await store.save_session(SessionRecord(id="s1", connection=cipher.encrypt(config)))
        stored = await store.get_session("s1")
    finally:
        await store.aclose()

    assert stored is not None and stored.connection is not None
    assert cipher.decrypt(stored.connection) == config

    def key_on_disk() -> bool:
        files = Path(database_path(sqlite_url)).parent.iterdir()
        return any(API_KEY.encode() in file.read_bytes() for file in files)

    assert not await to_thread.run_sync(key_on_disk)
