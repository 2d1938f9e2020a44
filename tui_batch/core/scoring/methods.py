"""How an answer is scored against the expected one: a score in [0, 1], right when 1.

A record's column (a data file's, or a prompts file's key) holds the expected answer;
`Scoring` names it and the method:

- `exact` (the default): the answer and the expected text alike once trimmed, case-folded
  and with runs of spaces made one;
- `contains`: the expected text inside the answer (both made alike the same way);
- `regex`: the expected value is a regular expression the answer matches somewhere (a
  match is bounded in time: one that backtracks past it scores the answer wrong);
- `number`: the answer's number (the whole answer, else the last number in it) within
  `tolerance` of the expected number;
- `json-field FIELD`: a field of the answer's JSON (`a.b` is nested) alike the expected
  value (numbers within `tolerance`, text as `exact` compares it);
- `fields`: the expected value is a JSON object; the score is the share of its top-level
  fields the answer's JSON has alike.

With choices the answer is its label. A missing expected value (no column, null, blank)
leaves the result unscored, as does an error (no answer); an answer that broke the schema
is wrong. A value the method cannot read (not a number, not a regular expression, not an
object) is a mistake of the data: `expected_problem` says so, one line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from tui_batch.core.bounded_regex import RegexProblem, pattern_problem, search
from tui_batch.core.errors import SettingsError
from tui_batch.core.structured.schema import LABEL, AnswerSchema, value_at

METHODS = ("exact", "contains", "regex", "number", "json-field", "fields")
_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
# A right answer's score; a score is stored rounded, so "1" is compared with some room.
RIGHT = 1.0 - 1e-9


@dataclass(frozen=True, slots=True)
class Scoring:
    """What a job's answers are scored against (`expect`, a column) and how."""

    expect: str
    method: str = "exact"
    field: str | None = None  # json-field's field
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.expect, str) or not self.expect.strip():
            raise SettingsError("Expect (--expect): name the column of expected answers")
        if self.method not in METHODS:
            raise SettingsError(
                f"Score (--score): unknown method {self.method!r:.40} (use {', '.join(METHODS)})"
            )
        if (self.method == "json-field") != bool(self.field):
            raise SettingsError(
                "Score (--score): json-field needs the field to compare: json-field NAME"
                if self.method == "json-field"
                else f"Score (--score): {self.method} takes no field"
            )
        if (
            isinstance(self.tolerance, bool)
            or not isinstance(self.tolerance, (int, float))
            or not math.isfinite(self.tolerance)
            or self.tolerance < 0
        ):
            raise SettingsError(
                f"Tolerance (--tolerance): expected a number of 0 or more, got {self.tolerance!r}"
            )

    @property
    def method_text(self) -> str:
        """The method as `--score` takes it (`json-field stars`)."""
        return f"json-field {self.field}" if self.field else self.method

    def describe(self) -> str:
        """One line: `exact against column 'label'`."""
        tolerance = f" (tolerance {self.tolerance:g})" if self.tolerance else ""
        return f"{self.method_text}{tolerance} against column {self.expect!r}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "expect": self.expect,
            "method": self.method,
            "field": self.field,
            "tolerance": self.tolerance,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Scoring:
        if not isinstance(data, dict):
            raise SettingsError("scoring is not an object")
        return cls(
            data.get("expect", ""),
            data.get("method", "exact"),
            data.get("field"),
            data.get("tolerance") or 0.0,
        )

    @classmethod
    def from_text(cls, expect: str, method: str | None, tolerance: Any = None) -> Scoring:
        """A scoring from `--expect`, `--score` (`json-field NAME` with its field) and
        `--tolerance`, as typed."""
        name, _, field = (method or "exact").strip().partition(" ")
        value = 0.0
        if tolerance is not None and str(tolerance).strip():
            try:
                value = float(tolerance)
            except (TypeError, ValueError):
                raise SettingsError(
                    f"Tolerance (--tolerance): expected a number, got {tolerance!r:.40}"
                ) from None
        return cls(expect.strip(), name.strip().lower(), field.strip() or None, value)

    # Scoring ---------------------------------------------------------------------------

    def expected_of(self, variables: dict[str, Any] | None) -> Any:
        """A record's expected value (None: it has none)."""
        if not variables:
            return None
        value = variables.get(self.expect)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    def problem(self, expected: Any) -> str | None:
        """Why the method cannot use this expected value (None: it can)."""
        if self.method == "regex":
            problem = pattern_problem(str(expected))
            if problem is not None:
                return f"{_shown(expected)} is not a regular expression ({problem})"
        elif self.method == "number" and _number(expected) is None:
            if _is_number(expected) or _NUMBER.fullmatch(str(expected).strip()):
                return f"{_shown(expected)} is past the range of a number (about 1e308)"
            return f"{_shown(expected)} is not a number"
        elif self.method == "fields" and not isinstance(_object(expected), dict):
            return f"{_shown(expected)} is not a JSON object of fields"
        return None

    def judge(
        self,
        variables: dict[str, Any] | None,
        success: bool,
        invalid: bool,
        text: str,
        output: Any,
        schema: AnswerSchema | None,
    ) -> tuple[float | None, Any]:
        """A result's score and the expected value it was scored against: unscored (None)
        without one, or with an error instead of an answer; 0 for an answer that broke
        the schema; else `score`."""
        expected = self.expected_of(variables)
        if expected is None or (not success and not invalid):
            return None, expected
        if self.method == "fields":
            expected = _object(expected)
        if invalid or self.problem(expected) is not None:
            return 0.0, expected
        return round(self.score(expected, text, output, schema), 6), expected

    def compared(self, text: str, output: Any, schema: AnswerSchema | None) -> str:
        """What of an answer is compared with the expected value, as text: its label,
        its field (json-field), else the answer itself."""
        if schema is not None and schema.choices and isinstance(output, str):
            return output
        if self.method == "json-field" and self.field:
            value = output if output is not None else _json_answer(text)
            found = value_at(value, tuple(self.field.split(".")))
            return "" if found is None else _as_text(found)
        return text

    def label_paths(self, schema: AnswerSchema | None) -> dict[str, tuple[str, str]]:
        """The choice or enum fields scored, each with its JSON path in the expected
        value and in the answer: what a confusion matrix is made of."""
        if schema is None:
            return {}
        if schema.choices:
            return {LABEL: ("$", "$")} if self.method in ("exact", "contains") else {}
        labelled = schema.label_fields()
        if self.method == "json-field" and self.field in labelled:
            return {self.field: ("$", _json_path(self.field))}
        if self.method == "fields":
            return {name: (_json_path(name), _json_path(name)) for name in labelled}
        return {}

    def score(
        self,
        expected: Any,
        text: str,
        output: Any,
        schema: AnswerSchema | None,
    ) -> float:
        """The score in [0, 1] of an answer (`text`; `output`, its value with a schema)
        against `expected` (not None, and without a `problem`)."""
        if schema is not None and schema.choices and isinstance(output, str):
            text = output
        method = self.method
        if method == "exact":
            return float(plain_text(text) == plain_text(_as_text(expected)))
        if method == "contains":
            return float(plain_text(_as_text(expected)) in plain_text(text))
        if method == "regex":
            try:
                return float(search(str(expected), text))
            except RegexProblem:
                return 0.0
        if method == "number":
            found = _number(output) if _is_number(output) else _answer_number(text)
            return float(found is not None and self._near(found, _number(expected)))
        value = output if output is not None else _json_answer(text)
        if method == "json-field":
            assert self.field is not None
            found = value_at(value, tuple(self.field.split(".")))
            return float(found is not None and self._alike(found, expected))
        wanted = _object(expected)
        if not isinstance(wanted, dict) or not wanted:
            return 0.0
        if not isinstance(value, dict):
            return 0.0
        same = sum(1 for key, v in wanted.items() if key in value and self._alike(value[key], v))
        return same / len(wanted)

    def _near(self, found: float, expected: float | None) -> bool:
        if expected is None:
            return False
        return abs(found - expected) <= self.tolerance + 1e-9 * max(1.0, abs(expected))

    def _alike(self, found: Any, expected: Any) -> bool:
        if _is_number(found):
            number = _number(found)
            return number is not None and self._near(number, _number(expected))
        if isinstance(found, (dict, list)) or isinstance(expected, (dict, list)):
            wanted = _object(expected) if isinstance(expected, str) else expected
            return _canonical(found) == _canonical(wanted)
        return plain_text(_as_text(found)) == plain_text(_as_text(expected))


def _json_path(name: str) -> str:
    return "$" + "".join(f'."{part}"' for part in name.split("."))


def plain_text(text: str) -> str:
    """Text as `exact` compares it: trimmed, case-folded, runs of spaces made one."""
    return _SPACES.sub(" ", text).strip().casefold()


def _as_text(value: Any) -> str:
    """A value as text to compare: JSON's spelling for booleans, lists and objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if _is_number(value):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _shown(value: Any) -> str:
    text = _as_text(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """An expected value as a number (text like `1,234.5` too), else None: None too
    for a number past a float's range (a 400-digit integer, `1e400`)."""
    if _is_number(value):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _answer_number(text: str) -> float | None:
    """The answer's number: the whole answer if it is one, else the last number in it."""
    whole = _number(text.strip().rstrip("."))
    if whole is not None:
        return whole
    found = _NUMBER.findall(text)
    return _number(found[-1]) if found else None


def _object(value: Any) -> Any:
    """An expected value that should be JSON: itself, or the JSON its text holds."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return None
    return value


def _json_answer(text: str) -> Any:
    """A free-text answer's JSON: the whole text, else its first {...} or [...] part."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except (json.JSONDecodeError, RecursionError):
        return None
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
