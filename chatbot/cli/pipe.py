"""Non-interactive mode: one prompt in, the reply out, for scripts and pipes.

``git diff | chatbot cli -m "review this"``: the piped text and ``-m`` form one
prompt (piped text first, a blank line, then the message). Only the reply goes to
stdout, streamed as it arrives and ended with a newline; with ``--json`` one JSON
object is printed at the end instead. Nothing else is printed on success; errors
are the caller's to report (``chatbot.cli.main`` maps them to exit statuses).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TextIO

from chatbot._config import ProviderConfig, Settings
from chatbot._messages import Reply
from chatbot.cli.session import Overrides, open_session

__all__ = ["build_prompt", "run_pipe"]


def build_prompt(piped: str | None, message: str | None) -> str:
    """The one prompt made of piped text and ``-m``; empty if both are blank."""
    parts = [part.strip() for part in (piped, message) if part and part.strip()]
    return "\n\n".join(parts)


def reply_document(reply: Reply) -> dict[str, object]:
    """What ``--json`` prints."""
    return {
        "reply": reply.text,
        "usage": {
            "input_tokens": reply.usage.input_tokens,
            "output_tokens": reply.usage.output_tokens,
        },
        "model": reply.model,
        "conversation_id": reply.conversation_id,
    }


async def run_pipe(
    settings: Settings,
    env: Mapping[str, str],
    config: ProviderConfig,
    prompt: str,
    *,
    out: TextIO,
    as_json: bool = False,
    resume: str | None = None,
    overrides: Overrides | None = None,
) -> Reply:
    """Send ``prompt`` and write the reply to ``out``; returns the reply.

    Raises:
        ConfigError: an override is invalid.
        ProviderError: the upstream failed (part of the reply may have been written).
        ChatbotError: any other failure (store, unknown conversation to resume...).
    """
    async with open_session(settings, env, config, resume=resume, overrides=overrides) as session:
        conversation_id = session.conversation_id
        async with session.supervisor.open_turn(
            conversation_id, prompt, config=session.config
        ) as turn:
            async for delta in turn:
                if not as_json:
                    out.write(delta)
                    out.flush()
            reply = await turn.wait_reply()
    if as_json:
        out.write(json.dumps(reply_document(reply), ensure_ascii=False) + "\n")
    elif not reply.text.endswith("\n"):
        out.write("\n")
    out.flush()
    return reply
