"""Structured answers compared field by field: an answer that is a JSON object as its
fields (nested ones as `a.b`), two answers' fields side by side, and each answer of a
compared row as a line shows it (only the fields that differ, where some do)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tui_batch.core.compare import CompareRow
from tui_batch.core.json_values import parse_json


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field of two structured answers: each one's value as text (None: absent)."""

    name: str
    before: str | None
    after: str | None

    @property
    def same(self) -> bool:
        return self.before == self.after


def answer_fields(text: str | None) -> dict[str, str] | None:
    """A JSON object answer as its fields (nested ones as `a.b`, lists as JSON), each
    value as text (strings as they are); None for an answer that is not an object."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        value = parse_json(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    fields: dict[str, str] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, dict) and value and depth < 4:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner, depth + 1)
        else:
            fields[prefix] = (
                value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            )

    walk("", value, 0)
    return fields


def field_changes(before: str | None, after: str | None) -> list[FieldChange] | None:
    """Two answers field by field (every field either has, in the first one's order);
    None unless both are JSON objects."""
    left, right = answer_fields(before), answer_fields(after)
    if left is None or right is None:
        return None
    names = [*left, *(name for name in right if name not in left)]
    return [FieldChange(name, left.get(name), right.get(name)) for name in names]


def answers_shown(row: CompareRow) -> list[str]:
    """Each answer as a row shows it: a failure's error; structured answers as their
    fields, only those that differ between the jobs where some do; else the text."""
    fields = [answer_fields(a.text) if a.success else None for a in row.answers]
    differing: set[str] = set()
    if all(f is not None for f in fields):
        names = {name for f in fields for name in f}  # type: ignore[union-attr]
        differing = {n for n in names if len({f.get(n) for f in fields}) > 1}  # type: ignore[union-attr]
    shown = []
    for answer, found in zip(row.answers, fields, strict=True):
        if answer.success is False:
            shown.append(f"(failed: {answer.error})")
        elif found is not None:
            keep = [n for n in found if not differing or n in differing]
            shown.append(" ".join(f"{n}={found[n]}" for n in keep))
        else:
            shown.append(answer.text or "")
    return shown
