"""A job's prompts and results read from its checkpoint as they are needed, never all
at once: what lets a job of ten million prompts run, resume and export in flat memory.

`StoredPrompts` is the `BatchJob.prompts` of a job opened this way: a sequence (length,
index, iteration) whose items are read a page at a time through a read-only connection
and a few pages kept. `StoredResults` is a sequence of the job's results, read in prompt
order with a cursor. `result_counts` gives what a run's last line says, with SQL;
`result_states` and `request_tallies` what a resumed run's progress starts from.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import overload

from tui_batch.core.checkpoint_file import connect_read_only, result_columns
from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.rows import ResultCounts, count_results, result_from_row

# Prompts read at a time, and pages kept (the engine reads in order, with a few retries
# from behind).
PAGE = 2048
PAGES_KEPT = 4
# Prompts read by one query of `StoredPrompts.many` (under SQLite's bound on variables).
MANY_AT_ONCE = 500
_DAMAGE = (sqlite3.Error, ValueError, TypeError, RecursionError, CheckpointError)


class StoredPrompts(Sequence[Prompt]):
    """The prompts of the checkpoint at `path`, `count` of them (it grows while the job's
    input is still being read in: `grow`)."""

    def __init__(self, path: str | Path, count: int) -> None:
        self.path = Path(path)
        self._count = count
        self._pages: OrderedDict[int, list[Prompt]] = OrderedDict()
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def grow(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Prompt: ...

    @overload
    def __getitem__(self, index: slice) -> list[Prompt]: ...

    def __getitem__(self, index: int | slice) -> Prompt | list[Prompt]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("prompt index out of range")
        number, offset = divmod(index, PAGE)
        with self._lock:
            page = self._pages.get(number)
            if page is not None and offset >= len(page):
                page = None  # read while the job's input was still coming in: read again
            if page is None:
                page = self._read(number * PAGE)
                self._pages[number] = page
                if len(self._pages) > PAGES_KEPT:
                    self._pages.popitem(last=False)
            else:
                self._pages.move_to_end(number)
        if offset >= len(page):
            raise CheckpointError(f"Unreadable checkpoint {self.path}: prompt {index} is missing")
        return page[offset]

    def __iter__(self) -> Iterator[Prompt]:
        for index in range(self._count):
            yield self[index]

    def many(self, indices: Sequence[int]) -> dict[int, Prompt]:
        """The prompts at these indices, read together (a few queries, not a page each):
        for prompts wanted in no order, thousands at once."""
        found: dict[int, Prompt] = {}
        try:
            with self._lock:
                if self._connection is None:
                    self._connection = connect_read_only(self.path)
                for start in range(0, len(indices), MANY_AT_ONCE):
                    part = indices[start : start + MANY_AT_ONCE]
                    rows = self._connection.execute(
                        f"SELECT idx, data FROM prompts WHERE idx IN ({','.join('?' * len(part))})",
                        part,
                    )
                    found.update(
                        (index, Prompt.from_dict(json.loads(data))) for index, data in rows
                    )
        except _DAMAGE as exc:
            raise CheckpointError(f"Unreadable checkpoint {self.path}: {exc}") from None
        return found

    def _read(self, start: int) -> list[Prompt]:
        try:
            if self._connection is None:
                self._connection = connect_read_only(self.path)
            rows = self._connection.execute(
                "SELECT idx, data FROM prompts WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, start + PAGE),
            ).fetchall()
            prompts = []
            for index, data in rows:
                if index != start + len(prompts):
                    raise CheckpointError(f"prompt {start + len(prompts)} is missing")
                prompts.append(Prompt.from_dict(json.loads(data)))
            return prompts
        except _DAMAGE as exc:
            raise CheckpointError(f"Unreadable checkpoint {self.path}: {exc}") from None

    def variable_names(self) -> list[str]:
        """The fields of the prompts' records, in the order first seen (SQL, one pass)."""
        try:
            with closing(connect_read_only(self.path)) as connection:
                rows = connection.execute(
                    "SELECT key FROM (SELECT each.key AS key, MIN(prompts.idx) AS first "
                    "FROM prompts, json_each(prompts.data, '$.variables') AS each "
                    "GROUP BY each.key) ORDER BY first"
                ).fetchall()
        except _DAMAGE as exc:
            raise CheckpointError(f"Unreadable checkpoint {self.path}: {exc}") from None
        return [str(key) for (key,) in rows]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self._pages.clear()


