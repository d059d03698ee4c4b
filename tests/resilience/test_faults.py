"""Upstream faults through the whole stack: retries, statuses, messages and history.

Each row of :data:`FAULTS` scripts the fake upstream for one turn and says what must
come of it: how many attempts reached the upstream, the HTTP status and error code
the API answers with (or the SSE ``error`` event that follows the deltas already
sent), and, for a fault that is retried away, the reply. Every row runs on each wire
format it applies to, and every run also checks what must hold after any fault:

* the stored history holds the whole turn or nothing of it (never a user message
  without its reply), and the next turn in the same conversation works and does
  not send the failed message upstream;
* another browser's conversation, in flight on the same upstream at the same time,
  gets its whole reply and keeps its own history;
* the API key appears in no response.

The same faults through the command line (pipe mode) end with one line on stderr,
exit status 1, and a stored conversation without half a turn.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
import pytest
from werkzeug.datastructures import Headers

from chatbot.store import open_store
from tests.fakes._formats import split_text
from tests.fakes.upstream import Behaviour, Fail, Hang, Reply, Reset

from .conftest import (
    PATIENT,
    POLICY,
    PROVIDERS,
    SECRET_KEY,
    Browser,
    TimedUpstream,
    message_texts,
    open_stack,
)

pytestmark = pytest.mark.anyio

QUESTION: Final = "what is the capital of France?"
ECHO: Final = f"You said: {QUESTION}"
#: The first two of the five deltas a cut-short reply sends before it goes wrong.
PARTIAL: Final = tuple(split_text(ECHO, 5)[:2])
BIG: Final = ("0123456789abcde\n" * (5 * 2**20 // 16))[: 5 * 2**20]  # 5 MiB of text
#: The other browser's reply, held by the fake until the faulty turn's first attempt has
#: arrived (see ``test_upstream_fault``), so it is in flight while the fault plays out.
BYSTANDER: Final = Reply(chunks=4, first_token_delay=0.05, token_delay=0.05)

ALL: Final = tuple(PROVIDERS)
KEYED: Final = ("claude", "openai", "openrouter")  # a key to refuse, a rate limit to hit


class UnclearMessage(AssertionError):
    """A user-facing error message shows a program's internals (an exception's repr)."""


#: What a Python exception looks like when its repr or str leaks into a sentence.
_INTERNALS: Final = re.compile(r"<\w+(Error|Exception)\b|\b\w+(Error|Exception)\(")


@attrs.frozen(kw_only=True)
class Fault:
    """One scripted upstream fault and what the API must make of it.

    Args:
        script: what the fake does with each attempt of the turn, in order.
        attempts: how many requests of the turn the fake must receive.
        status: the HTTP status of the answer (200 for a stream that fails mid-way).
        code: the error code (JSON body or final SSE event); ``None`` for success.
        reply: the reply text on success.
        stream: send the turn to ``/api/chat/stream`` rather than ``/api/chat``.
        partial: the deltas a stream must deliver before its ``error`` event.
        retry_after: the ``Retry-After`` header the answer must carry.
        min_wait: least seconds from one attempt's arrival to the next one's.
        says: text from the provider's own error message that must reach the user.
        hangs: a deadline must fire: the turn runs under the short deadlines of
            :data:`POLICY` (the others under :data:`PATIENT`), and the fake must see
            the client close the connection.
        marks: pytest marks for every run of the row.
    """

    name: str
    script: tuple[Behaviour, ...]
    providers: tuple[str, ...] = ALL
    attempts: int
    status: int = 200
    code: str | None = None
    reply: str = ECHO
    stream: bool = False
    partial: tuple[str, ...] = ()
    retry_after: str | None = None
    min_wait: float = 0.0
    says: str | None = None
    hangs: bool = False
    marks: tuple[pytest.MarkDecorator, ...] = ()


FAULTS: Final = (
    Fault(name="500-then-ok", script=(Fail(status=500), Reply()), attempts=2),
    Fault(
        name="500-every-time",
        script=(Fail(status=500),) * POLICY.max_attempts,
        attempts=POLICY.max_attempts,
        status=502,
        code="upstream_unavailable",
    ),
    Fault(
        name="500-every-time-streaming",
        script=(Fail(status=500),) * POLICY.max_attempts,
        attempts=POLICY.max_attempts,
        status=502,
        code="upstream_unavailable",
        stream=True,
    ),
    Fault(
        name="429-retry-after-then-ok",
        script=(Fail(status=429, retry_after="1"), Reply()),
        providers=KEYED,
        attempts=2,
        min_wait=1.0,
    ),
    Fault(
        name="429-retry-after-too-long",
        script=(Fail(status=429, retry_after="30"),),
        providers=KEYED,
        attempts=1,
        status=429,
        code="upstream_rate_limited",
        retry_after="30",
    ),
    Fault(
        name="529-then-ok",
        script=(Fail(status=529, message="Overloaded"), Reply()),
        providers=("claude",),
        attempts=2,
    ),
    Fault(
        name="529-every-time",
        script=(Fail(status=529, message="Overloaded"),) * POLICY.max_attempts,
        providers=("claude",),
        attempts=POLICY.max_attempts,
        status=502,
        code="upstream_unavailable",
    ),
    Fault(
        name="401",
        script=(Fail(status=401, message=f"Incorrect API key provided: {SECRET_KEY}."),),
        providers=KEYED,
        attempts=1,
        status=502,
        code="upstream_auth_failed",
        says="Incorrect API key provided",
    ),
    Fault(name="reset-then-ok", script=(Reset(), Reply()), attempts=2),
    Fault(
        name="reset-every-time",
        script=(Reset(),) * POLICY.max_attempts,
        attempts=POLICY.max_attempts,
        status=502,
        code="upstream_unavailable",
    ),
    Fault(
        name="hang-before-first-byte",
        script=(Hang(),),
        attempts=1,
        status=504,
        code="upstream_timeout",
        hangs=True,
    ),
    Fault(
        name="hang-after-headers",
        script=(Hang(stage="body"),),
        attempts=1,
        status=504,
        code="upstream_timeout",
        hangs=True,
    ),
    Fault(
        name="hang-mid-stream",
        script=(Reply(chunks=5, end_after=2, ending="hang"),),
        attempts=1,
        code="upstream_timeout",
        stream=True,
        partial=PARTIAL,
        hangs=True,
    ),
    Fault(
        name="reset-mid-stream",
        script=(Reply(chunks=5, end_after=2, ending="reset"),),
        attempts=1,
        code="upstream_unavailable",
        stream=True,
        partial=PARTIAL,
    ),
    Fault(
        name="malformed-json",
        script=(Reply(end_after=0, ending="malformed"),),
        attempts=1,
        status=502,
        code="upstream_bad_response",
    ),
    Fault(
        name="malformed-json-mid-stream",
        script=(Reply(chunks=5, end_after=2, ending="malformed"),),
        attempts=1,
        code="upstream_bad_response",
        stream=True,
        partial=PARTIAL,
    ),
    Fault(name="5mb-reply", script=(Reply(text=BIG, chunks=200),), attempts=1, reply=BIG),
)

CASES: Final = [
    pytest.param(fault, provider, id=f"{fault.name}-{provider}", marks=fault.marks)
    for fault in FAULTS
    for provider in fault.providers
]


async def _until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def _one_line(message: object) -> str:
    """The message, checked to be one non-empty line without the key."""
    assert isinstance(message, str) and message.strip()
    assert "\n" not in message and len(message) < 500
    assert SECRET_KEY not in message
    return message


def _assert_clear(message: str) -> None:
    """Checked last, so that a failure here means every other expectation held.

    Raises:
        UnclearMessage: the message shows an exception's repr.
    """
    if _INTERNALS.search(message):
        raise UnclearMessage(f"not a message for users: {message!r}")


def _alternates(texts: list[tuple[str, str]]) -> bool:
    """User, assistant, user, assistant...: whole turns only."""
    roles = [role for role, _ in texts]
    return len(roles) % 2 == 0 and roles == ["user", "assistant"] * (len(roles) // 2)


async def _faulty_turn(
    browser: Browser, fault: Fault
) -> tuple[int, list[tuple[str, Any]], Headers]:
    if fault.stream:
        status, events = await browser.stream(QUESTION)
        return status, events, Headers()
    status, body, headers = await browser.chat(QUESTION)
    return status, [("json", body)], headers


@pytest.mark.parametrize(("fault", "provider"), CASES)
async def test_upstream_fault(upstream: TimedUpstream, fault: Fault, provider: str) -> None:
    async with open_stack(upstream, POLICY if fault.hangs else PATIENT) as stack:
        browser = await stack.browser(provider)
        bystander = await stack.browser(provider)
        status, body, _ = await browser.chat("warm-up")
        assert (status, body["reply"]) == (200, "You said: warm-up")
        before = await browser.history()

        held = threading.Event()
        upstream.enqueue(attrs.evolve(BYSTANDER, hold=held), *fault.script)
        results: dict[str, Any] = {}

        async def other_conversation() -> None:
            results["bystander"] = await bystander.chat("bystander")

        async def release_the_bystander() -> None:
            await _until(lambda: upstream.chat_log(QUESTION))
            held.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_conversation)
            await _until(lambda: upstream.chat_log("bystander"))
            tg.start_soon(release_the_bystander)
            results["faulty"] = await _faulty_turn(browser, fault)

        # -- what the faulty turn got ------------------------------------------------
        status, events, headers = results["faulty"]
        attempts = upstream.chat_log(QUESTION)
        assert len(attempts) == fault.attempts
        assert status == fault.status
        message = ""
        if fault.code is None:
            assert events[0][1]["ok"] is True
            assert events[0][1]["reply"] == fault.reply
            after = [*before, ("user", QUESTION), ("assistant", fault.reply)]
        elif fault.partial:
            # Pieces that arrived in one read may come as one delta; the text is the same.
            assert {name for name, _ in events[:-1]} == {"delta"} and events[-1][0] == "error"
            assert "".join(data["text"] for _, data in events[:-1]) == "".join(fault.partial)
            assert events[-1][1]["code"] == fault.code
            message = _one_line(events[-1][1]["error"])
            after = before
        else:
            ((kind, error),) = events
            assert kind == "json"
            assert error["ok"] is False and error["code"] == fault.code
            message = _one_line(error["error"])
            if fault.says is not None:
                assert fault.says in message
            assert headers.get("Retry-After") == fault.retry_after
            after = before
        for (_, earlier), (_, later) in itertools.pairwise(attempts):
            # From the earlier attempt's arrival: its end is noted on the fake's thread,
            # which may come a moment after the client has the answer and starts waiting.
            assert later.arrived - earlier.arrived >= fault.min_wait
        if fault.hangs:
            last = attempts[-1][0]
            await _until(last.disconnected.is_set, timeout=2)

        # -- the history has the whole turn or nothing of it ---------------------------
        assert await browser.history() == after
        assert _alternates(after)

        # -- the other conversation was in flight meanwhile and is untouched ---------------
        ((_, other),) = upstream.chat_log("bystander")
        await _until(lambda: other.finished is not None)  # noted on the fake's own thread
        assert other.finished is not None
        assert other.arrived < attempts[0][1].arrived < other.finished
        status, body, _ = results["bystander"]
        assert (status, body["reply"]) == (200, "You said: bystander")
        assert await bystander.history() == [
            ("user", "bystander"),
            ("assistant", "You said: bystander"),
        ]

        # -- the conversation works again, and the failed message is not sent upstream ----
        status, body, _ = await browser.chat("again")
        assert (status, body["reply"]) == (200, "You said: again")
        ((exchange, _),) = upstream.chat_log("again")
        sent = message_texts(exchange.request)
        assert sent[-1] == "again"
        if fault.code is not None:
            assert sent == ["warm-up", "You said: warm-up", "again"]
        elif fault.reply == ECHO:
            assert sent == ["warm-up", "You said: warm-up", QUESTION, ECHO, "again"]
        assert await browser.history() == [
            *after,
            ("user", "again"),
            ("assistant", "You said: again"),
        ]

    for each in (browser, bystander):
        assert not any(SECRET_KEY in text for text in each.seen)
    _assert_clear(message)


# -- the command line, pipe mode ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CliFault:
    """A fault for ``chatbot cli -m``: the attempts the fake must see, what reaches stdout."""

    name: str
    script: tuple[Behaviour, ...]
    attempts: int
    stdout: str = ""
    hangs: bool = False
    marks: tuple[pytest.MarkDecorator, ...] = ()


CLI_ATTEMPTS: Final = 2
CLI_PROMPT: Final = "hi"
CLI_FAULTS: Final = (
    CliFault(
        name="500-every-time", script=(Fail(status=500),) * CLI_ATTEMPTS, attempts=CLI_ATTEMPTS
    ),
    CliFault(name="hang-before-first-byte", script=(Hang(),), attempts=1, hangs=True),
    CliFault(
        name="reset-mid-stream",
        script=(Reply(chunks=5, end_after=2, ending="reset"),),
        attempts=1,
        stdout="".join(split_text(f"You said: {CLI_PROMPT}", 5)[:2]),
    ),
)


async def _run_cli(
    upstream: TimedUpstream, data_dir: Path, *args: str, deadline: float | None = None
) -> tuple[int, str, str]:
    """``python -m chatbot cli ARGS`` against the fake, configured by the environment only."""
    env = {
        **os.environ,
        "PROVIDER": "openai",
        "OPENAI_API_KEY": SECRET_KEY,
        "MODEL": PROVIDERS["openai"][1],
        "BASE_URL": upstream.url,
        "CHATBOT_DATA_DIR": str(data_dir),
        "CHATBOT_RETRY_ATTEMPTS": str(CLI_ATTEMPTS),
        "PYTHONUNBUFFERED": "1",
    }
    if deadline is not None:
        env["CHATBOT_FIRST_TOKEN_TIMEOUT"] = env["CHATBOT_IDLE_TIMEOUT"] = str(deadline)
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "chatbot", "cli", *args], env=env, check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def _stored(data_dir: Path) -> dict[str, list[tuple[str, str]]]:
    async with open_store(f"sqlite:///{data_dir / 'chatbot.db'}") as store:
        infos = await store.list_conversations(None, limit=100)
        return {
            info.id: [(m.role.value, m.content) for m in await store.load_messages(info.id)]
            for info in infos
        }


@pytest.mark.parametrize(
    "fault", [pytest.param(fault, id=fault.name, marks=fault.marks) for fault in CLI_FAULTS]
)
async def test_cli_pipe_fault(upstream: TimedUpstream, tmp_path: Path, fault: CliFault) -> None:
    upstream.enqueue(*fault.script)
    deadline = POLICY.first_token_timeout if fault.hangs else None
    code, out, err = await _run_cli(upstream, tmp_path, "-m", CLI_PROMPT, deadline=deadline)

    assert code == 1
    assert out == fault.stdout
    assert err.startswith("chatbot: ") and err.endswith("\n"), err
    message = _one_line(err.removeprefix("chatbot: ").removesuffix("\n"))
    assert SECRET_KEY not in out
    assert len(upstream.chat_log(CLI_PROMPT)) == fault.attempts

    # Nothing of the failed turn was stored, and the conversation can go on.
    stored = await _stored(tmp_path)
    assert list(stored.values()) == [[]]
    (conversation_id,) = stored
    code, out, err = await _run_cli(upstream, tmp_path, "--resume", conversation_id, "-m", "again")
    assert (code, out, err) == (0, "You said: again\n", "")
    assert await _stored(tmp_path) == {
        conversation_id: [("user", "again"), ("assistant", "You said: again")]
    }
    _assert_clear(message)
