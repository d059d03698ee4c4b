"""Terminal output for the interactive chat: rich Markdown on a terminal, plain text otherwise.

A reply is shown while it streams. On a terminal, :class:`RichRenderer` redraws it as
Markdown in a ``rich.live.Live`` region, at most ``_FRAMES_PER_SECOND`` times a
second, and shows only the tail that fits the screen, so the region never scrolls
out of reach; when the reply ends, the region is replaced by the whole reply printed
once. :class:`PlainRenderer` writes the deltas as they come, for a terminal whose
output is redirected.

Errors go to stderr as one line, ``error: <message>``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TextIO

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

__all__ = ["PlainRenderer", "Renderer", "ReplyView", "RichRenderer", "make_renderer"]

_FRAMES_PER_SECOND = 15


class ReplyView(Protocol):
    """Where a streaming reply goes, delta by delta."""

    def feed(self, text: str) -> None: ...


class Renderer(Protocol):
    """Everything the interactive chat prints."""

    def banner(self, title: str, details: str) -> None:
        """The first lines: what is connected, and how to get help."""
        ...

    def info(self, text: str) -> None:
        """A plain line (lists, confirmations)."""
        ...

    def note(self, text: str) -> None:
        """A secondary line, dimmed where colours exist (``[stopped]``, hints)."""
        ...

    def error(self, text: str) -> None:
        """One line on stderr: ``error: <text>``."""
        ...

    def markdown(self, text: str) -> None:
        """A block of Markdown (a message from the history)."""
        ...

    def reply(self) -> AbstractContextManager[ReplyView]:
        """A context manager showing a reply while it streams; the whole of it stays on exit."""
        ...


class _Tail:
    """Renders only the last lines of a renderable that fit on the screen."""

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.inner, options.update(height=None), pad=False)
        keep = max(1, options.size.height - 1)
        shown = lines[-keep:]
        for index, line in enumerate(shown):
            yield from line
            if index < len(shown) - 1:
                yield Segment.line()


class _LiveReply:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._parts: list[str] = []
        self._live = Live(
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._drawn_at = 0.0

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()

    def feed(self, text: str) -> None:
        self._parts.append(text)
        now = time.monotonic()
        if now - self._drawn_at >= 1 / _FRAMES_PER_SECOND:
            self._drawn_at = now
            self._live.update(_Tail(Markdown("".join(self._parts))), refresh=True)

    @property
    def text(self) -> str:
        return "".join(self._parts)


class RichRenderer:
    """Colours and Markdown, for a terminal."""

    def __init__(self, console: Console | None = None, errors: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.errors = errors or Console(stderr=True, highlight=False)

    def banner(self, title: str, details: str) -> None:
        self.console.print(Text(title, style="bold"))
        self.console.print(Text(details, style="dim"))

    def info(self, text: str) -> None:
        self.console.print(Text(text))

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    def error(self, text: str) -> None:
        self.errors.print(Text(f"error: {text}", style="red"))

    def markdown(self, text: str) -> None:
        self.console.print(Markdown(text))

    @contextmanager
    def reply(self) -> Iterator[ReplyView]:
        view = _LiveReply(self.console)
        view.start()
        try:
            yield view
        finally:
            view.stop()
            if view.text.strip():
                self.console.print(Markdown(view.text))


class PlainRenderer:
    """Text as it comes, for output that is not a terminal."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def _line(self, text: str, stream: TextIO | None = None) -> None:
        stream = stream or self.out
        stream.write(text + "\n")
        stream.flush()

    def banner(self, title: str, details: str) -> None:
        self._line(title)
        self._line(details)

    def info(self, text: str) -> None:
        self._line(text)

    def note(self, text: str) -> None:
        self._line(text)

    def error(self, text: str) -> None:
        self._line(f"error: {text}", self.err)

    def markdown(self, text: str) -> None:
        self._line(text)

    @contextmanager
    def reply(self) -> Iterator[ReplyView]:
        view = _PlainReply(self.out)
        try:
            yield view
        finally:
            if view.written and not view.ends_with_newline:
                self.out.write("\n")
                self.out.flush()


class _PlainReply:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.written = False
        self.ends_with_newline = False

    def feed(self, text: str) -> None:
        if not text:
            return
        self._out.write(text)
        self._out.flush()
        self.written = True
        self.ends_with_newline = text.endswith("\n")


def make_renderer(*, terminal: bool) -> RichRenderer | PlainRenderer:
    """Rich output when stdout is a terminal, plain text otherwise."""
    return RichRenderer() if terminal else PlainRenderer()
