"""Terminal output: plain text for redirected output, live Markdown that fits the screen."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markdown import Markdown

from chatbot.cli.render import PlainRenderer, RichRenderer, _Tail


def test_plain_reply_streams_and_ends_the_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    ui = PlainRenderer(out, err)
    with ui.reply() as view:
        view.feed("Hello")
        assert out.getvalue() == "Hello"  # written as it comes
        view.feed(", world")
    ui.note("[stopped]")
    ui.error("the upstream failed")
    assert out.getvalue() == "Hello, world\n[stopped]\n"
    assert err.getvalue() == "error: the upstream failed\n"


def test_plain_reply_that_ends_with_a_newline_gets_no_other() -> None:
    out = io.StringIO()
    with PlainRenderer(out, io.StringIO()).reply() as view:
        view.feed("done\n")
    assert out.getvalue() == "done\n"


def test_tail_shows_only_what_fits_on_the_screen() -> None:
    console = Console(
        file=io.StringIO(), width=30, height=6, force_terminal=True, color_system=None
    )
    text = "\n\n".join(f"paragraph {n}" for n in range(20))
    lines = console.render_lines(_Tail(Markdown(text)), pad=False)
    rendered = ["".join(segment.text for segment in line).rstrip() for line in lines]
    assert len(rendered) == 5
    assert rendered[-1] == "paragraph 19"


def test_rich_reply_is_printed_once_as_markdown_when_done() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, height=10, force_terminal=True, color_system=None)
    ui = RichRenderer(console, Console(file=io.StringIO()))
    with ui.reply() as view:
        for piece in ["# Title", "\n\nSome ", "**bold** text"]:
            view.feed(piece)
    screen = buffer.getvalue()
    # The live region is erased on exit; the final rendering follows it.
    final = screen[screen.rindex("\x1b[2K") :]
    assert "Title" in final and "Some bold text" in final
    assert "**" not in final
