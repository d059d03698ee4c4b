"""The interactive chat in a real pseudo-terminal (pexpect), against the fake upstream."""

from __future__ import annotations

import re

import pexpect

from tests.fakes import Fail, FakeUpstream, Hang, Reply

from .conftest import Cli, wait_until

PROMPT = "you>"


def _started(cli: Cli, *args: str) -> pexpect.spawn:
    child = cli.spawn(*args)
    child.expect(r"OpenAI · gpt-4o")
    child.expect(PROMPT)
    return child


def _quit(child: pexpect.spawn) -> int:
    child.sendline("quit")
    child.expect("Goodbye!")
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def _leave_with(child: pexpect.spawn, key: str) -> int:
    child.sendcontrol(key)
    child.expect("Goodbye!")
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def test_banner_reply_and_quit(cli: Cli, fake_upstream: FakeUpstream) -> None:
    child = cli.spawn()
    child.expect(r"chatbot \d+\.\d+\.\d+ · OpenAI · gpt-4o")
    child.expect(r"new conversation [0-9a-f]{32}")
    child.expect(PROMPT)
    child.sendline("hello from the pty")
    child.expect("You said: hello from the pty")
    child.expect(PROMPT)
    # A trailing backslash continues the message on the next line.
    child.sendline("line one\\")
    child.expect(r"\.\.\.>")
    child.sendline("line two")
    child.expect("You said: line one")
    child.expect(PROMPT)
    assert _quit(child) == 0
    first, second = fake_upstream.chat_requests
    assert first.json["messages"][-1]["content"] == "hello from the pty"
    assert second.json["messages"][-1]["content"] == "line one\nline two"
    # The prompt's history is kept across runs, in the data directory.
    assert "hello from the pty" in (cli.data_dir / "cli_history").read_text()


def test_ctrl_c_stops_the_reply_and_keeps_it_marked_stopped(
    cli: Cli, fake_upstream: FakeUpstream
) -> None:
    full = "You said: " + "tell me a long story " * 3
    fake_upstream.enqueue(Reply(chunks=60, token_delay=0.1))
    child = _started(cli)
    child.sendline("tell me a long story " * 3)
    child.expect("You said")  # streaming has begun
    child.sendintr()
    child.expect(r"\[stopped\]")
    child.expect(PROMPT)
    # The upstream request was closed, not left to run on.
    assert fake_upstream.exchanges[-1].disconnected.wait(5)

    child.sendline("/history")
    child.expect(r"assistant: (You[^\r\n]*?) \[stopped\]")
    partial = child.match.group(1)
    assert full.startswith(partial) and len(partial) < len(full.rstrip())
    child.expect(PROMPT)

    # The conversation goes on, with the stopped reply in its context.
    child.sendline("and now?")
    child.expect("You said: and now\\?")
    child.expect(PROMPT)
    contents = [m["content"] for m in fake_upstream.chat_requests[-1].json["messages"][1:]]
    assert contents == [("tell me a long story " * 3).strip(), partial, "and now?"]
    # At an empty prompt, Ctrl-C leaves.
    assert _leave_with(child, "c") == 0


def test_slash_commands_help_and_model(cli: Cli, fake_upstream: FakeUpstream) -> None:
    child = _started(cli)
    child.sendline("/help")
    for usage in ("/model", "/provider", "/system", "/history", "/save", "/resume", "/models"):
        child.expect(re.escape(usage))
    child.expect(PROMPT)
    child.sendline("/model fake-model")
    child.expect("Model: fake-model")
    child.expect(PROMPT)
    child.sendline("which model?")
    child.expect("You said: which model\\?")
    child.expect(PROMPT)
    child.sendline("/models")
    child.expect(r"\* fake-model")
    child.expect(PROMPT)
    # Ctrl-C interrupts a command that waits on the upstream.
    fake_upstream.enqueue(Hang())
    child.sendline("/models")
    wait_until(lambda: len(fake_upstream.requests) == 3)
    child.sendintr()
    child.expect(r"\[interrupted\]")
    child.expect(PROMPT)
    assert fake_upstream.exchanges[-1].disconnected.wait(5)
    child.sendline("/provider claude")
    child.expect(r"error: PROVIDER=claude needs an API key: set ANTHROPIC_API_KEY")
    child.expect(PROMPT)
    child.sendline("/nonsense")
    child.expect(r"error: Unknown command /nonsense")
    child.expect(PROMPT)
    assert _leave_with(child, "d") == 0
    assert [r.json["model"] for r in fake_upstream.chat_requests] == ["fake-model"]


def test_upstream_error_prints_one_line_and_the_conversation_continues(
    cli: Cli, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Fail(status=500, message="upstream exploded"))
    child = _started(cli)
    child.sendline("first")
    child.expect(r"error: [^\r\n]*upstream exploded")
    child.expect(PROMPT)
    child.sendline("second")
    child.expect("You said: second")
    child.expect(PROMPT)
    assert _quit(child) == 0
    # The failed turn left nothing behind: the second request carries one message.
    assert [m["content"] for m in fake_upstream.chat_requests[-1].json["messages"][1:]] == [
        "second"
    ]


def test_conversations_resume_and_save(cli: Cli, fake_upstream: FakeUpstream) -> None:
    child = _started(cli)
    child.sendline("remember the canary 4711")
    child.expect("You said: remember the canary 4711")
    child.expect(PROMPT)
    child.sendline("/new")
    child.expect(r"New conversation ([0-9a-f]{32})")
    child.expect(PROMPT)
    child.sendline("/conversations")
    child.expect(r"([0-9a-f]{8})\s+\S+ \S+\s+2 msgs\s+remember the canary 4711")
    short_id = child.match.group(1)
    child.expect(PROMPT)
    child.sendline(f"/resume {short_id}")
    child.expect(r"Resumed [0-9a-f]{32}: remember the canary 4711 \(2 messages\)")
    child.expect(PROMPT)
    child.sendline("/save saved.md")
    child.expect("Saved 2 messages")
    child.expect(PROMPT)
    assert _quit(child) == 0
    saved = (cli.cwd / "saved.md").read_text()
    assert "## You\n\nremember the canary 4711\n" in saved
    assert "## Assistant\n\nYou said: remember the canary 4711\n" in saved

    # Another run picks the conversation up again, with its history as context.
    child = cli.spawn("--resume", short_id)
    child.expect(r"resumed conversation [0-9a-f]{32}")
    child.expect(r"remember the canary 4711: 2 messages; /history shows them")
    child.expect(PROMPT)
    child.sendline("what was the canary?")
    child.expect(r"You said: what was the canary\?")
    child.expect(PROMPT)
    assert _leave_with(child, "d") == 0
    contents = [m["content"] for m in fake_upstream.chat_requests[-1].json["messages"][1:]]
    assert contents[:2] == ["remember the canary 4711", "You said: remember the canary 4711"]
