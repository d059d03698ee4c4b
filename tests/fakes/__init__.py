"""Test doubles that are first-class code: fake upstream model servers."""

from __future__ import annotations

from ._formats import Flavour, Reply
from ._script import Behaviour, Exchange, Fail, Hang, Raw, RecordedRequest, Reset
from ._server import DEFAULT_API_KEY, DEFAULT_MODELS, FakeUpstream

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "Behaviour",
    "Exchange",
    "Fail",
    "FakeUpstream",
    "Flavour",
    "Hang",
    "Raw",
    "RecordedRequest",
    "Reply",
    "Reset",
]
