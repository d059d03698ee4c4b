"""The README's embedding example runs as written, against a fake Ollama."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream

README = Path(__file__).parents[1] / "README.md"


def _embedding_example() -> str:
    section = README.read_text().split("## Embedding", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the Embedding section has a Python example"
    return match.group(1)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_embedding_example_runs(
    backend: str, fake_upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_upstream.flavour = "ollama"  # no key, as a local Ollama
    source = _embedding_example().replace("http://localhost:11434", fake_upstream.url)
    if backend == "trio":
        source = source.replace("anyio.run(main)", 'anyio.run(main, backend="trio")')
    exec(compile(source, str(README), "exec"), {"__name__": "readme"})
    output = capsys.readouterr().out
    assert "You said: hello" in output
    assert "4 messages" in output
    assert [r.json["messages"][-1]["content"] for r in fake_upstream.chat_requests] == ["hello", "and again"]
