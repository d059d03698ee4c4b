"""The store contract: every backend (memory, SQLite, PostgreSQL) passes the same tests.

Each test receives the ``store`` fixture once per backend and event loop (see
``conftest.py``), so a behaviour that differs between backends fails here.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from chatbot import Message, Role, Usage
from chatbot.store import ConversationInfo, SessionRecord, Store, StoreConflict, derive_title

pytestmark = pytest.mark.anyio


def conversation(id: str, **fields: Any) -> ConversationInfo:
    return ConversationInfo(id=id, **fields)


async def add_turn(store: Store, conversation_id: str, text: str, reply: str = "ok") -> int:
    count = await store.message_count(conversation_id)
    return await store.append_turn(
        conversation_id,
        Message.user(text),
        Message.assistant(reply, usage=Usage(1, 2)),
        expected_count=count,
    )


class TestConversations:
    async def test_create_then_get_returns_every_field(self, store: Store) -> None:
        info = conversation(
            "c1",
            owner="alice",
            title="Plans",
            provider="openai",
            model="gpt-4o",
            system_prompt="Be brief.",
            created_at=1_700_000_000.125,
            updated_at=1_700_000_001.5,
        )
        await store.create_conversation(info)

        assert await store.get_conversation("c1") == info

    async def test_create_returns_the_conversation_as_stored(self, store: Store) -> None:
        # Callers use the returned value instead of reading the conversation back.
        info = conversation("c1", owner="o", title="t", created_at=1.25, updated_at=2, message_count=3)

        created = await store.create_conversation(info)

        assert created == await store.get_conversation("c1")
        assert created.message_count == 0 and created.updated_at == 2.0

    async def test_get_unknown_conversation_is_none(self, store: Store) -> None:
        assert await store.get_conversation("nope") is None
        assert await store.message_count("nope") == 0
        assert await store.load_messages("nope") == ()
        assert await store.load_conversation("nope") is None

    async def test_load_conversation_returns_metadata_and_messages(self, store: Store) -> None:
        await store.create_conversation(conversation("c1", owner="o", model="m"))
        await add_turn(store, "c1", "hello", "hi")

        loaded = await store.load_conversation("c1")

        assert loaded is not None
        info, messages = loaded
        assert info == await store.get_conversation("c1")
        assert info.message_count == 2
        assert messages == await store.load_messages("c1")
        assert [m.content for m in messages] == ["hello", "hi"]

    async def test_load_new_conversation_has_no_messages(self, store: Store) -> None:
        created = await store.create_conversation(conversation("c1"))

        assert await store.load_conversation("c1") == (created, ())

    async def test_create_with_existing_id_conflicts(self, store: Store) -> None:
        await store.create_conversation(conversation("c1", title="first"))

        with pytest.raises(StoreConflict):
            await store.create_conversation(conversation("c1", title="second"))
        stored = await store.get_conversation("c1")
        assert stored is not None and stored.title == "first"

    async def test_new_conversation_has_no_messages_whatever_info_says(self, store: Store) -> None:
        await store.create_conversation(conversation("c1", message_count=7))

        stored = await store.get_conversation("c1")
        assert stored is not None and stored.message_count == 0

    async def test_list_shows_only_the_owners_conversations_newest_first(
        self, store: Store
    ) -> None:
        for id, owner, updated in [
            ("a-old", "alice", 1.0),
            ("a-new", "alice", 3.0),
            ("a-mid", "alice", 2.0),
            ("b-1", "bob", 5.0),
            ("anon", None, 4.0),
        ]:
            await store.create_conversation(
                conversation(id, owner=owner, created_at=0.5, updated_at=updated)
            )

        assert [c.id for c in await store.list_conversations("alice")] == [
            "a-new",
            "a-mid",
            "a-old",
        ]
        assert [c.id for c in await store.list_conversations("bob")] == ["b-1"]
        assert [c.id for c in await store.list_conversations(None)] == ["anon"]
        assert await store.list_conversations("carol") == []

    async def test_list_breaks_ties_by_creation_time(self, store: Store) -> None:
        await store.create_conversation(
            conversation("older", owner="o", created_at=1.0, updated_at=9.0)
        )
        await store.create_conversation(
            conversation("newer", owner="o", created_at=2.0, updated_at=9.0)
        )

        assert [c.id for c in await store.list_conversations("o")] == ["newer", "older"]

    async def test_list_respects_the_limit(self, store: Store) -> None:
        for i in range(5):
            await store.create_conversation(conversation(f"c{i}", owner="o", updated_at=float(i)))

        listed = await store.list_conversations("o", limit=2)

        assert [c.id for c in listed] == ["c4", "c3"]

    async def test_list_reports_each_message_count(self, store: Store) -> None:
        await store.create_conversation(conversation("empty", owner="o", updated_at=1.0))
        await store.create_conversation(conversation("busy", owner="o", updated_at=2.0))
        await add_turn(store, "busy", "one")
        await add_turn(store, "busy", "two")

        counts = {c.id: c.message_count for c in await store.list_conversations("o")}

        assert counts == {"busy": 4, "empty": 0}

    async def test_update_changes_only_the_given_fields(self, store: Store) -> None:
        await store.create_conversation(
            conversation(
                "c1",
                title="t",
                provider="openai",
                model="m",
                system_prompt="s",
                created_at=1.0,
                updated_at=1.0,
            )
        )

        await store.update_conversation("c1", title="renamed", model="m2")

        stored = await store.get_conversation("c1")
        assert stored is not None
        assert (stored.title, stored.provider, stored.model, stored.system_prompt) == (
            "renamed",
            "openai",
            "m2",
            "s",
        )
        assert stored.created_at == 1.0
        assert stored.updated_at > 1.0

    async def test_update_moves_the_conversation_to_the_top(self, store: Store) -> None:
        await store.create_conversation(conversation("first", owner="o", updated_at=1.0))
        await store.create_conversation(conversation("second", owner="o", updated_at=2.0))

        await store.update_conversation("first", title="touched")

        assert [c.id for c in await store.list_conversations("o")] == ["first", "second"]

    async def test_update_unknown_conversation_does_nothing(self, store: Store) -> None:
        await store.update_conversation("ghost", title="boo")

        assert await store.get_conversation("ghost") is None

    async def test_delete_removes_the_conversation_and_its_messages(self, store: Store) -> None:
        await store.create_conversation(conversation("c1", owner="o"))
        await add_turn(store, "c1", "hello")

        assert await store.delete_conversation("c1") is True

        assert await store.get_conversation("c1") is None
        assert await store.list_conversations("o") == []
        assert await store.load_messages("c1") == ()
        assert await store.delete_conversation("c1") is False
        # A new conversation with the same id starts empty: no orphaned rows remain.
        await store.create_conversation(conversation("c1", owner="o"))
        assert await store.load_messages("c1") == ()
        assert await add_turn(store, "c1", "again") == 2


class TestTurns:
    async def test_append_turn_commits_both_messages_exactly(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        user = Message(role=Role.USER, content="Hi there", created_at=100.25)
        assistant = Message(
            role=Role.ASSISTANT,
            content="Hello!",
            usage=Usage(input_tokens=12, output_tokens=3),
            created_at=101.5,
        )

        count = await store.append_turn("c1", user, assistant, expected_count=0)

        assert count == 2
        assert await store.load_messages("c1") == (user, assistant)
        assert await store.message_count("c1") == 2

    async def test_usage_none_and_zero_usage_stay_distinct(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        stopped = Message.assistant("partial", usage=Usage(0, 0), stopped=True)

        await store.append_turn("c1", Message.user("go"), stopped, expected_count=0)

        user, assistant = await store.load_messages("c1")
        assert user.usage is None and user.stopped is False
        assert assistant.usage == Usage(0, 0) and assistant.stopped is True

    async def test_turns_keep_their_order(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        for i in range(12):  # more than 10, so a text sort of seq would show
            await add_turn(store, "c1", f"question {i}", f"answer {i}")

        contents = [m.content for m in await store.load_messages("c1")]

        assert contents == [text for i in range(12) for text in (f"question {i}", f"answer {i}")]

    async def test_stale_expected_count_conflicts_and_writes_nothing(self, store: Store) -> None:
        await store.create_conversation(conversation("c1", updated_at=1.0))
        await add_turn(store, "c1", "first")
        before = await store.get_conversation("c1")

        with pytest.raises(StoreConflict):
            await store.append_turn(
                "c1", Message.user("late"), Message.assistant("x"), expected_count=0
            )

        assert [m.content for m in await store.load_messages("c1")] == ["first", "ok"]
        assert await store.get_conversation("c1") == before

    async def test_append_to_unknown_conversation_conflicts(self, store: Store) -> None:
        with pytest.raises(StoreConflict):
            await store.append_turn(
                "ghost", Message.user("hi"), Message.assistant("x"), expected_count=0
            )

        assert await store.get_conversation("ghost") is None
        assert await store.load_messages("ghost") == ()

    async def test_concurrent_appends_with_the_same_count_commit_once(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        outcomes: list[str] = []

        async def attempt(text: str) -> None:
            try:
                await store.append_turn(
                    "c1", Message.user(text), Message.assistant("x"), expected_count=0
                )
                outcomes.append("committed")
            except StoreConflict:
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            for text in ("a", "b", "c"):
                tg.start_soon(attempt, text)

        assert sorted(outcomes) == ["committed", "conflict", "conflict"]
        assert await store.message_count("c1") == 2

    async def test_first_turn_sets_the_title_once(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        long_question = "How do I   bake\nsourdough bread " + "with a very long question " * 5

        await add_turn(store, "c1", long_question)
        await add_turn(store, "c1", "Second question")

        stored = await store.get_conversation("c1")
        assert stored is not None
        assert stored.title == derive_title(long_question)
        assert stored.title.startswith("How do I bake sourdough bread") and stored.title.endswith(
            "…"
        )

    async def test_existing_title_is_kept(self, store: Store) -> None:
        await store.create_conversation(conversation("c1", title="My title"))

        await add_turn(store, "c1", "Something else entirely")

        stored = await store.get_conversation("c1")
        assert stored is not None and stored.title == "My title"

    async def test_append_turn_bumps_updated_at(self, store: Store) -> None:
        await store.create_conversation(conversation("old", owner="o", updated_at=1.0))
        await store.create_conversation(conversation("new", owner="o", updated_at=2.0))

        await add_turn(store, "old", "ping")

        assert [c.id for c in await store.list_conversations("o")] == ["old", "new"]

    async def test_replace_messages_swaps_the_whole_history(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        await add_turn(store, "c1", "one")
        await add_turn(store, "c1", "two")
        imported = (
            Message(role=Role.USER, content="imported question", created_at=5.0),
            Message(
                role=Role.ASSISTANT, content="imported answer", usage=Usage(4, 5), created_at=6.0
            ),
            Message(role=Role.USER, content="follow-up", created_at=7.0),
        )

        await store.replace_messages("c1", imported)

        assert await store.load_messages("c1") == imported
        assert await store.message_count("c1") == 3
        # The count check follows the new history.
        assert (
            await store.append_turn(
                "c1", Message.user("next"), Message.assistant("x"), expected_count=3
            )
            == 5
        )

    async def test_replace_with_nothing_empties_the_conversation(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        await add_turn(store, "c1", "one")

        await store.replace_messages("c1", ())

        assert await store.load_messages("c1") == ()
        assert await add_turn(store, "c1", "fresh start") == 2

    async def test_replace_messages_of_unknown_conversation_conflicts(self, store: Store) -> None:
        with pytest.raises(StoreConflict):
            await store.replace_messages("ghost", (Message.user("x"),))

        assert await store.load_messages("ghost") == ()

    async def test_turn_under_the_conversation_lock(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        await store.create_conversation(conversation("c2"))

        async with store.lock_conversation("c1"), store.lock_conversation("c2"):
            assert await add_turn(store, "c1", "locked") == 2
            assert await add_turn(store, "c2", "also locked") == 2

        async with store.lock_conversation("c1"):  # released, so it can be taken again
            assert await store.message_count("c1") == 2


class TestContent:
    async def test_unicode_round_trips(self, store: Store) -> None:
        texts = [
            "emoji 🦜🔥👩‍👩‍👧‍👦",
            "中文 日本語 한국어",
            "עברית والعربية",
            "e\u0301 combining, \u200b zero-width, tab\tnew\nline",
            "quotes ' \" ` and backslash \\ and %s %(x)s ? $1",
        ]
        await store.create_conversation(
            conversation("ünïcødé-🦜", owner="ōwner-✓", title="títle ✓")
        )
        for text in texts:
            await add_turn(store, "ünïcødé-🦜", text, text[::-1])

        messages = await store.load_messages("ünïcødé-🦜")
        assert [m.content for m in messages] == [t for text in texts for t in (text, text[::-1])]
        listed = await store.list_conversations("ōwner-✓")
        assert [(c.id, c.title) for c in listed] == [("ünïcødé-🦜", "títle ✓")]

    async def test_large_content_round_trips(self, store: Store) -> None:
        await store.create_conversation(conversation("c1"))
        big = "".join(chr(0x41 + i % 26) for i in range(1_000_000)) + "🦜"

        await store.append_turn(
            "c1", Message.user(big), Message.assistant(big[::-1]), expected_count=0
        )

        user, assistant = await store.load_messages("c1")
        assert user.content == big and assistant.content == big[::-1]


class TestSessions:
    async def test_unknown_session_is_none(self, store: Store) -> None:
        assert await store.get_session("nobody") is None

    async def test_save_then_get_keeps_the_encrypted_blob(self, store: Store) -> None:
        blob = bytes(range(256)) * 4  # any bytes, NUL included
        record = SessionRecord(
            id="s1", current_conversation="c1", connection=blob, created_at=10.0, updated_at=10.0
        )

        await store.save_session(record)

        stored = await store.get_session("s1")
        assert stored is not None
        assert (stored.id, stored.current_conversation, stored.connection, stored.created_at) == (
            "s1",
            "c1",
            blob,
            10.0,
        )
        assert stored.updated_at > 10.0

    async def test_saving_again_updates_the_session(self, store: Store) -> None:
        await store.save_session(SessionRecord(id="s1", current_conversation="c1", connection=b"x"))
        await store.save_session(SessionRecord(id="s2", current_conversation="other"))

        await store.save_session(SessionRecord(id="s1", current_conversation="c2", connection=None))

        stored = await store.get_session("s1")
        assert stored is not None
        assert (stored.current_conversation, stored.connection) == ("c2", None)
        other = await store.get_session("s2")
        assert other is not None and other.current_conversation == "other"


async def test_ping_answers(store: Store) -> None:
    await store.ping()
