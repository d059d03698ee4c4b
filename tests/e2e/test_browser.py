"""The web UI in headless Chromium against the real server and a fake model upstream.

Each test drives the page the way a person does (the connect form, Enter, the Stop
button, the sidebar) and checks what the page shows, what the server stored (after
a reload) and, where it matters, what the upstream received. The fixtures fail any
test whose page hit a CSP violation, an uncaught error or a dialog.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes import DEFAULT_API_KEY, Fail, FakeUpstream, Reply
from tests.fakes._formats import input_tokens

try:
    from playwright.sync_api import Locator, expect
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from tests.e2e.conftest import ChatPage

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

OpenContext = Callable[..., "ChatPage"]

SLOW_TEXT = (
    "Streaming works: this reply arrives in small pieces, one after another, "
    "so you can read it while the model is still writing."
)
LONG_TEXT = " ".join(f"word{n}" for n in range(1, 61))
XSS_TEXT = (
    "Careful with this markup:\n\n"
    "<img src=x onerror=alert(1)>\n\n"
    "<script>alert(1)</script>\n\n"
    'Inline <b onclick="alert(1)">bold</b>, an <iframe src="javascript:alert(1)"></iframe> '
    "and a [link](javascript:alert(1))."
)


def _text(locator: Locator) -> str:
    return locator.inner_text().strip()


# -- streaming -------------------------------------------------------------------------


def test_connect_and_send_two_messages_streaming(chat: ChatPage, upstream: FakeUpstream) -> None:
    """A reply is visible while it streams; the second turn sends the whole history."""
    chat.connect(upstream)
    upstream.enqueue(Reply(text=SLOW_TEXT, chunks=8, first_token_delay=0.05, token_delay=0.2))

    chat.type_and_send("Does streaming work?")
    partial = chat.wait_for_partial_reply()
    assert SLOW_TEXT.startswith(partial.strip())
    assert len(partial.strip()) < len(SLOW_TEXT)
    chat.wait_until_idle()
    expect(chat.replies.last.locator(".content")).to_have_text(SLOW_TEXT)

    # Shift+Enter adds a line; Enter sends.
    chat.page.fill("#input", "Second message")
    chat.page.press("#input", "Shift+Enter")
    chat.page.keyboard.type("on two lines")
    expect(chat.user_messages).to_have_count(1)
    chat.page.press("#input", "Enter")
    chat.wait_until_idle(2)

    expect(chat.user_messages).to_have_count(2)
    expect(chat.replies).to_have_count(2)
    assert _text(chat.user_messages.nth(1)) == "Second message\non two lines"
    expect(chat.replies.nth(1).locator(".content")).to_contain_text("You said: Second message")
    expect(chat.page.locator("#input")).to_have_value("")

    second = upstream.chat_requests[-1].json
    turns = [(m["role"], m["content"]) for m in second["messages"] if m["role"] != "system"]
    assert turns == [
        ("user", "Does streaming work?"),
        ("assistant", SLOW_TEXT),
        ("user", "Second message\non two lines"),
    ]
    assert second["stream"] is True
    chat.screenshot("desktop-chat.png")


def test_stop_keeps_the_partial_reply_marked_stopped(chat: ChatPage, upstream: FakeUpstream) -> None:
    chat.connect(upstream)
    upstream.enqueue(Reply(text=LONG_TEXT, chunks=30, first_token_delay=0.05, token_delay=0.2))

    chat.type_and_send("Count slowly, please.")
    chat.wait_for_partial_reply()
    expect(chat.page.locator("#stop")).to_be_visible()
    chat.page.click("#stop")

    reply = chat.replies.last
    expect(reply.locator(".stopped-marker")).to_have_text("(stopped)")
    chat.wait_until_idle()
    shown = _text(reply.locator(".content"))
    assert shown and LONG_TEXT.startswith(shown) and len(shown) < len(LONG_TEXT)
    assert upstream.exchanges[-1].disconnected.wait(5), "the upstream request was not closed"

    conversation_id = chat.current_conversation_id()
    stored = chat.fetch_json(f"api/conversations/{conversation_id}")
    assert stored["status"] == 200
    last = stored["body"]["messages"][-1]
    assert (last["role"], last["stopped"], last["content"].strip()) == ("assistant", True, shown)

    chat.reload()
    expect(chat.page.locator("#api-key")).to_have_value("")  # the key stays on the server
    assert DEFAULT_API_KEY not in chat.page.content()
    expect(chat.replies).to_have_count(1)
    reply = chat.replies.last
    expect(reply.locator(".stopped-marker")).to_have_text("(stopped)")
    assert _text(reply.locator(".content")) == shown
    expect(chat.user_messages).to_have_text(["Count slowly, please."])

    # The conversation goes on after a stop.
    chat.send("Thanks, that is enough.")
    expect(chat.replies.last.locator(".content")).to_have_text("You said: Thanks, that is enough.")
    expect(chat.replies.last.locator(".stopped-marker")).to_have_count(0)


# -- the sidebar -----------------------------------------------------------------------


def test_switch_between_conversations_and_rename(chat: ChatPage, upstream: FakeUpstream) -> None:
    chat.connect(upstream)
    chat.send("alpha question")
    alpha = chat.current_conversation_id()

    chat.page.click("#new-chat")
    expect(chat.messages).to_have_count(0)
    expect(chat.conversations).to_have_count(2)
    chat.send("beta question")
    beta = chat.current_conversation_id()
    assert beta != alpha

    chat.conversation(alpha).locator(".conversation-open").click()
    expect(chat.user_messages).to_have_text(["alpha question"])
    expect(chat.reply_contents).to_have_text(["You said: alpha question"])
    assert chat.current_conversation_id() == alpha

    chat.conversation(beta).locator(".conversation-open").click()
    expect(chat.user_messages).to_have_text(["beta question"])
    assert chat.current_conversation_id() == beta

    chat.conversation(alpha).locator(".rename").click()
    rename = chat.conversation(alpha).locator(".rename-input")
    expect(rename).to_be_focused()
    rename.fill("Project Alpha")
    rename.press("Enter")
    expect(chat.conversation(alpha).locator(".conversation-title")).to_have_text("Project Alpha")
    # The shown conversation (beta) keeps its own title.
    expect(chat.page.locator("#chat-title")).not_to_have_text("Project Alpha")

    chat.reload()
    expect(chat.conversation(alpha).locator(".conversation-title")).to_have_text("Project Alpha")
    expect(chat.conversations).to_have_count(2)
    chat.conversation(alpha).locator(".conversation-open").click()
    expect(chat.page.locator("#chat-title")).to_have_text("Project Alpha")
    expect(chat.user_messages).to_have_text(["alpha question"])
    stored = chat.fetch_json(f"api/conversations/{alpha}")
    assert stored["body"]["conversation"]["title"] == "Project Alpha"


def test_export_downloads_markdown(chat: ChatPage, upstream: FakeUpstream, tmp_path: Path) -> None:
    chat.connect(upstream)
    chat.send("Please export me")
    item = chat.conversation(chat.current_conversation_id())

    item.locator(".export").click()
    with chat.page.expect_download() as download_info:
        item.locator(".export-md").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".md")
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    markdown = target.read_text(encoding="utf-8")
    assert "Please export me" in markdown
    assert "You said: Please export me" in markdown
    assert markdown.lstrip().startswith("#")


# -- safety ----------------------------------------------------------------------------


def test_hostile_reply_renders_inert(chat: ChatPage, upstream: FakeUpstream) -> None:
    """HTML in a reply is shown as text, both while streaming and from history."""
    chat.connect(upstream)
    upstream.enqueue(Reply(text=XSS_TEXT, chunks=6))
    chat.send("Show me some HTML")

    for attempt in ("live", "after reload"):
        reply = chat.replies.last.locator(".content")
        expect(reply).to_contain_text("<img src=x onerror=alert(1)>")
        expect(reply).to_contain_text("<script>alert(1)</script>")
        messages = chat.page.locator("#messages")
        for selector in ("script", "img", "iframe", "[onerror]", "[onclick]", 'a[href^="javascript:"]'):
            assert messages.locator(selector).count() == 0, f"{selector} rendered ({attempt})"
        if attempt == "live":
            chat.reload()
            expect(chat.replies).to_have_count(1)


def test_second_browser_sees_nothing_of_the_first(
    open_context: OpenContext, upstream: FakeUpstream
) -> None:
    first = open_context()
    first.connect(upstream)
    first.send("a secret for the first browser")
    secret_id = first.current_conversation_id()

    second = open_context()
    expect(second.page.locator("#conversations-empty")).to_be_visible()
    expect(second.conversations).to_have_count(0)
    expect(second.messages).to_have_count(0)
    expect(second.page.locator("#status")).not_to_have_attribute("data-state", "connected")
    assert second.fetch_status("GET", f"api/conversations/{secret_id}") == 404
    assert second.fetch_status("GET", f"api/conversations/{secret_id}/export?format=md") == 404

    second.connect(upstream)
    expect(second.conversations).to_have_count(1)
    own = second.current_conversation_id()
    assert own != secret_id
    assert second.fetch_status("PATCH", f"api/conversations/{secret_id}", {"title": "stolen"}) == 404
    assert second.fetch_status("DELETE", f"api/conversations/{secret_id}") == 404
    body = {"message": "let me in", "conversation_id": secret_id}
    assert second.fetch_status("POST", "api/chat/stream", body) == 404
    listed = second.fetch_json("api/conversations")
    assert [c["id"] for c in listed["body"]["conversations"]] == [own]

    first.reload()
    expect(first.conversations).to_have_count(1)
    expect(first.conversation(secret_id).locator(".conversation-title")).not_to_have_text("stolen")
    expect(first.user_messages).to_have_text(["a secret for the first browser"])
    expect(first.replies).to_have_count(1)


# -- usage and errors --------------------------------------------------------------------


def test_token_usage_per_reply_and_running_total(chat: ChatPage, upstream: FakeUpstream) -> None:
    chat.connect(upstream)
    upstream.enqueue(Reply(text="One two three four five six", chunks=3), Reply(text="Seven", chunks=1))
    chat.send("First question")
    chat.send("Second question")

    requests = upstream.chat_requests
    expected = [(input_tokens(requests[0].json), 3), (input_tokens(requests[1].json), 1)]
    assert expected[1][0] > expected[0][0]  # the history is counted again
    usages = chat.replies.locator(".usage")
    expect(usages).to_have_count(2)
    for index, (tokens_in, tokens_out) in enumerate(expected):
        usage = usages.nth(index)
        expect(usage).to_have_attribute("data-input-tokens", str(tokens_in))
        expect(usage).to_have_attribute("data-output-tokens", str(tokens_out))
        expect(usage).to_have_text(f"{tokens_in} in · {tokens_out} out tokens")
    total = sum(i + o for i, o in expected)
    expect(chat.page.locator("#total-usage")).to_have_text(f"Σ {total} tokens")

    chat.reload()
    expect(chat.replies.locator(".usage")).to_have_count(2)
    expect(chat.page.locator("#total-usage")).to_have_text(f"Σ {total} tokens")
    chat.page.click("#new-chat")
    expect(chat.page.locator("#total-usage")).to_be_hidden()


def test_upstream_errors_show_inline_and_the_chat_goes_on(chat: ChatPage, upstream: FakeUpstream) -> None:
    """A refused key, a server error and a stream that breaks: each is one line in the chat."""
    chat.connect(upstream)
    failures: list[tuple[Fail | Reply, str]] = [
        (Fail(status=401, message="Incorrect API key provided."), "Incorrect API key provided"),
        (Fail(status=500, message="The engine is on fire."), "The engine is on fire"),
        (Reply(ending="error", end_after=2, chunks=6), "error"),
    ]
    for number, (failure, words) in enumerate(failures, start=1):
        upstream.enqueue(failure)
        chat.send(f"Attempt {number}")
        expect(chat.errors).to_have_count(number)
        error = chat.errors.last
        expect(error).to_be_visible()
        message = _text(error)
        assert words.lower() in message.lower()
        assert "\n" not in message and len(message) < 300 and "Traceback" not in message
        expect(chat.page.locator("#input")).to_have_value(f"Attempt {number}")  # given back

        sent = chat.user_messages.count()
        chat.page.press("#input", "Enter")  # send it again: this time the upstream answers
        chat.wait_until_idle(sent + 1)
        expect(chat.replies.last.locator(".content")).to_have_text(f"You said: Attempt {number}")
        expect(chat.page.locator("#status")).to_have_attribute("data-state", "connected")

    # The broken stream's partial text stays, marked incomplete, above its error.
    expect(chat.page.locator("#messages > li.message.assistant.incomplete")).to_have_count(1)
    expect(chat.errors).to_have_count(3)
    chat.screenshot("desktop-errors.png")

    # A failed turn leaves no half turn behind: not in the history sent upstream,
    # not in what the server stored.
    roles = [m["role"] for m in upstream.chat_requests[-1].json["messages"] if m["role"] != "system"]
    assert roles == ["user", "assistant"] * 2 + ["user"]
    chat.reload()
    expect(chat.user_messages).to_have_text(["Attempt 1", "Attempt 2", "Attempt 3"])
    expect(chat.reply_contents).to_have_text([f"You said: Attempt {n}" for n in (1, 2, 3)])
    expect(chat.errors).to_have_count(0)


# -- layout ------------------------------------------------------------------------------


def test_phone_layout_with_drawers(open_context: OpenContext, upstream: FakeUpstream) -> None:
    chat = open_context(phone=True)
    page = chat.page
    sidebar, settings = page.locator("#sidebar"), page.locator("#settings")
    expect(sidebar).to_be_hidden()
    expect(settings).to_be_hidden()
    expect(page.locator("#toggle-sidebar")).to_be_visible()

    page.click("#toggle-settings")
    expect(settings).to_be_visible()
    chat.connect(upstream)
    expect(settings).to_be_hidden()  # connecting closes the drawer
    chat.send("Hello from a phone")
    expect(chat.replies.last.locator(".content")).to_have_text("You said: Hello from a phone")
    expect(page.locator("#input")).to_be_in_viewport()
    expect(chat.replies.last).to_be_in_viewport()
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    chat.screenshot("phone-chat.png")

    page.click("#toggle-sidebar")
    expect(sidebar).to_be_visible()
    expect(sidebar).to_be_in_viewport()
    expect(page.locator("#toggle-sidebar")).to_have_attribute("aria-expanded", "true")
    expect(chat.conversations).to_have_count(1)
    chat.screenshot("phone-sidebar.png")
    page.click("#new-chat")
    expect(sidebar).to_be_hidden()
    expect(chat.messages).to_have_count(0)

    page.click("#toggle-sidebar")
    expect(chat.conversations).to_have_count(2)
    page.locator("#conversations > li:not(.current) .conversation-open").click()
    expect(sidebar).to_be_hidden()
    expect(chat.user_messages).to_have_text(["Hello from a phone"])


# -- the README screenshot -----------------------------------------------------------------

README_QUESTION = "How can I read a huge CSV file in Python without loading it all into memory?"
README_ANSWER = """Iterate over it row by row: `csv.DictReader` reads one line at a time, \
so memory use stays flat no matter how big the file is.

