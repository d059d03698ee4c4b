"""``chatbot.cli.main`` in-process: dispatch to the web server, exit statuses, import/export."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from pathlib import Path

import pytest

import chatbot
from chatbot import ConfigError, Settings, StoreError
from chatbot.cli import main
from tests.fakes import DEFAULT_API_KEY, FakeUpstream


class _FakeServer:
    def __init__(self, outcome: BaseException | None = None) -> None:
        self.calls: list[Settings] = []
        self.outcome = outcome

    def serve(self, settings: Settings) -> None:
        self.calls.append(settings)
        if self.outcome is not None:
            raise self.outcome


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> _FakeServer:
    """Stands in for ``chatbot.server`` (the web stack is tested on its own)."""
    fake = _FakeServer()
    module = types.ModuleType("chatbot.server")
    module.serve = fake.serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chatbot.server", module)
    return fake


@pytest.mark.parametrize(
    ("argv", "host", "port"),
    [
        ([], "127.0.0.1", 8080),
        (["web"], "127.0.0.1", 8080),
        (["ui", "--port", "9001"], "127.0.0.1", 9001),
        (["serve", "--host", "0.0.0.0", "--port", "0"], "0.0.0.0", 0),
        (["--host", "::1"], "::1", 8080),
    ],
)
def test_no_command_or_web_serves(
    server: _FakeServer, argv: list[str], host: str, port: int
) -> None:
    assert main(argv) == 0
    [settings] = server.calls
    assert (settings.host, settings.port) == (host, port)


def test_flags_override_host_and_port_from_the_environment(
    server: _FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST", "10.0.0.1")
    monkeypatch.setenv("PORT", "7000")
    assert main(["web", "--port", "7001"]) == 0
    assert (server.calls[0].host, server.calls[0].port) == ("10.0.0.1", 7001)


def test_a_bad_setting_exits_2_without_traceback(
    server: _FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "eighty")
    assert main(["web"]) == 2
    assert (
        capsys.readouterr().err
        == "chatbot: PORT must be a whole number from 0 to 65535, got 'eighty'.\n"
    )
    assert server.calls == []


def test_serve_outcomes_become_exit_statuses(
    server: _FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.outcome = ConfigError(
        "CHATBOT_SECRET_KEY is not a Fernet key.", variable="CHATBOT_SECRET_KEY"
    )
    assert main([]) == 2
    assert capsys.readouterr().err == "chatbot: CHATBOT_SECRET_KEY is not a Fernet key.\n"
    server.outcome = KeyboardInterrupt()
    assert main([]) == 130
    assert capsys.readouterr() == ("", "")
    server.outcome = OSError(98, "Address already in use")
    assert main(["--port", "8123"]) == 1
    assert capsys.readouterr().err == (
        "chatbot: cannot serve on 127.0.0.1:8123: Address already in use\n"
    )
    # A task group's wrapping does not hide the one error inside.
    server.outcome = ExceptionGroup("unhandled errors in a TaskGroup", [StoreError("Disk full.")])
    assert main([]) == 1
    assert capsys.readouterr().err == "chatbot: Disk full.\n"


# -- import and export --------------------------------------------------------------


@pytest.fixture
def configured(
    fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Path:
    """The environment of ``chatbot cli`` against the fake upstream; returns the data dir."""
    monkeypatch.setenv("PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("BASE_URL", fake_upstream.url)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _chat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, *flags: str
) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["cli", "--json", "-m", text, *flags]) == 0
    return str(json.loads(capsys.readouterr().out)["conversation_id"])


def _export(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["export", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _imported_id(output: str) -> str:
    match = re.search(r"Imported conversation ([0-9a-f]{32}) ", output)
    assert match, output
    return match.group(1)


def test_export_then_import_elsewhere_round_trips(
    configured: Path,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    conversation_id = _chat(monkeypatch, capsys, "carry me over")
    status, exported, _ = _export(capsys, conversation_id, "--format", "json")
    assert status == 0
    document = json.loads(exported)
    assert document["conversation"]["title"] == "carry me over"
    assert document["conversation"]["provider"] == "openai"
    assert [m["content"] for m in document["messages"]] == [
        "carry me over",
        "You said: carry me over",
    ]
    export_file = tmp_path / "conversation.json"
    export_file.write_text(exported)

    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert main(["import", str(export_file)]) == 0
    out = capsys.readouterr().out
    assert "(2 messages)" in out
    imported_id = _imported_id(out)
    assert imported_id != conversation_id
    status, again, _ = _export(capsys, imported_id, "--format", "json")
    assert status == 0
    assert json.loads(again) == document

    status, markdown, _ = _export(capsys, imported_id)
    assert status == 0
    assert markdown.startswith("# carry me over\n\n_openai · gpt-4o · ")
    assert "## Assistant\n\nYou said: carry me over\n" in markdown

    # The imported conversation goes on in the terminal, with its history as context.
    _chat(monkeypatch, capsys, "and then?", "--resume", imported_id)
    contents = [m["content"] for m in fake_upstream.chat_requests[-1].json["messages"]]
    assert contents[-3:] == ["carry me over", "You said: carry me over", "and then?"]


def test_export_to_a_file(
    configured: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    conversation_id = _chat(monkeypatch, capsys, "to a file")
    target = tmp_path / "out.md"
    assert _export(capsys, conversation_id, "-o", str(target)) == (0, "", "")
    assert "## You\n\nto a file\n" in target.read_text()


def test_export_of_an_unknown_conversation_exits_1(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(capsys, "missing") == (1, "", "chatbot: No conversation 'missing'.\n")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"messages": []}), "not a conversation export"),
    ],
)
def test_import_of_a_bad_file_exits_1_with_one_line(
    configured: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str,
    complaint: str,
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["import", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"chatbot: {path}: {complaint}") and err.count("\n") == 1


def test_import_of_a_missing_file_exits_2(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", "/nonexistent/conversation.json"]) == 2
    assert capsys.readouterr().err.startswith("chatbot: cannot read /nonexistent/conversation.json")


def test_import_reads_stdin(
    configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conversation_id = _chat(monkeypatch, capsys, "via stdin")
    _, exported, _ = _export(capsys, conversation_id, "--format", "json")
    monkeypatch.setattr(sys, "stdin", io.StringIO(exported))
    assert main(["import", "-"]) == 0
    imported_id = _imported_id(capsys.readouterr().out)
    status, markdown, _ = _export(capsys, imported_id)
    assert status == 0 and "via stdin" in markdown


def test_usage_errors_return_2_and_version_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert main(["cli", "--no-such-flag"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"chatbot {chatbot.__version__}\n"


def test_stdin_that_is_not_utf8_is_a_usage_error(
    configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe\x00"), "utf-8"))
    assert main(["cli", "-m", "what is this?"]) == 2
    assert capsys.readouterr().err == "chatbot: stdin is not UTF-8 text.\n"
