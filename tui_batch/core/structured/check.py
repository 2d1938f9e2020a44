"""Every answer checked against its job's schema, whatever backend made it.

An answer that does not parse or does not validate (JSON Schema Draft 2020-12) is
*invalid*: its first error, with where it is (`$.stars: 10 is greater than the maximum
of 5`), says why. An answer cut off at max tokens says so, since more tokens is the fix.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from tui_batch.core.json_values import JsonValueError, parse_json
from tui_batch.core.structured.schema import AnswerSchema

CUT_OFF = "cut off at max tokens: raise max tokens"
# An invalid answer's error is "PATH: what is wrong"; stats group them by PATH.
MAX_ERROR = 300


@dataclass(frozen=True, slots=True)
class CheckedAnswer:
    """An answer's value (its parsed JSON, or its label) when valid; else `error`."""

    value: Any = None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


def check_answer(schema: AnswerSchema, text: str, finish_reason: str | None) -> CheckedAnswer:
    """The answer `text` checked against `schema`."""
    stripped = text.strip()
    if schema.choices:
        label = stripped
        if stripped.startswith('"'):  # a server's JSON string for an enum schema
            with contextlib.suppress(json.JSONDecodeError):
                label = json.loads(stripped)
        if label in schema.choices:
            return CheckedAnswer(label)
        if finish_reason == "length":
            return CheckedAnswer(error=CUT_OFF)
        shown = _shown(stripped) if stripped else "an empty answer"
        return CheckedAnswer(error=f"$: {shown} is not one of {', '.join(schema.choices)}")
    try:
        value = parse_json(stripped)
    except (json.JSONDecodeError, JsonValueError, RecursionError) as exc:
        if finish_reason == "length":
            return CheckedAnswer(error=CUT_OFF)
        if not stripped:
            return CheckedAnswer(error="$: an empty answer, not JSON")
        if isinstance(exc, RecursionError):
            return CheckedAnswer(error="$: JSON nested too deeply to read")
        if isinstance(exc, JsonValueError):
            return CheckedAnswer(error=f"$: not JSON: {exc}")
        return CheckedAnswer(
            error=f"$: not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
    try:
        error = _first_error(schema.validator, value)
    except RecursionError:
        error = "$: nested too deeply to check against the schema"
    if error is not None:
        return CheckedAnswer(error=error)
    return CheckedAnswer(value)


def _first_error(validator: Any, value: Any) -> str | None:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    message = " ".join(error.message.split())
    text = f"{error.json_path}: {message}"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def error_path(error: str | None) -> str:
    """Where an invalid answer's error is (`$.stars`), or what it is (cut off)."""
    if not error:
        return ""
    if error == CUT_OFF:
        return "cut off"
    path, sep, _ = error.partition(": ")
    return path if sep and path.startswith("$") else error


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
