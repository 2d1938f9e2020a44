"""Prompts and responses are data: shown literally, never as markup or terminal codes."""

from __future__ import annotations

import re

from rich.text import Text

# C0/C1 controls (ESC starts ANSI sequences), DEL, and the invisible Unicode characters
# that reorder or hide text (bidi overrides, zero-width marks, line separators).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def literal(value: str | None, style: str = "") -> Text:
    """`value` as plain text: markup stays text, control characters become `\\x1b` etc."""
    return Text(_UNSAFE.sub(_escape, value or ""), style=style, no_wrap=False)


def one_line(value: str | None, style: str = "") -> Text:
    """Like `literal`, on one line: newlines and tabs shown as `⏎` and spaces."""
    flat = (value or "").replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    return Text(_UNSAFE.sub(_escape, flat), style=style, no_wrap=True, overflow="ellipsis")
