"""What every answer of a job must be: a JSON Schema, or one of a few labels.

People give it as a JSON Schema (a file, or inline JSON), as a short form for the common
case, or as a list of choices:

    sentiment: positive|negative|neutral, stars: int 1..5, headline: str # a short title
    --choices positive,negative,neutral

(the short form: `core.structured.short_form`).

`parse_schema` and `parse_choices` check what they are given once, before a model loads
or a job exists: bad JSON, an unknown type, or a keyword that cannot be enforced while
decoding is a SettingsError of one line. Nothing is dropped silently.

Every answer is checked against it, whatever backend made it, by
`core.structured.check.check_answer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from tui_batch.core import bounded_regex
from tui_batch.core.errors import SettingsError, read_utf8
from tui_batch.core.paths import is_file
from tui_batch.core.structured.short_form import (
    short_form_schema,
    shortened,
    to_short_form,
    without_hints,
)
from tui_batch.core.structured.validator import answer_validator
from tui_batch.core.text import has_surrogates

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
        short = to_short_form(without_hints(self.schema))
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

    @cached_property
    def validator(self) -> Any:
        """jsonschema's Draft 2020-12 validator of answers (formats checked), made once;
        its `pattern` and `format: regex` bounded in time (`core.bounded_regex`)."""
        return answer_validator(self.schema)


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
        made = schema_from_json(_json_document(text, "Schema", inline=True), "Schema")
        return AnswerSchema(made.schema, text, kind="json")
    path = Path(text).expanduser()
    if folder is not None and not path.is_absolute():
        path = folder / path
    if text.lower().endswith(".json") or ("\n" not in text and is_file(path)):
        return _schema_file(path)
    return parse_short_form(text)


def _schema_file(path: Path) -> AnswerSchema:
    path = path.expanduser()
    if not is_file(path):
        raise SettingsError(f"Schema: no such file {path}")
    text = read_utf8(path, "schema file", SettingsError)
    made = schema_from_json(_json_document(text, f"Schema: {path}"), f"Schema: {path}")
    return AnswerSchema(made.schema, str(path.resolve()), kind="file")


def schema_from_json(document: Any, where: str) -> AnswerSchema:
    """A JSON Schema as given, checked: a valid Draft 2020-12 schema, with nothing in it
    that cannot be enforced while decoding. The check is remembered by the schema's
    text: a stored schema is read back with every job listing, stats and resume."""
    if not isinstance(document, dict):
        raise SettingsError(f"{where}: a JSON Schema is an object, got {_json_kind(document)}")
    try:
        key = json.dumps(document, sort_keys=True, allow_nan=False)
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise SettingsError(
            f"{where}: holds a lone surrogate (like \\ud800), which no file can hold"
        ) from None
    except (TypeError, ValueError) as exc:  # a TOML table may hold dates, or nan
        raise SettingsError(f"{where}: a JSON Schema holds JSON values only ({exc})") from None
    except RecursionError:
        raise SettingsError(f"{where}: nested too deeply to read") from None
    problem = _schema_problem(key)
    if problem:
        raise SettingsError(f"{where}: {problem}")
    return AnswerSchema(document, json.dumps(document, ensure_ascii=False), kind="json")


@lru_cache(maxsize=256)
def _schema_problem(key: str) -> str | None:
    """What is wrong with the JSON Schema of this text, in words; None: nothing."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    document = json.loads(key)
    try:
        keywords = list(_keywords(document, "$"))
        for keyword, path, value in keywords:
            if keyword == "pattern" and isinstance(value, str):
                problem = bounded_regex.pattern_problem(value)
                if problem is not None:
                    return f"pattern at {path} is not a regular expression: {problem}"
        Draft202012Validator.check_schema(document)
    except SchemaError as exc:
        path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        return f"not a valid JSON Schema at ${path}: {shortened(exc.message)}"
    except RecursionError:
        return "nested too deeply to check"
    except (ValueError, OverflowError) as exc:  # re.error too: a pattern Python cannot read
        return f"not a valid JSON Schema: {shortened(str(exc))}"
    for keyword, path, _ in keywords:
        if keyword in UNENFORCEABLE:
            return f"{keyword!r} at {path} cannot be enforced while decoding: remove it"
    validator = answer_validator(document)
    for sample in (None, {}, [], "", 0):
        try:
            for _ in validator.iter_errors(sample):
                pass
        except RecursionError:
            return "its $ref leads back to itself before any value is read: it never ends"
    return grammar_problem(document)


def _json_document(text: str, where: str, inline: bool = False) -> Any:
    """`text` read as JSON; a SettingsError saying where it is not (a file's line and
    column first; inline JSON's after what is wrong)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if inline:
            said = f": not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        else:
            said = f", line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"
        raise SettingsError(where + said) from None
    except RecursionError:
        raise SettingsError(f"{where}: nested too deeply to read") from None


def grammar_problem(schema: dict[str, Any]) -> str | None:
    """What llguidance, which enforces a schema on local models, cannot do with this
    one; None when it can."""
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a dependency; answers are still checked
        return None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(json_grammar(schema))
    if is_error or messages:
        return "cannot be enforced while decoding: " + shortened("; ".join(messages))
    return None


# How llguidance writes JSON: compact, one space after `,` and `:`, no new lines (a small
# model left free to add whitespace may add it forever).
JSON_OPTIONS = {"whitespace_flexible": False}


def json_grammar(schema: dict[str, Any]) -> str:
    """llguidance's grammar for a JSON Schema, written as JSON_OPTIONS says."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)


def _keywords(schema: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """Every keyword of a schema and its subschemas, with where it is and its value."""
    if not isinstance(schema, dict):
        return
    for keyword, value in schema.items():
        yield keyword, path, value
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
    if any(has_surrogates(label) for label in labels):
        raise SettingsError("Choices: a label holds bytes that are not UTF-8 (a lone surrogate)")
    return AnswerSchema(
        {"type": "string", "enum": labels}, ",".join(labels), tuple(labels), kind="choices"
    )


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "text", bool: "true or false", type(None): "null"}.get(
        type(value), "a number"
    )


def parse_short_form(text: str) -> AnswerSchema:
    """The short form (`short_form`) as a schema."""
    return AnswerSchema(short_form_schema(text), text.strip(), kind="short")
