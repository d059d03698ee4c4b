"""Pipe mode (``chatbot cli -m`` / stdin not a terminal) against the fake upstream.

The essentials run ``python -m chatbot`` as a subprocess (``cli.run``); the finer
points call ``main()`` in-process (``cli.call``), which is the same code, faster.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import anyio
import pytest

from chatbot.store import open_store
from tests.fakes import Fail, FakeUpstream, Reply

from .conftest import Cli, wait_until


def _only_conversation(cli: Cli) -> str:
    async def listed() -> list[str]:
        async with open_store(f"sqlite:///{cli.data_dir / 'chatbot.db'}") as store:
            return [info.id for info in await store.list_conversations(None)]

    [conversation_id] = anyio.run(listed)
    return conversation_id


def test_stdout_holds_exactly_the_reply(cli: Cli, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(text="Line one.\n\n**Two** — ✓", chunks=7))
    result = cli.run("cli", "-m", "say it")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Line one.\n\n**Two** — ✓\n"
    assert result.stderr == ""
    [request] = fake_upstream.chat_requests
    assert request.json["stream"] is True
    assert request.json["messages"][-1] == {"role": "user", "content": "say it"}


def test_stdin_and_message_form_one_prompt(cli: Cli, fake_upstream: FakeUpstream) -> None:
    result = cli.run("cli", "-m", "review this", input="diff --git a/x b/x\n+added\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You said: diff --git a/x b/x\n+added\n\nreview this\n"
    [request] = fake_upstream.chat_requests
    assert request.json["messages"][-1]["content"] == "diff --git a/x b/x\n+added\n\nreview this"


def test_stdin_alone_is_the_prompt(cli: Cli) -> None:
    result = cli.call("cli", input="hi from a pipe\n")
    assert (result.returncode, result.stdout) == (0, "You said: hi from a pipe\n")


def test_nothing_to_send_is_a_usage_error(cli: Cli, fake_upstream: FakeUpstream) -> None:
    result = cli.call("cli", input="  \n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("chatbot: nothing to send")
    assert fake_upstream.chat_requests == []


def test_json_prints_reply_usage_and_model(cli: Cli, fake_upstream: FakeUpstream) -> None:
    result = cli.run("cli", "--json", "-m", "count my words")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"reply", "usage", "model", "conversation_id"}
    assert document["reply"] == "You said: count my words"
    assert document["model"] == "gpt-4o"
    usage = document["usage"]
    assert set(usage) == {"input_tokens", "output_tokens"}
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert result.stdout.count("\n") == 1  # one object, nothing streamed before it


def test_flags_override_the_environment_for_one_run(cli: Cli, fake_upstream: FakeUpstream) -> None:
    result = cli.call("cli", "-m", "hi", "--model", "fake-model", "--system", "Answer in French.")
    assert result.returncode == 0, result.stderr
    [request] = fake_upstream.chat_requests
    assert request.json["model"] == "fake-model"
    assert request.json["messages"][0] == {"role": "system", "content": "Answer in French."}


def test_provider_flag_takes_that_providers_key(cli: Cli, fake_upstream: FakeUpstream) -> None:
    """``--provider ollama`` needs no key and sends none."""
    fake_upstream.flavour = "ollama"
    env = {"PROVIDER": "", "OPENAI_API_KEY": ""}
    result = cli.call("cli", "--provider", "ollama", "--model", "llama3.2", "-m", "hi", env=env)
    assert result.returncode == 0, result.stderr
    [request] = fake_upstream.chat_requests
    assert request.json["model"] == "llama3.2"
    assert "authorization" not in request.headers


def test_resume_continues_a_stored_conversation(cli: Cli, fake_upstream: FakeUpstream) -> None:
    first = json.loads(cli.call("cli", "--json", "-m", "first question").stdout)
    second = cli.call("cli", "--resume", first["conversation_id"][:10], "-m", "second question")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "You said: second question\n"
    contents = [m["content"] for m in fake_upstream.chat_requests[-1].json["messages"][1:]]
    assert contents == ["first question", "You said: first question", "second question"]


def test_resume_of_an_unknown_conversation_fails(cli: Cli) -> None:
    result = cli.call("cli", "--resume", "nope", "-m", "hi")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "chatbot: No conversation 'nope'.\n"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PROVIDER": "claude"},
            "chatbot: PROVIDER=claude needs an API key: set ANTHROPIC_API_KEY (or API_KEY)",
        ),
        ({"PROVIDER": "gemini"}, "chatbot: PROVIDER=gemini is not a known provider"),
        ({"PROVIDER": "ollama", "MAX_TOKENS": "abc"}, "chatbot: MAX_TOKENS must be a whole number"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(
    bare_cli: Cli, env: dict[str, str], message: str
) -> None:
    result = bare_cli.run("cli", "-m", "hi", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            (),
            {"PROVIDER": "ollama", "BASE_URL": "ftp://x"},
            "chatbot: BASE_URL: Base URL 'ftp://x'",
        ),
        (("--base-url", "nope"), {"PROVIDER": "ollama"}, "chatbot: --base-url: Base URL 'nope'"),
        (("--provider", "gemini"), {}, "chatbot: --provider=gemini is not a known provider"),
        (
            (),
            {"PROVIDER": "ollama", "CHATBOT_ENV_FILE": "/nonexistent/.env"},
            "chatbot: CHATBOT_ENV_FILE",
        ),
    ],
)
def test_more_configuration_errors(
    bare_cli: Cli, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = bare_cli.call("cli", *args, "-m", "hi", env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_provider_flag_without_its_key_exits_2(cli: Cli) -> None:
    result = cli.call("cli", "--provider", "anthropic", "-m", "hi")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "chatbot: PROVIDER=claude needs an API key: set ANTHROPIC_API_KEY"
    )


def test_upstream_error_exits_1_with_one_line(cli: Cli, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Fail(status=500, message="the fake broke"))
    result = cli.run("cli", "-m", "hi")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("chatbot: ")
    assert "the fake broke" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_rejected_key_exits_1(cli: Cli) -> None:
    result = cli.run("cli", "-m", "hi", env={"OPENAI_API_KEY": "sk-wrong"})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("chatbot: ") and result.stderr.count("\n") == 1
    assert "HTTP 401" in result.stderr
    assert "sk-wrong" not in result.stderr


@pytest.mark.parametrize(
    "failure", [Fail(status=429, retry_after="0"), Fail(status=400, message="bad model")]
)
def test_other_upstream_errors_exit_1(cli: Cli, fake_upstream: FakeUpstream, failure: Fail) -> None:
    fake_upstream.enqueue(failure)
    result = cli.call("cli", "-m", "hi")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("chatbot: ") and result.stderr.count("\n") == 1


def test_interrupt_exits_130_quietly_and_keeps_the_partial_reply(
    cli: Cli, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(Reply(chunks=50, token_delay=0.1))
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot", "cli", "--json", "-m", "x" * 40],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: bool(fake_upstream.chat_requests))
        time.sleep(0.3)  # let a few deltas through; the assertions below do not depend on it
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, out, err) == (130, "", "")
    assert fake_upstream.exchanges[-1].disconnected.wait(5)
    exported = cli.call("export", _only_conversation(cli), "--format", "json")
    last = json.loads(exported.stdout)["messages"][-1]
    assert last["stopped"] is True
    assert ("You said: " + "x" * 40).startswith(last["content"])
