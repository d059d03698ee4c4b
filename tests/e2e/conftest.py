"""Browser end-to-end fixtures: the real server, a fake model upstream, headless Chromium.

The chatbot server runs as a child process (``python -m chatbot web``), exactly as
a user starts it: its own event loop, a SQLite database in a temporary data
directory, and no provider in its environment, so every browser has to connect
first. Its model upstream is the fake from :mod:`tests.fakes`, running in this
process so tests can script its next replies (slow streams, hostile markup,
errors). Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright's sync API;
it is launched once per session and every test gets fresh browser contexts, so no
cookie, and therefore no server session, leaks from one test into another.

Each page is watched while the test runs: an uncaught script error, a
Content-Security-Policy violation or a JavaScript dialog fails the test, and so
does a traceback or the upstream API key showing up in the server's log. Failed
tests leave a screenshot in ``test-artifacts/``.

Without ``/usr/bin/chromium`` (or Playwright) the tests are skipped, except when
``CI`` is set: then they fail, because CI is supposed to install it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from tests._environment import unavailable
from tests.fakes import DEFAULT_API_KEY, FakeUpstream

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Dialog,
        Locator,
        Page,
        ViewportSize,
    )

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

# Headless and quiet: without the networking flags Chromium keeps calling Google's
# hosts, which a closed network refuses (and which a test has no business doing).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}

# Variables that would configure a provider, a database or the server's behaviour:
# the child server must start from none of the developer's settings.
_SERVER_ENV_DROP = re.compile(
    r"^(PROVIDER|MODEL|BASE_URL|MAX_TOKENS|SYSTEM_PROMPT|API_KEY|[A-Z]+_API_KEY|PORT|HOST"
    r"|DATABASE_URL|LOG_LEVEL|LOG_FORMAT|CHATBOT_.*|OTEL_.*)$"
)
_SERVER_START_TIMEOUT = 30.0
_SERVER_STOP_TIMEOUT = 15.0


def _check_browser() -> None:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    if importlib.util.find_spec("playwright") is None:
        unavailable("playwright is not installed: `pip install playwright` (never `playwright install`)")


# -- the server ----------------------------------------------------------------------

_STARTUP_LINE = re.compile(r"chatbot web UI on (http://\S+)")


@attrs.define
class ChatbotServer:
    """The chatbot server under test, a child process writing its output to ``log_path``.

    It starts in the background: :attr:`url` waits until it serves, so Chromium can
    launch meanwhile.
    """

    process: subprocess.Popen[bytes]
    log_path: Path
    _url: str = ""

    @property
    def url(self) -> str:
        """The base URL, once the server answers (fails the test if it never does)."""
        if not self._url:
            self._url = self._wait_until_serving()
        return self._url

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def _wait_until_serving(self) -> str:
        """Read the URL from the startup line, then wait until the API answers."""
        deadline = time.monotonic() + _SERVER_START_TIMEOUT
        url = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the chatbot server exited with {self.process.returncode} while starting:\n"
                    + self.log_since(0),
                    pytrace=False,
                )
            if not url and (found := _STARTUP_LINE.search(self.log_since(0))):
                url = found.group(1).rstrip("/")
            if url:
                try:
                    with urllib.request.urlopen(url + "/api/status", timeout=1) as response:
                        if response.status == 200:
                            return url
                except OSError:
                    pass
            time.sleep(0.05)
        pytest.fail(f"the chatbot server did not start within {_SERVER_START_TIMEOUT:.0f} s:\n"
                    + self.log_since(0), pytrace=False)


@pytest.fixture(scope="module")
def chatbot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatbotServer]:
    """The real server, started once, with no provider configured (connect-first)."""
    _check_browser()  # no server for tests that are skipped anyway
    workdir = tmp_path_factory.mktemp("chatbot-server")  # no .env file here
    env = {name: value for name, value in os.environ.items() if not _SERVER_ENV_DROP.match(name)}
    env.update(
        CHATBOT_DATA_DIR=str(workdir / "data"),
        # A scripted upstream 500 is answered at once instead of after backed-off retries.
        CHATBOT_RETRY_ATTEMPTS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH")))),
    )
    log_path = workdir / "server.log"
    command = [sys.executable, "-m", "chatbot", "web", "--host", "127.0.0.1", "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    server = ChatbotServer(process, log_path)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(
                    f"the chatbot server ignored SIGTERM for {_SERVER_STOP_TIMEOUT:.0f} s:\n"
                    + server.log_since(0),
                    pytrace=False,
                )
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "server.log").write_bytes(log_path.read_bytes())
    if process.returncode != 0:
        pytest.fail(
            f"the chatbot server exited with {process.returncode} after SIGTERM:\n"
            + server.log_since(0),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def server_log_is_clean(chatbot_server: ChatbotServer) -> Iterator[None]:
    """Nothing the test did made the server log a traceback or the upstream API key."""
    offset = chatbot_server.log_size()
    yield
    if chatbot_server.process.poll() is not None:
        pytest.fail(f"the chatbot server died (exit {chatbot_server.process.returncode}):\n"
                    + chatbot_server.log_since(offset), pytrace=False)
    log = chatbot_server.log_since(offset)
    assert DEFAULT_API_KEY not in log, "the server logged the upstream API key"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The fake model server (reset for this test); any key but ``DEFAULT_API_KEY`` gets a 401."""
    return fake_upstream