class StoredResults(Sequence[BatchResult]):
    """The results of the checkpoint at `path`, in prompt order, read with a cursor;
    `prompts` are the job's (a result needs its prompt's text); with `only`, the results
    of those prompt indices alone (a filtered view's)."""

    def __init__(
        self, path: str | Path, prompts: Sequence[Prompt], only: Collection[int] | None = None
    ) -> None:
        self.path = Path(path)
        self.prompts = prompts
        self.only = None if only is None else frozenset(only)
        with closing(connect_read_only(self.path)) as connection:
            if self.only is None:
                (self._count,) = connection.execute("SELECT COUNT(*) FROM results").fetchone()
            else:
                cursor = connection.execute("SELECT prompt_index FROM results")
                self._count = sum(1 for (index,) in cursor if index in self.only)
            self.has_reasoning = (
                "reasoning" in result_columns(connection)
                and connection.execute(
                    "SELECT 1 FROM results WHERE reasoning IS NOT NULL LIMIT 1"
                ).fetchone()
                is not None
            )

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> BatchResult:  # type: ignore[override]
        for position, result in enumerate(self):
            if position == index:
                return result
        raise IndexError("result index out of range")

    def __iter__(self) -> Iterator[BatchResult]:
        try:
            with closing(connect_read_only(self.path)) as connection:
                cursor = connection.execute(
                    f"SELECT {result_columns(connection)} FROM results ORDER BY prompt_index"
                )
                for row in cursor:
                    index = row[0]
                    if self.only is not None and index not in self.only:
                        continue
                    if not isinstance(index, int) or not 0 <= index < len(self.prompts):
                        raise CheckpointError(f"a result for prompt {index!r:.20}")
                    yield result_from_row(row, self.prompts[index])
        except _DAMAGE as exc:
            raise CheckpointError(f"Unreadable checkpoint {self.path}: {exc}") from None


def result_counts(path: str | Path) -> ResultCounts:
    """The counts of the checkpoint at `path`'s results (`rows.count_results`)."""
    try:
        with closing(connect_read_only(Path(path))) as connection:
            return count_results(connection)
    except _DAMAGE as exc:
        raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None


# The requests a job's results sent, by endpoint, from their attempt logs. A request
# called back by a pause is no error of its server, nor is an answer that broke the
# job's schema (a local model's are kept in the log too).
_REQUESTS = (
    "SELECT json_extract(a.value, '$.endpoint') AS ep, COUNT(*), "
    "TOTAL(json_extract(a.value, '$.error') IS NOT NULL "
    "AND json_extract(a.value, '$.error') NOT LIKE 'cancelled:%' "
    "AND json_extract(a.value, '$.error') NOT LIKE 'invalid:%'), "
    "AVG(json_extract(a.value, '$.ttft')) "
    "FROM results, json_each(results.attempt_log) AS a "
    "WHERE results.attempt_log IS NOT NULL AND json_valid(results.attempt_log) "
    "AND results.endpoint IS NOT NULL {only} "
    "GROUP BY ep ORDER BY ep"
)


def request_tallies(
    connection: sqlite3.Connection, succeeded_only: bool = False
) -> Iterator[tuple[str, int, int, float | None]]:
    """Each endpoint's requests, request errors and mean time to first token, from the
    results' attempt logs (`succeeded_only`: of the results that succeeded): the one
    count of a job's requests, for `stats` and the progress screen alike."""
    only = "AND results.success" if succeeded_only else ""
    for endpoint, requests, errors, ttft in connection.execute(_REQUESTS.format(only=only)):
        if isinstance(endpoint, str):
            yield endpoint, int(requests), int(errors), ttft


def result_states(path: str | Path) -> Iterator[tuple[int, str]]:
    """Each result's prompt index and state (`ok`, `invalid` or `failed`), in prompt
    order, read with a cursor: what a resumed run shows of the results it starts with."""
    try:
        with closing(connect_read_only(Path(path))) as connection:
            cursor = connection.execute(
                "SELECT prompt_index, CASE WHEN success THEN 'ok' WHEN invalid THEN "
                "'invalid' ELSE 'failed' END FROM results ORDER BY prompt_index"
            )
            while rows := cursor.fetchmany(PAGE):
                yield from rows
    except _DAMAGE as exc:
        raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None


def saved_requests(path: str | Path, succeeded_only: bool = False) -> dict[str, list[int]]:
    """`request_tallies` of the checkpoint at `path`: requests and errors by endpoint."""
    try:
        with closing(connect_read_only(Path(path))) as connection:
            return {
                endpoint: [requests, errors]
                for endpoint, requests, errors, _ in request_tallies(connection, succeeded_only)
            }
    except _DAMAGE as exc:
        raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
