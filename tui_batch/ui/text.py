"""Prompts and responses are data: shown literally, never as markup or terminal codes.
The escaping is the core's (`core.text`), shared with every print of the CLI."""

from __future__ import annotations

from rich.text import Text

from tui_batch.core.text import escape_controls


def literal(value: str | None, style: str = "") -> Text:
    """`value` as plain text: markup stays text, control characters become `\\x1b` etc."""
    return Text(escape_controls(value), style=style, no_wrap=False)


def one_line(value: str | None, style: str = "") -> Text:
    """Like `literal`, on one line: newlines and tabs shown as `⏎` and spaces."""
    flat = (value or "").replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    return Text(escape_controls(flat), style=style, no_wrap=True, overflow="ellipsis")
