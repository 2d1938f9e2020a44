"""What a job may spend: a cost (in its prices' currency) and a number of tokens, input
and output together. The engine keeps it (`budget_guard`): a prompt starts only when the
most it could spend fits in what is left, so the job stops, resumable and saying why,
before the prompt that would cross it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tui_batch.core.errors import SettingsError
from tui_batch.core.settings import check, parse_number


@dataclass(frozen=True, slots=True)
class Budget:
    """`max_cost` (None: no limit) and `max_total_tokens` (None: no limit)."""

    max_cost: float | None = None
    max_total_tokens: int | None = None

    @classmethod
    def from_values(cls, max_cost: Any, max_total_tokens: Any) -> Budget | None:
        """A budget from typed text (flags, fields) or numbers (a job file's); None when
        neither is given."""
        values = [
            (parse_number(key, value) if isinstance(value, str) else check(key, value))
            if value is not None
            else None
            for key, value in (("max_cost", max_cost), ("max_total_tokens", max_total_tokens))
        ]
        return None if values == [None, None] else cls(*values)

    def to_dict(self) -> dict[str, Any]:
        return {"max_cost": self.max_cost, "max_total_tokens": self.max_total_tokens}

    @classmethod
    def from_dict(cls, data: Any) -> Budget | None:
        """A budget as `to_dict` wrote it; a SettingsError for anything else."""
        if not isinstance(data, dict):
            raise SettingsError("the job's budget is not an object")
        return cls.from_values(data.get("max_cost"), data.get("max_total_tokens"))

    def with_values(self, max_cost: Any, max_total_tokens: Any) -> Budget | None:
        """This budget with what is given in place (a resume raising it, say)."""
        given = Budget.from_values(max_cost, max_total_tokens) or Budget()
        return Budget.from_values(
            given.max_cost if max_cost is not None else self.max_cost,
            given.max_total_tokens if max_total_tokens is not None else self.max_total_tokens,
        )
