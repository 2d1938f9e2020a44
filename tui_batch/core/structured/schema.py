"""What every answer of a job must be: a JSON Schema, or one of a few labels.

People give it as a JSON Schema (a file, or inline JSON), as a short form for the common
case, or as a list of choices:

    sentiment: positive|negative|neutral, stars: int 1..5, headline: str # a short title
    --choices positive,negative,neutral

The short form is fields separated by commas (or by new lines, and then a hint may hold
commas), each `name: type` with the types `str`, `int`, `float`, `bool` or choices
`a|b|c`; a range `lo..hi` (either end may be left out) bounds a number, or a text's
length; `[]` after the type makes a list of it; text after `#` is a hint shown to the
model. Every field is required and no other field is allowed.

`parse_schema` and `parse_choices` check what they are given once, before a model loads
or a job exists: bad JSON, an unknown type, or a keyword that cannot be enforced while
decoding is a SettingsError of one line. Nothing is dropped silently.

`AnswerSchema.check` checks an answer, whatever backend made it (`core.structured.check`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.errors import SettingsError, read_utf8

# Keywords no decoder we drive can enforce (llguidance, llama.cpp's grammars and the
# servers' structured outputs each lack some of them): refused, never dropped.
UNENFORCEABLE = (
    "not",
    "if",
    "then",
    "else",
    "uniqueItems",
    "patternProperties",
    "dependentSchemas",
    "dependentRequired",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "$dynamicRef",
    "$dynamicAnchor",
)
# Where a schema holds schemas of its own: a dict of them, a list, or one.
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONES = ("items", "additionalProperties")

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
_RANGE = re.compile(r"(?P<low>[-+0-9.eE]*)\.\.(?P<high>[-+0-9.eE]*)")
# The label a choices job's answer has in stats and exports.
LABEL = "label"
MAX_CHOICES = 1000


@dataclass(frozen=True)
class AnswerSchema:
    """The schema of a job's answers. `schema` is a JSON Schema (for choices, an enum of
    strings); `choices`, when set, means the answer is one of them, as plain text.
    `source` is what the person gave (short form, inline JSON, a file's path, the
    choices), kept to show it and to write it back to a job file."""

    schema: dict[str, Any]
    source: str = field(default="", compare=False)
    choices: tuple[str, ...] = ()
    kind: str = field(default="json", compare=False)  # short, json, file or choices

    # Reading and writing ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": self.schema, "source": self.source, "kind": self.kind}
        if self.choices:
            data["choices"] = list(self.choices)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> AnswerSchema:
        """A schema as `to_dict` wrote it (a job's record), checked again."""
        if not isinstance(data, Mapping) or not isinstance(data.get("schema"), dict):
            raise SettingsError("Schema: the stored schema is damaged")
        choices = data.get("choices") or ()
        if choices:
            made = parse_choices(list(choices))
        else:
            made = schema_from_json(data["schema"], "the stored schema")
        source = data.get("source")
        kind = data.get("kind")
        return cls(
            made.schema,
            source if isinstance(source, str) else made.source,
            made.choices,
            kind if kind in ("short", "json", "file", "choices") else made.kind,
        )

    def setting_value(self) -> Any:
        """What a job file keeps: the short form or JSON as given, a file's path, the
        choices as a list."""
        if self.choices:
            return list(self.choices)
        if self.kind == "file":
            return Path(self.source)
        if self.kind == "short":
            return self.source
        return json.dumps(self.schema, ensure_ascii=False)

    # What it says --------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """The answer's top-level fields (an object's properties), else none."""
        properties = self.schema.get("properties")
        return tuple(properties) if isinstance(properties, dict) else ()

    def columns(self) -> list[tuple[str, tuple[str, ...]]]:
        """The answer's columns in a table (a CSV export): each top-level field, an
        object's fields within it as `a.b`; each with the path to its value. A choices
        job's one column is `LABEL`; an answer that is not an object is one column,
        `output`."""
        if self.choices:
            return [(LABEL, ())]
        if not self.fields:
            return [("output", ())]
        return [(".".join(path), path) for path in _paths(self.schema, ())]

    def label_fields(self) -> dict[str, tuple[Any, ...]]:
        """Each field whose answer is one of a few values (an enum, choices), with them:
        a classification's labels. A choices job's is `LABEL`."""
        if self.choices:
            return {LABEL: self.choices}
        labels: dict[str, tuple[Any, ...]] = {}
        for name, schema in (self.schema.get("properties") or {}).items():
            values = _enum_of(schema) if isinstance(schema, dict) else None
            if values is not None:
                labels[name] = values
        return labels

    def describe(self) -> str:
        """One line: the choices, or the fields and their types (hints left out)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        short = to_short_form(_without_hints(self.schema))
        if short is not None:
            return short
        if self.fields:
            return "JSON with " + ", ".join(self.fields)
        return f"JSON ({self.schema.get('type', 'any')})"

    def note(self) -> str:
        """What the model is told (neither llama.cpp nor servers show it the schema):
        the fields, their types and hints, or the choices."""
        if self.choices:
            return "Answer with exactly one of these words and nothing else: " + ", ".join(
                self.choices
            )
        properties = self.schema.get("properties")
        if self.schema.get("type") == "object" and isinstance(properties, dict):
            lines = ["Answer with one JSON object and nothing else, with these fields:"]
            for name, schema in properties.items():
                lines.append(f"- {name}: {_field_note(schema)}")
            return "\n".join(lines)
        schema = json.dumps(self.schema, ensure_ascii=False, separators=(",", ":"))
        return f"Answer with JSON only, valid for this JSON Schema: {schema}"

    def response_format(self) -> dict[str, Any]:
        """The OpenAI `response_format` that asks a server to enforce it."""
        return {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": self.schema, "strict": True},
        }


def _without_hints(schema: dict[str, Any]) -> dict[str, Any]:
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


def _paths(schema: dict[str, Any], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        return [prefix]
    paths: list[tuple[str, ...]] = []
    for name, inner in properties.items():
        inner = inner if isinstance(inner, dict) else {}
        paths += _paths(inner, (*prefix, name)) if len(prefix) < 4 else [(*prefix, name)]
    return paths


def value_at(value: Any, path: tuple[str, ...]) -> Any:
    """The part of an answer's value a column holds (None where it has none)."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _field_note(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any value"
    parts = [_type_note(schema)]
    if isinstance(schema.get("description"), str):
        parts.append(f"({schema['description']})")
    return " ".join(parts)


def _type_note(schema: dict[str, Any]) -> str:
    values = _enum_of(schema)
    if values is not None:
        return "one of " + ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in values)
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"a list of: {_type_note(schema['items'])}"
    words = {
        "string": "text",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "object": "an object",
        "array": "a list",
    }
    note = words.get(kind, "a value") if isinstance(kind, str) else "a value"
    low = schema.get("minimum", schema.get("minLength"))
    high = schema.get("maximum", schema.get("maxLength"))
    unit = " characters" if kind == "string" else ""
    if low is not None and high is not None:
        note += f" from {low} to {high}{unit}"
    elif low is not None:
        note += f", at least {low}{unit}"
    elif high is not None:
        note += f", at most {high}{unit}"
    return note