```python
import csv

def total_sales(path: str) -> float:
    total = 0.0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            total += float(row["amount"])
    return total
```

A few tips:

- Pass `newline=""` so quoted fields with line breaks parse correctly.
- For dataframe work, `pandas.read_csv(path, chunksize=100_000)` gives you the same \
streaming in chunks.
"""


def test_readme_screenshot(chat: ChatPage, upstream: FakeUpstream) -> None:
    """A realistic conversation, saved as an artifact (and as docs/screenshot.png on request).

    Set ``UPDATE_SCREENSHOTS=1`` to refresh the README's screenshot.
    """
    for title in ("Trip ideas for Lisbon", "SQL window functions explained"):
        assert chat.fetch_status("POST", "api/conversations", {"title": title}) in (200, 201)
    chat.reload()
    chat.connect(upstream, model="gpt-4o", system_prompt="You are a concise Python expert.")
    upstream.enqueue(Reply(text=README_ANSWER, chunks=12))
    chat.send(README_QUESTION)
    chat.conversation(chat.current_conversation_id()).locator(".rename").click()
    rename = chat.page.locator(".rename-input")
    rename.fill("Reading large CSV files")
    rename.press("Enter")
    expect(chat.page.locator("#chat-title")).to_have_text("Reading large CSV files")
    expect(chat.replies.last.locator("pre code")).to_contain_text("csv.DictReader")
    expect(chat.page.locator("#status")).to_have_attribute("data-state", "connected")
    chat.page.evaluate("() => document.activeElement?.blur()")
    chat.page.mouse.move(640, 20)

    path = chat.screenshot("desktop-readme.png")
    if os.environ.get("UPDATE_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshot.png"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
    # The whole desktop window, not a cropped element: the PNG header's width and height.
    header = path.read_bytes()[16:24]
    size = (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big"))
    viewport = chat.page.viewport_size
    assert viewport is not None and size == (viewport["width"], viewport["height"]), size
