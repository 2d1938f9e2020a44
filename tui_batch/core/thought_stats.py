"""A thinking model's figures for a job, read from its checkpoint with SQL: the answers
that came with a thought, the thoughts that left no answer (`INCOMPLETE_THOUGHT`), the
tokens spent thinking and their share of all output, and each thought's length."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from tui_batch.core.reasoning import INCOMPLETE_THOUGHT
from tui_batch.core.spread import Spread, spread


@dataclass(slots=True)
class ThoughtFigures:
    """`thoughts`: results with a thought; `cut`: thoughts with no answer after them
    (failed); `tokens`: the thoughts' tokens where counted, of `tokens_output` in all
    (the output tokens of the results whose thought was counted); `length`: tokens per
    thought, over the answers that succeeded."""

    thoughts: int = 0
    cut: int = 0
    tokens: int = 0
    tokens_output: int = 0
    length: Spread = field(default_factory=Spread)

    @property
    def share(self) -> float | None:
        """The share of output tokens spent thinking (None: none were counted)."""
        return self.tokens / self.tokens_output if self.tokens_output else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["share"] = None if self.share is None else round(self.share, 4)
        return data


def thought_figures(connection: sqlite3.Connection, columns: set[str]) -> ThoughtFigures | None:
    """The job's thought figures; None where no result has a thought (or the checkpoint
    is older than thoughts)."""
    if "reasoning" not in columns:
        return None
    thoughts, cut, tokens, tokens_output = connection.execute(
        "SELECT COUNT(*), TOTAL(success = 0 AND substr(error_message, 1, ?) = ?), "
        "TOTAL(reasoning_tokens), "
        "TOTAL(CASE WHEN reasoning_tokens IS NOT NULL THEN tokens_output END) "
        "FROM results WHERE reasoning IS NOT NULL",
        (len(INCOMPLETE_THOUGHT), INCOMPLETE_THOUGHT),
    ).fetchone()
    if not thoughts:
        return None
    return ThoughtFigures(
        thoughts=thoughts,
        cut=int(cut),
        tokens=int(tokens),
        tokens_output=int(tokens_output),
        length=spread(connection, "reasoning_tokens"),
    )
