"""The interactive chat: a prompt with history, streamed replies, slash commands.

The prompt is prompt_toolkit's (line editing, history saved in the data directory
across runs, a new line with a trailing ``\\`` or Alt+Enter). Replies stream through
the renderer as the actor sends them.

Ctrl-C is handled in two places, because the terminal is in two modes:

* at the prompt the terminal is raw, so Ctrl-C is a key: on an empty line it leaves
  (like Ctrl-D), otherwise it clears the line;
* while a reply streams the terminal is cooked, so Ctrl-C is a SIGINT. One task
  receives SIGINT for the whole session (``anyio.open_signal_receiver``) and stops
  whatever runs. A turn is stopped through the actor (``Supervisor.cancel``): the
  upstream request is closed and the partial reply is committed, marked stopped,
  before the turn's stream ends, so ``/history`` right after shows it. A second
  Ctrl-C stops waiting for that. A slash command is simply cancelled.

The prompt is started with ``handle_sigint=False``: prompt_toolkit would otherwise
replace (and then remove) the event loop's SIGINT handler, which is ours.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus
from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from chatbot import __version__
from chatbot._config import ProviderConfig, Settings
from chatbot._errors import ChatbotError
from chatbot.cli.commands import Outcome, lookup_command
from chatbot.cli.render import Renderer, make_renderer
from chatbot.cli.session import ChatSession, Overrides, open_session

__all__ = ["PROMPT", "Repl", "run_repl"]

PROMPT = "you> "
CONTINUATION = "...> "
GOODBYE = "Goodbye!"

# After Ctrl-C, how long to keep asking the actor to stop a turn that has not
# started streaming yet before giving up on it.
_STOP_ATTEMPTS = 40
_STOP_RETRY_DELAY = 0.05


@attrs.define(eq=False)
class _Running:
    """What Ctrl-C stops: a turn (through its actor) or a command (by cancelling it)."""

    scope: anyio.CancelScope
    conversation_id: str | None = None
    stop_requested: bool = False
    finished: bool = False


def _continuation(width: int, line_number: int, wrap_count: int) -> str:
    """The prefix of an input line: ``...>`` on the lines after the first, nothing on soft wraps."""
    return "" if wrap_count else CONTINUATION.rjust(width)


@contextmanager
def _input_hidden() -> Iterator[None]:
    """Don't echo keys (``^C`` included) while a reply streams: they would break the live view.

    Keys typed meanwhile wait in the terminal's queue for the next prompt (a Ctrl-C
    discards them, as terminals do).
    """
    try:
        import termios
    except ImportError:
        yield  # not a POSIX system: nothing to hide
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):
        yield  # not a terminal
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @Condition
    def continued() -> bool:
        return get_app().current_buffer.document.text_before_cursor.endswith("\\")

    @bindings.add("enter", filter=continued)
    def _continue_line(event: KeyPressEvent) -> None:
        event.current_buffer.delete_before_cursor(1)
        event.current_buffer.insert_text("\n")

    @bindings.add("escape", "enter")
    def _new_line(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=EOFError, style="class:exiting")

    return bindings


class Repl:
    """One interactive session: read, run a command or a turn, repeat."""

    def __init__(self, session: ChatSession, ui: Renderer, history: History | None = None) -> None:
        self.session = session
        self.ui = ui
        self._prompt: PromptSession[str] = PromptSession(
            history=history or InMemoryHistory(),
            key_bindings=_key_bindings(),
            prompt_continuation=_continuation,
        )
        self._running: _Running | None = None
        self._tg: TaskGroup | None = None

    async def run(self, *, resumed: bool = False) -> int:
        """Chat until the user leaves; returns the exit status (0)."""
        config = self.session.config
        self.ui.banner(
            f"chatbot {__version__} · {config.spec.label} · {config.model}",
            f"{'resumed' if resumed else 'new'} conversation {self.session.conversation_id} · "
            "/help for commands · Ctrl-D or quit to leave",
        )
        if resumed:
            try:
                info = await self.session.supervisor.conversation(self.session.conversation_id)
            except ChatbotError:
                pass
            else:
                self.ui.note(
                    f"{info.title or '(untitled)'}: {info.message_count} messages; /history shows them."
                )
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._watch_interrupts)
            try:
                await self._loop()
            finally:
                tg.cancel_scope.cancel()
        self.ui.info(GOODBYE)
        return 0

    async def _loop(self) -> None:
        while True:
            text = await self._read()
            if text is None:
                return
            line = text.strip()
            if not line:
                continue
            if line in ("quit", "exit"):
                return
            if line.startswith("//"):
                await self._turn(line[1:])
            elif line.startswith("/"):
                if await self._command(line) is Outcome.QUIT:
                    return
            else:
                await self._turn(line)

    async def _read(self) -> str | None:
        """The next input, or None when the user leaves (Ctrl-D, Ctrl-C on an empty line)."""
        try:
            return await self._prompt.prompt_async(PROMPT, handle_sigint=False)
        except (EOFError, KeyboardInterrupt):
            return None

    async def _command(self, line: str) -> Outcome | None:
        parts = line[1:].split(None, 1)
        name = parts[0] if parts else ""
        arg = parts[1].strip() if len(parts) == 2 else ""
        command = lookup_command(name)
        if command is None:
            self.ui.error(f"Unknown command /{name}: /help lists the commands.")
            return None
        running = _Running(anyio.CancelScope())
        self._running = running
        outcome: Outcome | None = None
        try:
            with running.scope:
                outcome = await command.handler(self.session, self.ui, arg)
        except ChatbotError as exc:
            self.ui.error(str(exc))
        finally:
            running.finished = True
            self._running = None
        if running.scope.cancelled_caught:
            self.ui.note("[interrupted]")
        return outcome

    async def _turn(self, text: str) -> None:
        session = self.session
        running = _Running(anyio.CancelScope(), session.conversation_id)
        self._running = running
        stopped = True
        try:
            with running.scope, _input_hidden(), self.ui.reply() as view:
                async with session.supervisor.open_turn(
                    session.conversation_id, text, config=session.config
                ) as turn:
                    async for delta in turn:
                        view.feed(delta)
                    stopped = turn.reply is None or turn.reply.stopped
        except ChatbotError as exc:
            self.ui.error(str(exc))
            return
        finally:
            running.finished = True
            self._running = None
        if stopped:
            self.ui.note("[stopped]")

    async def _watch_interrupts(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self._interrupt()

    def _interrupt(self) -> None:
        running = self._running
        if running is None or running.finished:
            return  # at the prompt, Ctrl-C is a key; a stray SIGINT changes nothing
        if running.conversation_id is None or running.stop_requested:
            running.scope.cancel()
            return
        running.stop_requested = True
        assert self._tg is not None
        self._tg.start_soon(self._stop_turn, running)

    async def _stop_turn(self, running: _Running) -> None:
        """Ask the actor to stop the turn; it then ends the stream with the stopped reply."""
        assert running.conversation_id is not None
        for _ in range(_STOP_ATTEMPTS):
            if running.finished:
                return
            try:
                if await self.session.supervisor.cancel(running.conversation_id):
                    return
            except ChatbotError:
                break
            # Not running yet (still being routed or set up): ask again shortly.
            await anyio.sleep(_STOP_RETRY_DELAY)
        running.scope.cancel()


async def run_repl(
    settings: Settings,
    env: Mapping[str, str],
    config: ProviderConfig,
    *,
    resume: str | None = None,
    overrides: Overrides | None = None,
    terminal_output: bool = True,
) -> int:
    """Run the interactive chat; returns the exit status.

    Raises:
        StoreError: the store cannot be opened.
        UnknownConversation: ``resume`` names no stored conversation.
        ConfigError: an override is invalid.
    """
    data_dir = anyio.Path(settings.data_dir)
    await data_dir.mkdir(parents=True, exist_ok=True)
    history = FileHistory(str(Path(settings.data_dir) / "cli_history"))
    async with open_session(settings, env, config, resume=resume, overrides=overrides) as session:
        repl = Repl(session, make_renderer(terminal=terminal_output), history)
        return await repl.run(resumed=resume is not None)
