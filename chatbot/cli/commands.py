"""Slash commands of the interactive chat: a table of name -> coroutine + help line.

Each command takes the :class:`~chatbot.cli.session.ChatSession`, the renderer and
the text after its name. It raises :class:`~chatbot.ChatbotError` for anything the
user should read as ``error: ...``; the loop prints it and carries on.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Awaitable, Callable

import anyio
import attrs

from chatbot._errors import UnknownConversation
from chatbot._messages import Role
from chatbot._transfer import to_markdown
from chatbot.cli.render import Renderer
from chatbot.cli.session import ChatSession, same_provider
from chatbot.providers._registry import provider_specs
from chatbot.store import ConversationInfo

__all__ = ["COMMANDS", "Command", "Outcome", "lookup_command"]


class Outcome(enum.Enum):
    """What the loop does after a command."""

    CONTINUE = "continue"
    QUIT = "quit"


Handler = Callable[[ChatSession, Renderer, str], Awaitable[Outcome | None]]


@attrs.frozen
class Command:
    """One slash command: its handler, how to call it and what it does."""

    name: str
    handler: Handler
    usage: str
    help: str


async def _help(session: ChatSession, ui: Renderer, arg: str) -> None:
    width = max(len(command.usage) for command in COMMANDS.values())
    seen: set[str] = set()
    for command in COMMANDS.values():
        if command.name not in seen:
            seen.add(command.name)
            ui.info(f"  {command.usage.ljust(width)}  {command.help}")
    ui.note(
        "End a line with \\ or press Alt+Enter for a new line. Ctrl-C stops a reply; "
        "Ctrl-D, quit or exit leaves. Start a message with // to send a leading slash."
    )


async def _reset(session: ChatSession, ui: Renderer, arg: str) -> None:
    await session.supervisor.reset(session.conversation_id)
    ui.note("History cleared.")


async def _new(session: ChatSession, ui: Renderer, arg: str) -> None:
    session.start_new()
    ui.note(f"New conversation {session.conversation_id}.")


async def _model(session: ChatSession, ui: Renderer, arg: str) -> None:
    if arg:
        session.config = session.config.evolve(model=arg)
        ui.note(f"Model: {session.config.model} (from the next message on).")
    else:
        ui.info(f"{session.config.spec.label} · {session.config.model}")


async def _provider(session: ChatSession, ui: Renderer, arg: str) -> None:
    if not arg:
        names = ", ".join(spec.name for spec in provider_specs())
        ui.info(f"{session.config.spec.label} · {session.config.model}  (available: {names})")
        return
    session.use_provider(arg)
    ui.note(f"Now using {session.config.spec.label} · {session.config.model}.")


async def _system(session: ChatSession, ui: Renderer, arg: str) -> None:
    if arg:
        session.config = session.config.evolve(system_prompt=arg)
        ui.note("System prompt set (from the next message on).")
    else:
        ui.info(session.config.system_prompt)


async def _history(session: ChatSession, ui: Renderer, arg: str) -> None:
    messages = await session.supervisor.history(session.conversation_id)
    if not messages:
        ui.note("No messages yet.")
        return
    for message in messages:
        who = "you" if message.role is Role.USER else "assistant"
        suffix = " [stopped]" if message.stopped else ""
        ui.info(f"{who}: {message.content}{suffix}")


async def _current_info(session: ChatSession) -> ConversationInfo:
    try:
        return await session.supervisor.conversation(session.conversation_id)
    except UnknownConversation:
        config = session.config
        return ConversationInfo(
            id=session.conversation_id,
            provider=config.provider,
            model=config.model,
            system_prompt=config.system_prompt,
        )


async def _save(session: ChatSession, ui: Renderer, arg: str) -> None:
    if not arg:
        ui.error("Usage: /save FILE")
        return
    info = await _current_info(session)
    messages = await session.supervisor.history(session.conversation_id)
    path = await anyio.Path(arg).expanduser()
    try:
        await path.write_text(to_markdown(info, messages), encoding="utf-8")
    except OSError as exc:
        ui.error(f"Cannot write {arg}: {exc.strerror or exc}.")
        return
    ui.note(f"Saved {len(messages)} messages to {path}.")


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


async def _conversations(session: ChatSession, ui: Renderer, arg: str) -> None:
    listed = await session.supervisor.list_conversations(None, limit=50)
    if not listed:
        ui.note("No saved conversations yet.")
        return
    for info in listed:
        mark = "*" if info.id == session.conversation_id else " "
        title = info.title or "(untitled)"
        ui.info(
            f"{mark} {info.id[:8]}  {_when(info.updated_at)}  {info.message_count:>3} msgs  {title}"
        )
    ui.note("/resume ID continues one (the first characters of the id are enough).")


async def _resume(session: ChatSession, ui: Renderer, arg: str) -> None:
    info = await session.resume(arg)
    title = info.title or "(untitled)"
    ui.note(f"Resumed {info.id}: {title} ({info.message_count} messages).")
    config = session.config
    if (
        info.provider
        and info.model
        and not (same_provider(info.provider, config) and info.model == config.model)
    ):
        ui.note(
            f"It was written with {info.provider} · {info.model}; continuing with "
            f"{config.provider} · {config.model}."
        )


async def _models(session: ChatSession, ui: Renderer, arg: str) -> None:
    models = await session.supervisor.list_models(session.config)
    if not models:
        ui.note("The provider listed no models.")
    for model in models:
        ui.info(f"{'*' if model == session.config.model else ' '} {model}")


async def _quit(session: ChatSession, ui: Renderer, arg: str) -> Outcome:
    return Outcome.QUIT


def _table(*commands: Command, aliases: dict[str, str]) -> dict[str, Command]:
    table = {command.name: command for command in commands}
    table.update({alias: table[name] for alias, name in aliases.items()})
    return table


COMMANDS: dict[str, Command] = _table(
    Command("help", _help, "/help", "show this help"),
    Command("reset", _reset, "/reset", "forget this conversation's messages"),
    Command("new", _new, "/new", "start a new conversation"),
    Command("model", _model, "/model [NAME]", "switch model (without NAME: show it)"),
    Command(
        "provider",
        _provider,
        "/provider [NAME]",
        "switch provider, using its key from the environment",
    ),
    Command("system", _system, "/system [TEXT]", "set the system prompt (without TEXT: show it)"),
    Command("history", _history, "/history", "show this conversation's messages"),
    Command("save", _save, "/save FILE", "save this conversation as Markdown"),
    Command("conversations", _conversations, "/conversations", "list saved conversations"),
    Command("resume", _resume, "/resume ID", "continue a saved conversation"),
    Command("models", _models, "/models", "list the provider's models"),
    Command("quit", _quit, "/quit", "leave (also: /exit, quit, exit, Ctrl-D)"),
    aliases={"exit": "quit", "?": "help"},
)


def lookup_command(name: str) -> Command | None:
    """The command called ``name`` (without the slash), or None."""
    return COMMANDS.get(name.lower())
