"""pytest fixtures for the fake upstreams (loaded as a plugin by ``tests/conftest.py``).

One fake server runs for the whole session, on its own thread and loop, so tests on
either anyio backend share it; ``fake_upstream`` hands it to a test after a reset
(no script, no records, default settings) and checks that the test used up what it
scripted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeUpstream

__all__ = ["fake_upstream", "fake_upstream_server"]


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    """The session's fake upstream (prefer ``fake_upstream``, which resets it)."""
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """A running fake upstream, reset for this test: ``enqueue`` behaviours, read ``requests``."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    leftover = fake_upstream_server.pending
    fake_upstream_server.reset()
    assert leftover == 0, f"{leftover} scripted upstream behaviour(s) were never used"