# -- the browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium, launched once per module.

    Module scope, not session: Playwright's sync API keeps an event loop running in
    this thread while it is open, which would break every async test after it.
    """
    _check_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@attrs.define(slots=False)  # Playwright stores wrappers on bound methods' objects
class _Watch:
    """What went wrong in a page while the test ran."""

    problems: list[str] = attrs.Factory(list)

    def console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or text.startswith("Uncaught"):
            self.problems.append(f"console {message.type}: {text}")

    def csp(self, violation: str) -> None:
        self.problems.append(f"CSP violation: {violation}")

    def page_error(self, error: Exception) -> None:
        self.problems.append(f"uncaught page error: {error}")

    def dialog(self, kind: str, text: str) -> None:
        self.problems.append(f"a {kind} dialog opened: {text!r}")


# Reports each CSP violation to the test (the binding survives reloads).
_CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (event) => {
  window.__reportCspViolation(`${event.violatedDirective} blocked ${event.blockedURI || 'inline'}`
    + ` at ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.fixture
def open_context(
    browser: Browser, chatbot_server: ChatbotServer, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ChatPage]]:
    """Open a new browser (its own cookies, so its own server session) and load the UI.

    ``phone=True`` opens a phone-sized touch screen; other keywords go to
    ``browser.new_context``.
    """
    opened: list[tuple[BrowserContext, ChatPage]] = []
    watch = _Watch()

    def open_page(*, phone: bool = False, **options: Any) -> ChatPage:
        context = browser.new_context(
            base_url=chatbot_server.url,
            viewport=PHONE if phone else DESKTOP,
            is_mobile=phone,
            has_touch=phone,
            color_scheme="light",
            locale="en-US",
            timezone_id="UTC",
            reduced_motion="reduce",
            accept_downloads=True,
            **options,
        )
        context.set_default_timeout(10_000)
        context.expose_function("__reportCspViolation", watch.csp)
        context.add_init_script(_CSP_LISTENER)
        page = context.new_page()
        page.on("console", watch.console)
        page.on("pageerror", watch.page_error)

        def on_dialog(dialog: Dialog) -> None:
            watch.dialog(dialog.type, dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        chat = ChatPage(page)
        opened.append((context, chat))
        chat.load()
        return chat

    yield open_page

    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for index, (_, chat) in enumerate(opened):
            with contextlib.suppress(Exception):
                chat.page.screenshot(path=ARTIFACTS / f"failed-{request.node.name}-{index}.png")
    for context, _ in opened:
        context.close()
    assert not watch.problems, "the page reported problems:\n" + "\n".join(watch.problems)


@pytest.fixture
def chat(open_context: Callable[..., ChatPage]) -> ChatPage:
    """The UI in a fresh desktop browser, not connected yet."""
    return open_context()


# -- the page --------------------------------------------------------------------------

_LAST_REPLY_STREAMS_TEXT = """() => {
  const replies = document.querySelectorAll('#messages li.message.assistant');
  const last = replies[replies.length - 1];
  if (!last || !last.classList.contains('streaming') || !document.body.classList.contains('streaming')) {
    return null;
  }
  const text = last.querySelector('.content').textContent;
  return text.length > 0 ? text : null;
}"""


_CONNECTED = """() => document.getElementById('status').dataset.state === 'connected'
  && document.getElementById('model-options').options.length > 0"""

_IDLE = """(userMessages) => !document.body.classList.contains('streaming')
  && !document.querySelector('#messages > li.message.streaming')
  && !document.getElementById('send').hidden
  && document.querySelectorAll('#messages > li.message.user').length >= userMessages"""

_PAGE_READY = """() => {
  const byId = (id) => document.getElementById(id);
  const status = byId('status').dataset.state;
  const listed = byId('conversations').childElementCount > 0 || !byId('conversations-empty').hidden;
  const providers = byId('provider').options.length > 0;
  const models = status !== 'connected' || byId('model-options').options.length > 0;
  return listed && providers && models;
}"""


@attrs.define
class ChatPage:
    """The chat UI in one browser tab, with the steps the tests share."""

    page: Page

    def load(self) -> None:
        """Open the UI and wait until its first status and conversation list arrived."""
        self.page.goto("/", wait_until="commit")
        self._settle()

    def reload(self) -> None:
        self.page.reload(wait_until="commit")
        self._settle()

    def _settle(self) -> None:
        """Wait until the page has its status, its conversation list and, when connected,
        the model list.

        The model list is fetched from the upstream in the background; waiting for it
        keeps that request from taking a reply the test scripts next.
        """
        self.wait_for(_PAGE_READY)

    # locators
    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages > li.message")

    @property
    def replies(self) -> Locator:
        return self.page.locator("#messages > li.message.assistant")

    @property
    def reply_contents(self) -> Locator:
        """The rendered text of each reply (without its usage line and buttons)."""
        return self.page.locator("#messages > li.message.assistant > .content")

    @property
    def user_messages(self) -> Locator:
        return self.page.locator("#messages > li.message.user")

    @property
    def errors(self) -> Locator:
        return self.page.locator("#messages > li.message.error")

    @property
    def conversations(self) -> Locator:
        return self.page.locator("#conversations > li[data-id]")

    def conversation(self, conversation_id: str) -> Locator:
        return self.page.locator(f'#conversations > li[data-id="{conversation_id}"]')

    # steps
    def connect(
        self,
        upstream: FakeUpstream,
        *,
        model: str = "gpt-4o",
        api_key: str = DEFAULT_API_KEY,
        system_prompt: str = "",
    ) -> None:
        """Connect the session to the fake upstream as an OpenAI endpoint, through the form."""
        from playwright.sync_api import expect

        page = self.page
        page.select_option("#provider", "openai")
        page.fill("#api-key", api_key)
        page.fill("#model", model)
        page.fill("#base-url", upstream.url)
        if system_prompt:
            page.fill("#system-prompt", system_prompt)
        page.click("#connect")
        self.wait_for(_CONNECTED)
        expect(page.locator("#status")).to_contain_text(model)
        expect(page.locator("#connect-error")).to_be_hidden()

    def type_and_send(self, text: str) -> None:
        """Type a message and press Enter (a turn must not be running)."""
        self.wait_for(_IDLE, 0)
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")

    def wait_until_idle(self, user_messages: int = 0) -> None:
        """Wait until no turn streams, every reply is final and there are that many user messages."""
        self.wait_for(_IDLE, user_messages)

    def send(self, text: str) -> None:
        """Send a message and wait for the whole reply."""
        count = self.user_messages.count()
        self.type_and_send(text)
        self.wait_until_idle(count + 1)

    def wait_for(self, predicate: str, arg: Any = None) -> Any:
        """Wait until a script returns a truthy value, checked on every animation frame.

        Faster than ``expect`` for states that change within a few frames, and the
        whole condition is evaluated at one instant.
        """
        return self.page.wait_for_function(predicate, arg=arg, polling="raf").json_value()

    def wait_for_partial_reply(self) -> str:
        """Wait for a moment when the last reply shows some text while it still streams.

        The check runs in the page in one go (text, reply state and page state), so it
        cannot be fooled by a stream that finished between two separate checks.
        """
        text = self.wait_for(_LAST_REPLY_STREAMS_TEXT)
        assert isinstance(text, str)
        return text

    def current_conversation_id(self) -> str:
        from playwright.sync_api import expect

        current = self.page.locator("#conversations > li.current[data-id]")
        expect(current).to_have_count(1)
        value = current.get_attribute("data-id")
        assert value
        return value

    def fetch_status(self, method: str, path: str, body: Any = None) -> int:
        """The HTTP status of an API call made by the page itself (its cookie, its headers)."""
        status = self.page.evaluate(
            """async ([method, path, body]) => {
                 const init = {method, credentials: 'same-origin',
                               headers: {'X-Requested-With': 'chatbot', 'Accept': 'application/json'}};
                 if (body !== null) {
                   init.headers['Content-Type'] = 'application/json';
                   init.body = JSON.stringify(body);
                 }
                 return (await fetch(path, init)).status;
               }""",
            [method, path, body],
        )
        assert isinstance(status, int)
        return status

    def fetch_json(self, path: str) -> Any:
        return self.page.evaluate(
            """async (path) => {
                 const response = await fetch(path, {credentials: 'same-origin',
                   headers: {'X-Requested-With': 'chatbot', 'Accept': 'application/json'}});
                 return {status: response.status, body: await response.json()};
               }""",
            path,
        )

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=path, full_page=full_page, animations="disabled", caret="hide")
        return path