def _enum_of(schema: dict[str, Any]) -> tuple[Any, ...] | None:
    values = schema.get("enum")
    if isinstance(values, list) and values:
        return tuple(values)
    return None


# Parsing ---------------------------------------------------------------------------------


def parse_schema(value: Any, folder: Path | None = None) -> AnswerSchema:
    """The `--schema` setting: a JSON Schema (a dict, inline JSON, or a `.json` file,
    relative to `folder` or the working folder), or the short form."""
    if isinstance(value, AnswerSchema):
        return value
    if isinstance(value, dict):
        return schema_from_json(value, "Schema")
    if isinstance(value, Path):
        return _schema_file(value)
    if not isinstance(value, str):
        raise SettingsError(f"Schema: expected text, got {value!r:.40}")
    text = value.strip()
    if not text:
        raise SettingsError("Schema: it is empty")
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"Schema: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        made = schema_from_json(document, "Schema")
        return AnswerSchema(made.schema, text, kind="json")
    path = Path(text).expanduser()
    if folder is not None and not path.is_absolute():
        path = folder / path
    if text.lower().endswith(".json") or ("\n" not in text and path.is_file()):
        return _schema_file(path)
    return parse_short_form(text)


def _schema_file(path: Path) -> AnswerSchema:
    path = path.expanduser()
    if not path.is_file():
        raise SettingsError(f"Schema: no such file {path}")
    text = read_utf8(path, "schema file", SettingsError)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"Schema: {path}, line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    made = schema_from_json(document, f"Schema: {path}")
    return AnswerSchema(made.schema, str(path.resolve()), kind="file")


