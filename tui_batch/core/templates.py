"""Prompt templates: Jinja2 text filled from a record's fields, safely.

Rendered in Jinja2's sandbox with `StrictUndefined` and autoescape off, from the
template's own text only (no loader: `include`, `import` and `extends` reach nothing).
A field's value is data: it is inserted as it is and never rendered again, so a review
that says `{{ 7*7 }}` stays exactly that. A variable a record lacks is an error naming
the record and the variable, never an empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tui_batch.core.errors import TemplateError

# Validation reports this many problems, then how many more there were.
MAX_REPORTED = 5


def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


class PromptTemplate:
    """A compiled template; `variables` are the names it reads from a record."""

    def __init__(self, text: str, name: str = "template") -> None:
        self.text, self.name = text, name
        environment = _environment()
        try:
            parsed = environment.parse(text)
            self._template = environment.from_string(parsed)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{name}, line {exc.lineno}: {exc.message}") from None
        self.variables = frozenset(meta.find_undeclared_variables(parsed))
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()

    def missing(self, record: Mapping[str, Any]) -> list[str]:
        """The variables `record` does not have, sorted."""
        return sorted(name for name in self.variables if name not in record)

    def render(self, record: Mapping[str, Any], number: int | None = None) -> str:
        """The template filled from `record`; a TemplateError saying which record and why."""
        where = f"{self.name}, record {number}" if number is not None else self.name
        try:
            return self._template.render(record)
        except UndefinedError as exc:
            raise TemplateError(f"{where}: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateError(f"{where}: not allowed in a template ({exc})") from None
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


@dataclass(slots=True)
class Validation:
    """What checking every record found: the first problems (one line each), how many
    records had one, and how many rendered."""

    problems: list[str]
    failed: int = 0
    rendered: int = 0
    empty: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        lines = list(self.problems)
        if self.failed > len(self.problems):
            lines.append(f"... and {self.failed - len(self.problems)} more records like these")
        return "\n".join(lines)


def render_all(
    template: PromptTemplate, records: Iterable[tuple[int, Mapping[str, Any]]]
) -> Iterator[Rendered | str]:
    """Each record rendered, or a one-line problem: the variables it lacks, or why it
    could not be rendered. Streams: one record at a time."""
    for number, record in records:
        missing = template.missing(record)
        if missing:
            names = ", ".join(repr(name) for name in missing)
            yield f"record {number}: no {names} (the template uses it)"
            continue
        try:
            yield Rendered(number, template.render(record, number), record)
        except TemplateError as exc:
            yield str(exc)


def validate(
    template: PromptTemplate, records: Iterable[tuple[int, Mapping[str, Any]]]
) -> Validation:
    """Render every record once, keeping nothing but counts and the first problems."""
    result = Validation(problems=[])
    for item in render_all(template, records):
        if isinstance(item, str):
            result.failed += 1
            if len(result.problems) < MAX_REPORTED:
                result.problems.append(item)
            continue
        result.rendered += 1
        if not item.prompt.strip():
            result.empty += 1
    return result
