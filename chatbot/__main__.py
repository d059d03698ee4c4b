"""``python -m chatbot``: the same as the ``chatbot`` command."""

from __future__ import annotations

from chatbot.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
