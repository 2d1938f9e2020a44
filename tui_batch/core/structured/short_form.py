"""The short form of a schema, for the common case: fields separated by commas (or by new
lines, and then a hint may hold commas; on one line a hint's comma is its own unless a
`name:` follows it), each `name: type` with the types `str`, `int`,
`float`, `bool` or choices `a|b|c`; a range `lo..hi` (either end may be left out) bounds
a number, or a text's length; `[]` after the type makes a list of it; text after `#` is
a hint shown to the model. Every field is required and no other field is allowed.

    sentiment: positive|negative|neutral, stars: int 1..5, headline: str ..60

`short_form_schema` makes the JSON Schema; `to_short_form` gives the short form of a
schema that has one (a round trip: the tests check it with hypothesis).
"""

from __future__ import annotations

import math
import re
from typing import Any

from tui_batch.core.errors import SettingsError
from tui_batch.core.text import has_surrogates

SHORT_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
}
_SHORT_NAMES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
_FIELD = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_-]*)\s*(?::(?P<type>.*)|(?P<bare>\s.*)?)")
_NAMED = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_-]*\s*:")
_RANGE = re.compile(r"(?P<low>[-+0-9.eE]*)\.\.(?P<high>[-+0-9.eE]*)")


def short_form_schema(text: str) -> dict[str, Any]:
    """The short form (see the module's docstring) as a JSON Schema object; a
    SettingsError of one line for a mistake."""
    if has_surrogates(text):
        raise SettingsError("Schema: holds bytes that are not UTF-8 (a lone surrogate)")
    properties: dict[str, Any] = {}
    for number, part in enumerate(_field_texts(text), start=1):
        spec = part.strip()
        if not spec:
            continue
        where = f"Schema: field {number}"
        spec, _, hint = spec.partition("#")
        spec = spec.strip()
        match = _FIELD.fullmatch(spec)
        if match is None:
            raise SettingsError(
                f"{where} ({shortened(spec) or 'empty'}): expected name: type, a name of "
                "letters, digits, _ and -"
            )
        name = match["name"]
        if name in properties:
            raise SettingsError(f"Schema: field {name!r} is given twice")
        type_text = match["type"] if match["type"] is not None else (match["bare"] or "")
        schema = _short_type(type_text.strip(), f"Schema: field {name!r}")
        if hint.strip():
            target = schema["items"] if schema.get("type") == "array" else schema
            target["description"] = hint.strip()
        properties[name] = schema
    if not properties:
        raise SettingsError("Schema: no fields given (say name: type, ...)")
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _field_texts(text: str) -> list[str]:
    """Each field's text: a line each, or on one line split at commas, where a comma in a
    hint is the hint's own unless a `name:` follows it (`n: int # a count, b: str`)."""
    if "\n" in text:
        return text.split("\n")
    fields: list[str] = []
    for part in text.split(","):
        if fields and "#" in fields[-1] and not _NAMED.match(part):
            fields[-1] += "," + part
        else:
            fields.append(part)
    return fields


def _short_type(text: str, where: str) -> dict[str, Any]:
    is_list = text.endswith("[]")
    if is_list:
        text = text[:-2].strip()
    if "[]" in text:
        raise SettingsError(f"{where}: [] goes at the end of the type (str[], int 1..5[])")
    words = text.split(None, 1) if text else ["str"]
    head, rest = words[0], (words[1].strip() if len(words) > 1 else "")
    if "|" in text:
        labels = [label.strip() for label in text.split("|")]
        if any(not label for label in labels):
            raise SettingsError(f"{where}: a choice between | is empty")
        schema: dict[str, Any] = {"type": "string", "enum": list(dict.fromkeys(labels))}
    elif head in SHORT_TYPES:
        schema = {"type": SHORT_TYPES[head]}
        if rest:
            schema.update(_short_range(rest, schema["type"], where))
    else:
        raise SettingsError(
            f"{where}: unknown type {shortened(head)!r} (use str, int, float, bool, or a|b|c "
            "for choices; a range lo..hi after it; [] for a list)"
        )
    return {"type": "array", "items": schema} if is_list else schema


# The largest bound a range may have: every number up to it is exact in JSON readers
# everywhere (2**53 - 1, JavaScript's safe integers), and nothing past it is a sane bound.
MAX_BOUND = 2**53 - 1


