"""What some tests need from the machine, and what happens when it is missing.

Locally a missing PostgreSQL server, browser or jemalloc skips the tests that need it.
Under CI (``CI`` set, as ``.ci/run`` does) it fails them: CI installs all three, so a
skip there would hide a broken set-up behind a green run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["make_run_allocator_env", "unavailable"]

REPO = Path(__file__).resolve().parents[1]


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def make_run_allocator_env() -> dict[str, str]:
    """The allocator variables ``make run`` sets, read from the command it would run.

    Calls :func:`unavailable` when there are none (jemalloc is not installed).
    """
    command = subprocess.run(
        ["make", "-s", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-1]
    words = command.split()
    assert words[0] == "env" and words[-2:] == [".venv/bin/chatbot", "web"], command
    allocator = dict(word.split("=", 1) for word in words[1:-2])
    if not allocator:
        unavailable("libjemalloc2 is not installed here (.ci/run installs it)")
    return allocator
