"""The ``chatbot`` command: the web server, a terminal chat, import and export.

::

    chatbot [web|ui|serve] [--host H] [--port P]   serve the web UI (the default)
    chatbot cli [-m TEXT] [--json] [--model M] [--provider P] [--system S] [--resume ID]
    chatbot import FILE                             add a conversation from a JSON export (new id)
    chatbot export ID [--format md|json] [-o FILE]  print a stored conversation

Configuration comes from the environment and ``.env`` (see ``.env.example``); the
flags override it for one run. Exit statuses: 0 success, 1 an upstream or other
error, 2 a configuration or usage error (one line on stderr naming the variable, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import attrs

from chatbot import __version__
from chatbot._config import Settings, read_environment
from chatbot._errors import ChatbotError, ConfigError, UnknownConversation
from chatbot._supervisor import new_conversation_id
from chatbot._transfer import (
    ConversationExport,
    ExportFormatError,
    from_json,
    to_json,
    to_markdown,
)
from chatbot.cli.session import Overrides, provider_config
from chatbot.store import open_store

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_WEB_COMMANDS = ("web", "ui", "serve")


class UsageError(Exception):
    """The command line asks for something impossible; exit status 2."""


def _add_server_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--host", default=default, help="interface to listen on (overrides HOST)")
    parser.add_argument(
        "--port", type=int, default=default, help="port to listen on (overrides PORT)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatbot",
        description="Claude, OpenAI, Ollama and OpenRouter behind one chat: web UI or terminal.",
    )
    parser.add_argument("--version", action="version", version=f"chatbot {__version__}")
    _add_server_options(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name in _WEB_COMMANDS:
        web = commands.add_parser(
            name,
            help="serve the web UI (the default)" if name == "web" else "same as web",
            description="Serve the web UI and its API.",
        )
        _add_server_options(web, argparse.SUPPRESS)

    cli = commands.add_parser(
        "cli",
        help="chat in the terminal, or answer one prompt from -m / stdin",
        description=(
            "Chat in the terminal. With -m, or when stdin is not a terminal, send one prompt "
            "(piped text, a blank line, then the -m text) and print only the reply."
        ),
    )
    cli.add_argument("-m", "--message", help="send this prompt and print the reply")
    cli.add_argument(
        "--json", action="store_true", help="print {reply, usage, model, conversation_id} as JSON at the end"
    )
    cli.add_argument("--provider", help="use this provider (its key comes from the environment)")
    cli.add_argument("--model", help="use this model (overrides MODEL)")
    cli.add_argument("--system", help="use this system prompt (overrides SYSTEM_PROMPT)")
    cli.add_argument("--base-url", help="use this endpoint (overrides BASE_URL)")
    cli.add_argument("--resume", metavar="ID", help="continue a saved conversation")

    importer = commands.add_parser("import", help="add a conversation from a JSON export")
    importer.add_argument("file", metavar="FILE", help="the export document ('-' reads stdin)")

    exporter = commands.add_parser("export", help="print a saved conversation as Markdown or JSON")
    exporter.add_argument("conversation", metavar="ID", help="the conversation id")
    exporter.add_argument("--format", choices=("md", "json"), default="md", help="default: md")
    exporter.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    return parser


def load_env() -> dict[str, str]:
    """The process environment over the ``.env`` file, as the settings read them.

    Raises:
        ConfigError: ``CHATBOT_ENV_FILE`` names a missing file.
    """
    return read_environment()


def _config_message(exc: ConfigError) -> str:
    message = str(exc)
    if exc.variable and exc.variable not in message:
        return f"{exc.variable}: {message}"
    return message


# -- commands -------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from chatbot.server import serve  # the web stack is heavy: load it only to serve

    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError("--port must be from 0 to 65535.")
    settings = attrs.evolve(
        settings,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
    )
    try:
        serve(settings)
    except OSError as exc:
        print(
            f"chatbot: cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def _chat(args: argparse.Namespace, settings: Settings, env: Mapping[str, str]) -> int:
    config = provider_config(env, args.provider)
    overrides = Overrides(model=args.model, system_prompt=args.system, base_url=args.base_url)
    interactive = args.message is None and sys.stdin.isatty()
    if interactive and not args.json:
        from chatbot.cli.repl import run_repl

        return anyio.run(
            lambda: run_repl(
                settings,
                env,
                config,
                resume=args.resume,
                overrides=overrides,
                terminal_output=sys.stdout.isatty(),
            ),
            backend="asyncio",
        )

    from chatbot.cli.pipe import build_prompt, run_pipe

    try:
        piped = None if sys.stdin.isatty() else sys.stdin.read()
    except UnicodeDecodeError:
        raise UsageError("stdin is not UTF-8 text.") from None
    prompt = build_prompt(piped, args.message)
    if not prompt:
        raise UsageError("nothing to send: give -m TEXT or pipe text on stdin.")
    anyio.run(
        lambda: run_pipe(
            settings,
            env,
            config,
            prompt,
            out=sys.stdout,
            as_json=args.json,
            resume=args.resume,
            overrides=overrides,
        ),
        backend="asyncio",
    )
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot read {args.file}: {reason}") from None
    try:
        export = from_json(text)
    except ExportFormatError as exc:
        print(f"chatbot: {args.file}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    info = export.info(new_conversation_id())

    async def store_it() -> None:
        async with open_store(settings.store_url) as store:
            await store.create_conversation(info)
            await store.replace_messages(info.id, export.messages)

    anyio.run(store_it, backend="asyncio")
    print(f"Imported conversation {info.id} ({len(export.messages)} messages).")
    print(f"Continue it with: chatbot cli --resume {info.id}")
    return EXIT_OK


def _export(args: argparse.Namespace, settings: Settings) -> int:
    async def read_it() -> str:
        async with open_store(settings.store_url) as store:
            info = await store.get_conversation(args.conversation)
            if info is None:
                raise UnknownConversation(
                    f"No conversation {args.conversation!r}.", conversation_id=args.conversation
                )
            messages = await store.load_messages(info.id)
        if args.format == "json":
            return to_json(ConversationExport.of(info, messages))
        return to_markdown(info, messages)

    document = anyio.run(read_it, backend="asyncio")
    if args.output:
        Path(args.output).write_text(document, encoding="utf-8")
    else:
        sys.stdout.write(document)
        sys.stdout.flush()
    return EXIT_OK


# -- entry point ----------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    env = load_env()
    settings = Settings.from_env(env)
    if args.command == "cli":
        return _chat(args, settings, env)
    if args.command == "import":
        return _import(args, settings)
    if args.command == "export":
        return _export(args, settings)
    return _serve(args, settings)


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a task group wrapped, or the group itself if it holds several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    return leaves[0] if len(leaves) == 1 else group


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chatbot`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        try:
            return _run(args)
        except BaseExceptionGroup as group:
            raise _sole(group) from None
    except ConfigError as exc:
        print(f"chatbot: {_config_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"chatbot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ChatbotError as exc:
        print(f"chatbot: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