def _short_range(text: str, kind: str, where: str) -> dict[str, Any]:
    match = _RANGE.fullmatch(text.replace(" ", ""))
    if match is None or kind == "boolean" or not (match["low"] or match["high"]):
        raise SettingsError(f"{where}: {shortened(text)!r} is not a range like 1..5 or ..60")
    number = int if kind in ("integer", "string") else float
    bounds = []
    for end in (match["low"], match["high"]):
        try:
            bound = number(end) if end else None
        except ValueError:
            name = "a whole number" if number is int else "a number"
            raise SettingsError(f"{where}: {end!r} in {text!r} is not {name}") from None
        if bound is not None and not (math.isfinite(bound) and abs(bound) <= MAX_BOUND):
            raise SettingsError(
                f"{where}: {shortened(end)!r} in the range is too large (at most {MAX_BOUND:,})"
            )
        bounds.append(bound)
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise SettingsError(f"{where}: the range {text} is empty ({low} > {high})")
    if kind == "string":
        if (low is not None and low < 0) or (high is not None and high < 0):
            raise SettingsError(f"{where}: a text's length cannot be negative")
        keys = ("minLength", "maxLength")
    else:
        keys = ("minimum", "maximum")
    return {key: bound for key, bound in zip(keys, bounds, strict=True) if bound is not None}


def to_short_form(schema: dict[str, Any]) -> str | None:
    """The short form of a schema, if it has one (the short form's own schemas do)."""
    properties = schema.get("properties")
    if (
        set(schema) - {"type", "properties", "required", "additionalProperties"}
        or schema.get("type") != "object"
        or not isinstance(properties, dict)
        or not properties
        or schema.get("required") != list(properties)
        or schema.get("additionalProperties") is not False
    ):
        return None
    parts = []
    hinted = False
    for name, field_schema in properties.items():
        spec = _short_field(field_schema)
        if spec is None or not _FIELD.fullmatch(name):
            return None
        text, hint = spec
        hinted = hinted or bool(hint)
        parts.append((f"{name}: {text}", hint))
    if len(parts) == 1 and any(_NAMED.match(after) for after in parts[0][1].split(",")[1:]):
        return None  # one line, where a comma in its hint would start a field
    if hinted:
        return "\n".join(f"{text} # {hint}" if hint else text for text, hint in parts)
    return ", ".join(text for text, _ in parts)


def _short_field(schema: Any) -> tuple[str, str] | None:
    if not isinstance(schema, dict):
        return None
    is_list = schema.get("type") == "array"
    hint = schema.get("description", "")
    if is_list:
        if set(schema) - {"type", "items"}:
            return None
        schema = schema.get("items")
        if not isinstance(schema, dict):
            return None
        hint = schema.get("description", "")
    if not isinstance(hint, str) or "\n" in hint:
        return None
    rest = {k: v for k, v in schema.items() if k != "description"}
    enum = rest.get("enum")
    if enum is not None:
        if (
            set(rest) != {"type", "enum"}
            or rest["type"] != "string"
            or not all(isinstance(v, str) and v.strip() == v and v for v in enum)
            or any(c in v for v in enum for c in "|,#\n")
            or len(set(enum)) != len(enum)
        ):
            return None
        text = "|".join(enum)
    else:
        kind = rest.get("type")
        if kind not in _SHORT_NAMES:
            return None
        keys = ("minLength", "maxLength") if kind == "string" else ("minimum", "maximum")
        if set(rest) - {"type", *keys} or kind == "boolean" and len(rest) > 1:
            return None
        low, high = rest.get(keys[0]), rest.get(keys[1])
        text = _SHORT_NAMES[kind]
        if low is not None or high is not None:
            text += f" {'' if low is None else low}..{'' if high is None else high}"
    return (text + "[]" if is_list else text), hint


def without_hints(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its fields' descriptions (for a one-line short form)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    bare = {}
    for name, field_schema in properties.items():
        if isinstance(field_schema, dict):
            field_schema = {k: v for k, v in field_schema.items() if k != "description"}
            items = field_schema.get("items")
            if isinstance(items, dict):
                field_schema["items"] = {k: v for k, v in items.items() if k != "description"}
        bare[name] = field_schema
    return {**schema, "properties": bare}


def shortened(text: str, limit: int = 120) -> str:
    """`text` on one line, at most `limit` characters (for messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
