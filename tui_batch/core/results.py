"""Paged, filtered reading of one job's results straight from its checkpoint.

A viewer of 100,000 results must not build 100,000 objects to show 30 rows: `ResultsView`
answers "which prompt indices match this filter and search" with one query, then fetches
only the rows on screen.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from tui_batch.core.checkpoint_file import connect_read_only, result_columns
from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.rows import check_rows, present_columns, result_from_row
from tui_batch.core.scoring.figures import ConfusionCell
from tui_batch.core.scoring.methods import RIGHT
from tui_batch.core.stats import normalise_error

# A selection's indices are read this many at a time, and this many pages kept.
INDEX_PAGE = 2_000
PAGES_KEPT = 8
# `failed`: an error; `invalid`: an answer that broke the job's schema; `wrong`: an
# answer scored below 1 against its expected one.
FILTERS = ("all", "failed", "succeeded", "invalid", "wrong")
_WHERE = {
    "all": "1",
    "failed": "r.success = 0 AND r.invalid = 0",
    "succeeded": "r.success = 1",
    "invalid": "r.invalid = 1",
    "wrong": f"r.score < {RIGHT}",
}
# A checkpoint written before answers had schemas has no `invalid` column; before
# they had scores, no `score`.
_WHERE_BEFORE_SCORES = {**_WHERE, "wrong": "0"}
_WHERE_BEFORE_SCHEMAS = {**_WHERE_BEFORE_SCORES, "failed": "r.success = 0", "invalid": "0"}


class ResultsView:
    """A read-only window on a checkpoint's results."""

    def __init__(self, checkpoint_file: str | Path) -> None:
        self.path = Path(checkpoint_file)
        try:
            self._connection = connect_read_only(self.path)
            check_rows(self._connection)
            self._connection.create_function("normalise", 1, normalise_error, deterministic=True)
            columns = present_columns(self._connection)
        except (sqlite3.Error, CheckpointError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {self.path}: {exc}") from None
        self._where = (
            _WHERE
            if "score" in columns
            else _WHERE_BEFORE_SCORES
            if "invalid" in columns
            else _WHERE_BEFORE_SCHEMAS
        )

    def select(
        self,
        filter: str = "all",
        search: str = "",
        reason: str | None = None,
        cell: ConfusionCell | None = None,
    ) -> Selection:
        """Prompt indices of the results that pass `filter` and contain `search`; with a
        `reason`, only the failures of that group (`stats.normalise_error`); with a
        `cell`, only the results of that cell of a confusion matrix. A sequence read
        from the checkpoint a page at a time: ten million results hold a page."""
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}")
        where = self._where[filter]
        params: list[Any] = []
        if reason is not None:
            where += " AND r.success = 0 AND normalise(r.error_message) = ?"
            params.append(reason)
        if cell is not None:
            condition, values = cell.sql("r") if self._where is _WHERE else ("0", [])
            where += f" AND {condition}"
            params += values
        source = "results r"
        if search:
            needle = search.lower()
            source = "results r JOIN prompts p ON p.idx = r.prompt_index"
            where += (
                " AND (instr(lower(r.response_text), ?) "
                "OR instr(lower(coalesce(r.error_message, '')), ?) "
                "OR instr(lower(json_extract(p.data, '$.text')), ?))"
            )
            params += [needle] * 3
        return Selection(self._connection, source, where, params)

    def counts(self) -> dict[str, int]:
        """How many results each filter shows, counted in one pass."""
        found = self._connection.execute(
            "SELECT "
            + ", ".join(f"TOTAL({self._where[name]})" for name in FILTERS)
            + " FROM results r"
        ).fetchone()
        return {name: int(count) for name, count in zip(FILTERS, found, strict=True)}

    def fetch(self, indices: Sequence[int]) -> list[BatchResult]:
        """The results for these prompt indices, in the same order."""
        return [result for result, _ in self.fetch_with_prompts(indices)]

    def fetch_with_prompts(self, indices: Sequence[int]) -> list[tuple[BatchResult, Prompt]]:
        """The results for these prompt indices, each with its prompt (a template job's
        record id and fields), in the same order."""
        if not indices:
            return []
        marks = ",".join("?" * len(indices))
        columns = result_columns(self._connection, "r.")
        rows = self._connection.execute(
            f"SELECT {columns}, p.data FROM results r JOIN prompts p ON p.idx = r.prompt_index "
            f"WHERE r.prompt_index IN ({marks})",
            list(indices),
        ).fetchall()
        by_index = {}
        try:
            for row in rows:
                prompt = Prompt.from_dict(json.loads(row[-1]))
                result = result_from_row(row[:-1], prompt)
                by_index[result.prompt_index] = (result, prompt)
        except (ValueError, RecursionError, CheckpointError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {self.path}: {exc}") from None
        return [by_index[i] for i in indices if i in by_index]

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ResultsView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Selection(Sequence[int]):
    """The prompt indices a filter selects, in order: counted with SQL, read a page at a
    time (the page after a cached one from where it ended; another by its offset) and a
    few pages kept."""

    def __init__(
        self, connection: sqlite3.Connection, source: str, where: str, params: list[Any]
    ) -> None:
        self._connection = connection
        self._sql = f"SELECT r.prompt_index FROM {source} WHERE {where}"
        self._params = params
        self._count: int | None = None
        self._pages: OrderedDict[int, list[int]] = OrderedDict()

    def __len__(self) -> int:
        if self._count is None:
            self._count = self._connection.execute(
                f"SELECT COUNT(*) FROM ({self._sql})", self._params
            ).fetchone()[0]
        return self._count

    @overload
    def __getitem__(self, position: int) -> int: ...

    @overload
    def __getitem__(self, position: slice) -> list[int]: ...

    def __getitem__(self, position: int | slice) -> int | list[int]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        page, offset = divmod(position, INDEX_PAGE)
        return self._page(page)[offset]

    def __iter__(self) -> Iterator[int]:
        for (index,) in self._connection.execute(
            f"{self._sql} ORDER BY r.prompt_index", self._params
        ):
            yield index

    def _page(self, page: int) -> list[int]:
        if page in self._pages:
            self._pages.move_to_end(page)
            return self._pages[page]
        before = self._pages.get(page - 1)
        if before:  # on from the page before's last index: no rows skipped over
            sql, params = (
                f"{self._sql} AND r.prompt_index > ? ORDER BY r.prompt_index LIMIT ?",
                [*self._params, before[-1], INDEX_PAGE],
            )
        else:
            sql, params = (
                f"{self._sql} ORDER BY r.prompt_index LIMIT ? OFFSET ?",
                [*self._params, INDEX_PAGE, page * INDEX_PAGE],
            )
        self._pages[page] = [row[0] for row in self._connection.execute(sql, params)]
        if len(self._pages) > PAGES_KEPT:
            self._pages.popitem(last=False)
        return self._pages[page]