def schema_from_json(document: Any, where: str) -> AnswerSchema:
    """A JSON Schema as given, checked: a valid Draft 2020-12 schema, with nothing in it
    that cannot be enforced while decoding."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(document, dict):
        raise SettingsError(f"{where}: a JSON Schema is an object, got {_json_kind(document)}")
    try:
        Draft202012Validator.check_schema(document)
    except SchemaError as exc:
        path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise SettingsError(
            f"{where}: not a valid JSON Schema at ${path}: {_short(exc.message)}"
        ) from None
    for keyword, path in _keywords(document, "$"):
        if keyword in UNENFORCEABLE:
            raise SettingsError(
                f"{where}: {keyword!r} at {path} cannot be enforced while decoding: remove it"
            )
    problem = grammar_problem(document)
    if problem:
        raise SettingsError(f"{where}: {problem}")
    return AnswerSchema(document, json.dumps(document, ensure_ascii=False), kind="json")


def grammar_problem(schema: dict[str, Any]) -> str | None:
    """What llguidance, which enforces a schema on local models, cannot do with this
    one; None when it can."""
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a dependency; answers are still checked
        return None
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error or messages:
        return "cannot be enforced while decoding: " + _short("; ".join(messages))
    return None


# How llguidance writes JSON: compact, one space after `,` and `:`, no new lines (a small
# model left free to add whitespace may add it forever).
JSON_OPTIONS = {"whitespace_flexible": False}


def _keywords(schema: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every keyword of a schema and its subschemas, with where it is."""
    if not isinstance(schema, dict):
        return
    for keyword in schema:
        yield keyword, path
    for keyword in _SCHEMA_MAPS:
        inner = schema.get(keyword)
        if isinstance(inner, dict):
            for name, sub in inner.items():
                yield from _keywords(sub, f"{path}.{keyword}.{name}")
    for keyword in _SCHEMA_LISTS:
        inner = schema.get(keyword)
        if isinstance(inner, list):
            for number, sub in enumerate(inner):
                yield from _keywords(sub, f"{path}.{keyword}[{number}]")
    for keyword in _SCHEMA_ONES:
        yield from _keywords(schema.get(keyword), f"{path}.{keyword}")


def parse_choices(value: Any) -> AnswerSchema:
    """`--choices a,b,c` (or a list): the answer is one of these labels, as plain text."""
    if isinstance(value, str):
        labels = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        labels = [part.strip() for part in value]
    else:
        raise SettingsError(f"Choices: expected text like a,b,c or a list, got {value!r:.40}")
    if any(not label for label in labels) or len(labels) < 2:
        raise SettingsError(
            "Choices: give at least two labels, separated by commas, none of them empty"
        )
    if len(labels) > MAX_CHOICES:
        raise SettingsError(f"Choices: at most {MAX_CHOICES} labels, got {len(labels)}")
    repeated = next((label for label in labels if labels.count(label) > 1), None)
    if repeated is not None:
        raise SettingsError(f"Choices: {repeated!r:.40} is given twice")
    if any(ord(c) < 32 for label in labels for c in label):
        raise SettingsError("Choices: a label holds a control character")
    return AnswerSchema(
        {"type": "string", "enum": labels}, ",".join(labels), tuple(labels), kind="choices"
    )


def parse_short_form(text: str) -> AnswerSchema:
    """The short form (see the module's docstring) as a JSON Schema object."""
    separator = "\n" if "\n" in text else ","
    properties: dict[str, Any] = {}
    for number, part in enumerate(text.split(separator), start=1):
        spec = part.strip()
        if not spec:
            continue
        where = f"Schema: field {number}"
        spec, _, hint = spec.partition("#")
        spec = spec.strip()
        match = _FIELD.fullmatch(spec)
        if match is None:
            raise SettingsError(
                f"{where} ({_short(spec) or 'empty'}): expected name: type, a name of "
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
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return AnswerSchema(schema, text.strip(), kind="short")


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
            f"{where}: unknown type {_short(head)!r} (use str, int, float, bool, or a|b|c "
            "for choices; a range lo..hi after it; [] for a list)"
        )
    return {"type": "array", "items": schema} if is_list else schema


def _short_range(text: str, kind: str, where: str) -> dict[str, Any]:
    match = _RANGE.fullmatch(text.replace(" ", ""))
    if match is None or kind == "boolean" or not (match["low"] or match["high"]):
        raise SettingsError(f"{where}: {_short(text)!r} is not a range like 1..5 or ..60")
    number = int if kind in ("integer", "string") else float
    bounds = []
    for end in (match["low"], match["high"]):
        try:
            bounds.append(number(end) if end else None)
        except ValueError:
            name = "a whole number" if number is int else "a number"
            raise SettingsError(f"{where}: {end!r} in {text!r} is not {name}") from None
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


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "text", bool: "true or false", type(None): "null"}.get(
        type(value), "a number"
    )


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
