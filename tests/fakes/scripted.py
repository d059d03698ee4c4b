"""ScriptedProvider: an in-process provider whose replies a test writes in advance.

Used where the test is about the actor or the supervisor, not about HTTP: it yields
exactly the events it was given, records every request, and notices being closed.
Adapters themselves are tested against the fake upstream servers over real HTTP.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import attrs
import httpx

from chatbot import ProviderConfig, Usage
from chatbot.providers import ChatRequest, StreamEnd, StreamEvent, TextDelta


@attrs.frozen
class Hang:
    """Block here until cancelled (or until ``release`` is set, if given)."""

    release: anyio.Event | None = None


@attrs.frozen
class Pause:
    seconds: float


Step = str | StreamEnd | BaseException | Hang | Pause


def echo_script(request: ChatRequest) -> list[Step]:
    """The default reply: repeats the last user message, in three pieces."""
    text = f"You said: {request.messages[-1].content}"
    third = max(1, len(text) // 3)
    pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
    return [*(p for p in pieces if p), StreamEnd(usage=Usage(len(request.messages), 3), stop_reason="end_turn", model=request.model)]


@attrs.define
class ScriptedProvider:
    """Replies from a queue of scripts; falls back to :func:`echo_script`."""

    config: ProviderConfig | None = None
    scripts: deque[Sequence[Step]] = attrs.field(factory=deque)
    requests: list[ChatRequest] = attrs.field(factory=list)
    closed: int = 0
    started: int = 0
    models: list[str] = attrs.field(factory=lambda: ["scripted-1", "scripted-2"])

    @property
    def name(self) -> str:
        return self.config.provider if self.config else "scripted"

    def enqueue(self, *steps: Step) -> None:
        self.scripts.append(steps)

    def factory(self, config: ProviderConfig, client: httpx.AsyncClient) -> Any:
        """A provider factory for ``Supervisor(provider_factory=...)`` sharing this script."""
        self.config = config
        return self

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.requests.append(request)
        self.started += 1
        steps = self.scripts.popleft() if self.scripts else echo_script(request)
        try:
            for step in steps:
                if isinstance(step, str):
                    yield TextDelta(step)
                elif isinstance(step, StreamEnd):
                    yield step
                elif isinstance(step, BaseException):
                    raise step
                elif isinstance(step, Pause):
                    await anyio.sleep(step.seconds)
                elif step.release is None:
                    await anyio.sleep_forever()
                else:
                    await step.release.wait()
        finally:
            self.closed += 1

    async def list_models(self) -> list[str]:
        return list(self.models)
