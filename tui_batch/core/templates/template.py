"""Prompt templates: Jinja2 text filled from a record's fields, safely.

Rendered in Jinja2's sandbox with `StrictUndefined` and autoescape off, from the
template's own text only (no loader: `include`, `import` and `extends` reach nothing).
A field's value is data: it is inserted as it is and never rendered again, so a review
that says `{{ 7*7 }}` stays exactly that. A variable a record lacks is an error naming
the record and the variable, never an empty string.

Every field is also in `row`, a mapping, for names that are not identifiers:
`{{ row["Product Name"] }}` (a field of its own called `row` wins).

A template may open with front matter: TOML between two `+++` lines, setting the system
prompt and per-request options for each record. A string there is itself a template,
filled from the record like the prompt (`max_tokens = "{{ budget }}"`); a number or a
list is taken as it is. `schema` or `choices` say what every answer must be, and
`expect` (with `score`, `tolerance`) which column holds the expected answer (as the
settings of those names do, when the job gives none):

    +++
    system = "You label reviews of {{ product }}."
    max_tokens = 8
    choices = ["positive", "negative", "neutral"]
    +++
    Review: {{ review }}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaError

from tui_batch.core.errors import SettingsError, TemplateError
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.settings import (
    REQUEST_OPTIONS,
    check_reasoning,
    check_request_options,
    parse_number,
)
from tui_batch.core.structured.schema import AnswerSchema, parse_choices, parse_schema
from tui_batch.core.templates.limits import (
    RENDER_SECONDS,
    BoundedSandbox,
    RenderLimit,
    RenderTimeout,
    deadline,
    render_bounded,
)
from tui_batch.core.templates.source import text_sha256

# Validation reports this many problems, then how many more there were.
MAX_REPORTED = 5
FRONT_MATTER = "+++"
# The whole record, for fields whose names are not identifiers ("Product Name").
ROW = "row"
# A problem about a record names at most this many of the fields it has.
SHOWN_FIELDS = 8
# What front matter may set: the system prompt, what one request may set for itself, and
# what every answer must be.
SCHEMA_KEYS = ("schema", "choices")
# How answers are scored: the expected column, the method and its tolerance.
SCORE_KEYS = ("expect", "score", "tolerance")
# Whether and how long a model that can think does (`core.reasoning`).
REASONING_KEYS = ("reasoning", "reasoning_budget", "reasoning_effort")
FRONT_MATTER_KEYS = ("system", *REQUEST_OPTIONS, *SCHEMA_KEYS, *SCORE_KEYS, *REASONING_KEYS)
TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class TemplateTimeout(TemplateError):
    """A record took longer than RENDER_SECONDS to render: the template itself is at
    fault (a loop without end), so rendering stops there rather than at every record."""


def _environment() -> BoundedSandbox:
    return BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def split_front_matter(text: str, name: str = "template") -> tuple[dict[str, Any], str, int]:
    """The front matter's values, the template after it, and how many lines it took
    (0 without front matter). A TemplateError, naming the line, for bad TOML or a key
    that is not one of FRONT_MATTER_KEYS."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FRONT_MATTER:
        return {}, text, 0
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER), None)
    if end is None:
        raise TemplateError(f"{name}, line 1: the front matter opened by +++ is never closed")
    head = "".join(lines[1:end])
    try:
        values = tomllib.loads(head)
    except RecursionError:
        raise TemplateError(f"{name}, line 2: front matter nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = TOML_POSITION.search(message)
        line = int(found.group(1)) + 1 if found else 1
        message = TOML_POSITION.sub("", message).strip()
        raise TemplateError(f"{name}, line {line}: front matter: {message}") from None
    for key, value in values.items():
        where = f"{name}, line {key_line(head, key) + 1}"
        if key not in FRONT_MATTER_KEYS:
            raise TemplateError(
                f"{where}: unknown front matter key {key!r:.40} "
                f"(known: {', '.join(FRONT_MATTER_KEYS)})"
            )
        if key == "system" and not isinstance(value, str):
            raise TemplateError(f"{where}: system must be text, got {value!r:.40}")
    return values, "".join(lines[end + 1 :]), end + 1


def key_line(toml_text: str, key: str, table: str | None = None) -> int:
    """The 1-based line of `key = ...` in `toml_text` (inside `[table]` when given), for
    messages: tomllib says what is wrong, not where a good value of a wrong type is."""
    current: str | None = None
    header = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
    assignment = re.compile(rf"\s*(?:\"{re.escape(key)}\"|{re.escape(key)})\s*=")
    for number, line in enumerate(toml_text.splitlines(), start=1):
        found = header.match(line)
        if found:
            current = found.group(1)
        elif current == table and assignment.match(line):
            return number
    return 1


class PromptTemplate:
    """A compiled template; `variables` are the names it reads from a record.

    `system` and `options` come from its front matter (see the module's docstring)."""

    def __init__(self, text: str, name: str = "template", folder: Path | None = None) -> None:
        """`folder` is where a schema file the front matter names is looked for (the
        template file's folder; else the working folder)."""
        self.text, self.name = text, name
        front, body, offset = split_front_matter(text, name)
        environment = _environment()
        self._template, variables = self._compile(environment, body, offset)
        head = "".join(text.splitlines(keepends=True)[1 : max(offset - 1, 1)])
        self._system = None
        self._options: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        # What every answer must be, as the front matter says (None: it does not).
        self.schema: AnswerSchema | None = None
        # How answers are scored, as the front matter says (None: it does not).
        self.scoring: Scoring | None = None
        # The reasoning settings the front matter gives, checked (by setting name).
        self.reasoning: dict[str, Any] = {}
        scoring = {key: front.pop(key) for key in SCORE_KEYS if key in front}
        if scoring:
            line = key_line(head, next(iter(scoring))) + 1
            if "expect" not in scoring:
                raise TemplateError(f"{name}, line {line}: score needs expect (the column)")
            try:
                self.scoring = Scoring.from_text(
                    str(scoring["expect"]), scoring.get("score"), scoring.get("tolerance")
                )
            except SettingsError as exc:
                raise TemplateError(f"{name}, line {line}: {exc}") from None
        if all(key in front for key in SCHEMA_KEYS):
            line = key_line(head, "choices") + 1
            raise TemplateError(f"{name}, line {line}: give schema or choices, not both")
        for key, value in front.items():
            line = key_line(head, key) + 1  # the file's line: after the opening +++
            if key in REASONING_KEYS:
                try:
                    checked = check_reasoning(key, value)
                except SettingsError as exc:
                    raise TemplateError(f"{name}, line {line}: {exc}") from None
                self.reasoning[key] = checked
                continue
            if key in SCHEMA_KEYS:
                try:
                    is_schema = key == "schema"
                    self.schema = parse_schema(value, folder) if is_schema else parse_choices(value)
                except SettingsError as exc:
                    raise TemplateError(f"{name}, line {line}: {exc}") from None
                continue
            if not isinstance(value, str) or key == "stop":
                try:
                    self.options.update(check_request_options({key: value}))
                except SettingsError as exc:
                    raise TemplateError(f"{name}, line {line}: {exc}") from None
                continue
            compiled, used = self._compile(environment, value, 0, one_line=line)
            variables |= used
            if key == "system":
                self._system = compiled
            else:
                self._options[key] = compiled
        self.variables = frozenset(variables)
        self._uses_row = ROW in self.variables
        self.sha256 = text_sha256(text)

    def _compile(
        self, environment: Any, text: str, offset: int, one_line: int | None = None
    ) -> tuple[Any, set[str]]:
        try:
            parsed = environment.parse(text)
            return environment.from_string(parsed), set(meta.find_undeclared_variables(parsed))
        except TemplateSyntaxError as exc:
            line = one_line or (exc.lineno or 1) + offset
            raise TemplateError(f"{self.name}, line {line}: {exc.message}") from None
        except (RecursionError, MemoryError):
            line = one_line or offset + 1
            raise TemplateError(f"{self.name}, line {line}: nested too deeply to compile") from None

    def missing(self, record: Mapping[str, Any]) -> list[str]:
        """The variables `record` does not have, sorted (`row` it always has)."""
        return sorted(name for name in self.variables if name not in record and name != ROW)

    def render(self, record: Mapping[str, Any], number: int | None = None) -> str:
        """The template filled from `record`; a TemplateError saying which record and why."""
        return self._fill(self._template, record, number)

    def render_parts(
        self, record: Mapping[str, Any], number: int | None = None
    ) -> tuple[str, str | None, dict[str, Any]]:
        """The prompt, the system prompt (None without one) and the request options,
        each filled from `record`."""
        text = self._fill(self._template, record, number)
        system = None if self._system is None else self._fill(self._system, record, number)
        options = dict(self.options)
        for key, compiled in self._options.items():
            value = self._fill(compiled, record, number).strip()
            try:
                options[key] = parse_number(key, value)
            except SettingsError as exc:
                where = f"{self.name}, record {number}" if number is not None else self.name
                raise TemplateError(f"{where}: {key}: {exc}") from None
        return text, system, options

    def _fill(self, template: Any, record: Mapping[str, Any], number: int | None) -> str:
        where = f"{self.name}, record {number}" if number is not None else self.name
        if self._uses_row and ROW not in record:
            record = {**record, ROW: record}
        try:
            with deadline():
                return render_bounded(template, record)
        except RenderTimeout:
            raise TemplateTimeout(
                f"{where}: rendering took over {RENDER_SECONDS:g} s (a loop without end?); stopped"
            ) from None
        except UndefinedError as exc:
            raise TemplateError(f"{where}: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateError(f"{where}: not allowed in a template ({exc})") from None
        except RenderLimit as exc:
            raise TemplateError(f"{where}: too big to render: {exc}") from None
        except RecursionError:
            raise TemplateError(f"{where}: recursion too deep (a macro calling itself?)") from None
        except MemoryError:
            raise TemplateError(f"{where}: out of memory rendering it") from None
        except JinjaError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Rendered:
    """A record's prompt, with the record's number and fields."""

    number: int
    prompt: str
    record: Mapping[str, Any]
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Validation:
    """What rendering records found, one record at a time: how many were seen, rendered
    and empty, how many had a problem, and the first problems (one line each). The one
    tally of a template's problems: the run's, the preview's and `validate`'s."""

    problems: list[str] = field(default_factory=list)
    records: int = 0
    failed: int = 0
    rendered: int = 0
    empty: int = 0

    def add(self, item: Rendered | str) -> Rendered | None:
        """Count one record's outcome; the record, if it rendered to some text."""
        self.records += 1
        if isinstance(item, str):
            self.problem(item)
            return None
        self.rendered += 1
        if not item.prompt.strip():
            self.empty += 1
            return None
        return item

    def problem(self, problem: str) -> None:
        """A record that cannot be used, for the reason given (one line)."""
        self.failed += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def more(self) -> int:
        """Problems found beyond those kept."""
        return self.failed - len(self.problems)

    def summary(self) -> str:
        lines = list(self.problems)
        if self.more:
            lines.append(f"... and {self.more} more")
        return "\n".join(lines)

    def check(self, where: str) -> None:
        """A TemplateError naming the first problems, if any record had one."""
        if self.failed:
            raise TemplateError(
                f"{self.failed} of {self.records} records of {where} cannot be rendered:\n"
                + self.summary()
            )


def render_all(
    template: PromptTemplate, records: Iterable[tuple[int, Mapping[str, Any]]]
) -> Iterator[Rendered | str]:
    """Each record rendered, or a one-line problem: the variables it lacks, or why it
    could not be rendered. Streams: one record at a time."""
    for number, record in records:
        missing = template.missing(record)
        if missing:
            names = ", ".join(repr(name) for name in missing)
            has = ", ".join(str(name) for name in list(record)[:SHOWN_FIELDS])
            more = ", ..." if len(record) > SHOWN_FIELDS else ""
            yield (
                f"record {number}: no {names} (the template uses it; "
                f"the record has: {has or 'no fields'}{more})"
            )
            continue
        try:
            text, system, options = template.render_parts(record, number)
            yield Rendered(number, text, record, system, options)
        except TemplateTimeout:
            raise  # the template's fault, not this record's: every record would hang
        except TemplateError as exc:
            yield str(exc)


def validate(
    template: PromptTemplate, records: Iterable[tuple[int, Mapping[str, Any]]]
) -> Validation:
    """Render every record once, keeping nothing but counts and the first problems."""
    result = Validation()
    for item in render_all(template, records):
        result.add(item)
    return result
