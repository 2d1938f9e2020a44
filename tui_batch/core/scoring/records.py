"""A job's records against its scoring: the expected column there, and each expected
value one the method can read."""

from __future__ import annotations

from collections.abc import Sequence

from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import Prompt
from tui_batch.core.scoring.methods import Scoring


def check_expected(scoring: Scoring, prompts: Sequence[Prompt]) -> int:
    """How many records have an expected value; a SettingsError of one line when no
    record has the column, or when a value is one the method cannot use (the first, with
    its record's number)."""
    found = 0
    columns: dict[str, None] = {}
    for index, prompt in enumerate(prompts):
        if prompt.variables:
            columns.update(dict.fromkeys(prompt.variables))
        expected = scoring.expected_of(prompt.variables)
        if expected is None:
            continue
        found += 1
        problem = scoring.problem(expected)
        if problem is not None:
            record = prompt.line if prompt.line is not None else index + 1
            raise SettingsError(
                f"Expect (--expect): record {record}: {problem} (--score {scoring.method_text})"
            )
    if scoring.expect not in columns:
        shown = ", ".join(list(columns)[:12]) or "none: a text file has no columns"
        raise SettingsError(
            f"Expect (--expect): no record has a column {scoring.expect!r:.60} (columns: {shown})"
        )
    return found
