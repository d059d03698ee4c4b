"""The public namespace is exactly what ``__all__`` says, and it all lives in ``chatbot``."""

from __future__ import annotations

import types

import chatbot


def test_all_lists_the_public_namespace() -> None:
    public = {
        name
        for name, value in vars(chatbot).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(chatbot.__all__)


def test_all_is_sorted() -> None:
    assert chatbot.__all__ == sorted(chatbot.__all__)


def test_exports_claim_the_chatbot_module() -> None:
    for name in chatbot.__all__:
        assert getattr(chatbot, name).__module__ == "chatbot", name


def test_errors_form_one_tree() -> None:
    exported = [getattr(chatbot, name) for name in chatbot.__all__]
    errors = [item for item in exported if isinstance(item, type) and issubclass(item, BaseException)]
    assert len(errors) > 10 and chatbot.MissingApiKey in errors
    for error in errors:
        assert issubclass(error, chatbot.ChatbotError), error
