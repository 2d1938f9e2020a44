"""The validator every answer is checked with: jsonschema's Draft 2020-12, its formats
checked, and its regular expressions (`pattern`, `format: regex`) bounded in time
(`core.bounded_regex`): a schema's pattern is the user's, the text it runs on a model's."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from tui_batch.core import bounded_regex
from tui_batch.core.structured.short_form import shortened


def answer_validator(schema: dict[str, Any]) -> Any:
    """A Draft 2020-12 validator of `schema` whose regular expressions are bounded."""
    return _bounded_validator_class()(schema, format_checker=_bounded_format_checker())


@lru_cache(maxsize=1)
def _bounded_validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "string") or not isinstance(pattern, str):
            return
        try:
            if not bounded_regex.search(pattern, instance):
                yield ValidationError(f"{shortened(repr(instance))} does not match {pattern!r}")
        except bounded_regex.RegexProblem as exc:
            yield ValidationError(f"pattern {shortened(repr(pattern))}: {exc}")

    return validators.extend(Draft202012Validator, {"pattern": pattern})


@lru_cache(maxsize=1)
def _bounded_format_checker() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker()
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)

    @checker.checks("regex", raises=bounded_regex.RegexProblem)
    def is_regex(instance: object) -> bool:
        if isinstance(instance, str):
            bounded_regex.compile_pattern(instance)
        return True

    return checker
