"""Text from models, servers and files is data: shown with its control characters escaped.

A model name a server sends, an answer, an error body, a file path or a CSV column can
hold ESC (which starts a terminal escape sequence: retitle, clear, recolour), other C0
and C1 controls, bidi overrides and zero-width marks (which reorder or hide text), or a
lone surrogate (which no terminal can encode). Every place that shows such text, the
CLI's prints and the dashboard alike, escapes it here: `\\x1b`, `\\u202e`, `\\ud800`.
"""

from __future__ import annotations

import re

# C0/C1 controls but tab and newline, DEL, the invisible characters that reorder or hide
# text (zero-width marks, bidi embeddings and isolates, line and paragraph separators,
# word joiners, the BOM), and lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ud800-\udfff]"
)
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str | None) -> str:
    """`text` with every unsafe character written out (`\\x1b`); tabs and newlines kept."""
    return _UNSAFE.sub(_escaped, text or "")


def one_line(text: str | None, width: int | None = None) -> str:
    """`text` on one line (runs of whitespace, newlines included, become one space),
    escaped, and cut to `width` characters with an ellipsis."""
    flat = escape_controls(_WHITESPACE.sub(" ", text or "").strip())
    if width is not None and len(flat) > width:
        return flat[: max(0, width - 1)] + "…"
    return flat


def escape_json(document: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with the unsafe characters
    its strings may still hold raw (DEL and C1 controls, bidi and zero-width marks, lone
    surrogates) written as `\\uXXXX` escapes: the same JSON, safe on a terminal."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", document)


def clean_text(text: str) -> str:
    """`text` as a file can hold it: a lone surrogate (from JSON's `"\\ud800"`), which
    UTF-8 cannot encode, becomes U+FFFD, as a UTF-8 decoder would make it."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a lone surrogate: bytes that were not UTF-8 (a command-line
    argument's, by Python's surrogateescape) or JSON's `"\\ud800"`. No file can hold one."""
    return _SURROGATE.search(text) is not None
