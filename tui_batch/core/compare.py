"""Two or more jobs over the same prompts, side by side, from their checkpoints.

Prompts are matched on their custom ids when every prompt of every job has one, else on
their text (with the system prompt): the n-th occurrence of a text in one job with the
n-th in another (`prompt_matching`). The matching is a temporary table in an in-memory
database with the checkpoints attached read-only; the rows, the counts and the sorts are SQL over it, so
the first page of a comparison of two 100,000-result jobs needs no result in Python.

Each matched prompt has a state: `identical` (every job answered it, all alike),
`different`, `failed` (it failed in at least one), `not run` (a job has no result for it
yet) or `missing` (a job does not have the prompt at all). Scored jobs add regressions
(right in the first job, wrong in a later one) and improvements (the other way).
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import read_header
from tui_batch.core.errors import CheckpointError, SettingsError
from tui_batch.core.jobs import BatchJob
from tui_batch.core.prompt_matching import match_prompts
from tui_batch.core.rows import check_rows, present_columns
from tui_batch.core.scoring.methods import RIGHT
from tui_batch.core.structured.schema import AnswerSchema

STATES = ("identical", "different", "failed", "not run", "missing")
ORDERS = ("index", "length", "latency")
# SQLite attaches at most 10 databases by default.
MAX_JOBS = 8
_WORD = re.compile(r"\s+|[^\s]+")


@dataclass(slots=True)
class JobSide:
    """One compared job: what it is and how it did over the matched prompts."""

    job_id: str
    model_id: str
    prompts: int
    results: int = 0
    succeeded: int = 0
    tokens_output: int = 0
    mean_latency: float | None = None
    # With expected answers: the results scored, and right.
    scored: int = 0
    right: int = 0
    scoring: str | None = None
    name: str | None = None  # the job's `--name`

    @property
    def success_rate(self) -> float:
        return 100.0 * self.succeeded / self.results if self.results else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.right / self.scored if self.scored else None


@dataclass(slots=True)
class FieldAgreement:
    """Jobs whose answers have a schema: how often a field's value is the same in every
    job, over the prompts every job answered validly."""

    name: str
    agree: int
    compared: int

    @property
    def rate(self) -> float:
        return 100.0 * self.agree / self.compared if self.compared else 0.0


@dataclass(slots=True)
class CompareSummary:
    jobs: list[JobSide]
    matched_on: str  # "custom id" or "prompt text"
    states: dict[str, int] = field(default_factory=dict)
    # Per field of the answers (jobs with schemas sharing it): agreement.
    fields: list[FieldAgreement] = field(default_factory=list)
    # Jobs with scores: prompts right in the first job and wrong in another
    # (regressions), and wrong in the first and right in another (improvements).
    regressions: int = 0
    improvements: int = 0

    @property
    def rows(self) -> int:
        return sum(self.states.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched_on": self.matched_on,
            "prompts": self.rows,
            "states": {state: self.states.get(state, 0) for state in STATES},
            "jobs": [
                {
                    "job_id": j.job_id,
                    "name": j.name,
                    "model_id": j.model_id,
                    "prompts": j.prompts,
                    "results": j.results,
                    "succeeded": j.succeeded,
                    "success_rate": round(j.success_rate, 2),
                    "tokens_output": j.tokens_output,
                    "mean_latency": j.mean_latency,
                    "scoring": j.scoring,
                    "scored": j.scored,
                    "right": j.right,
                    "accuracy": j.accuracy,
                }
                for j in self.jobs
            ],
            "regressions": self.regressions,
            "improvements": self.improvements,
            "fields": [
                {
                    "field": f.name,
                    "agree": f.agree,
                    "compared": f.compared,
                    "rate": round(f.rate, 2),
                }
                for f in self.fields
            ],
        }


@dataclass(slots=True)
class ComparedAnswer:
    """One job's answer to a matched prompt (None fields: no result, or no prompt)."""

    index: int | None
    success: bool | None = None
    text: str | None = None
    error: str | None = None
    tokens_output: int | None = None
    duration: float | None = None
    score: float | None = None

    @property
    def right(self) -> bool | None:
        return None if self.score is None else self.score >= RIGHT


@dataclass(slots=True)
class CompareRow:
    row: int
    key: str
    prompt: str
    state: str
    answers: list[ComparedAnswer]
    # Right in the first job and wrong in another.
    regression: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "prompt": self.prompt,
            "state": self.state,
            "regression": self.regression,
            "answers": [
                {
                    "prompt_index": a.index,
                    "success": a.success,
                    "response": a.text,
                    "error": a.error,
                    "tokens_output": a.tokens_output,
                    "duration": a.duration,
                    "score": a.score,
                }
                for a in self.answers
            ],
        }


class Comparison:
    """Jobs compared: their summary, and their matched prompts a page at a time."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        if not 2 <= len(paths) <= MAX_JOBS:
            raise SettingsError(f"Compare two to {MAX_JOBS} jobs, not {len(paths)}")
        self.paths = [Path(p) for p in paths]
        self.connection = sqlite3.connect(":memory:", check_same_thread=False)
        self.connection.execute("PRAGMA temp_store = MEMORY")
        self._schemas: list[AnswerSchema | None] = []
        self._scored: list[bool] = []  # whose results have a score column
        try:
            self.sides = [self._attach(n, path) for n, path in enumerate(self.paths)]
            self.matched_on = match_prompts(self.connection, len(self.sides))
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self.close()
            raise CheckpointError(f"Cannot compare: {exc}") from None
        except BaseException:
            self.close()
            raise
        self._select = self._row_sql()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Comparison:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _attach(self, n: int, path: Path) -> JobSide:
        if not path.is_file():
            raise CheckpointError(f"Checkpoint not found: {path}")
        uri = f"{path.resolve().as_uri()}?mode=ro"
        self.connection.execute(f"ATTACH DATABASE ? AS j{n}", (uri,))
        try:
            header = read_header(self.connection, f"j{n}")
            job = BatchJob.from_header(header, [])
            check_rows(self.connection, f"j{n}")
        except CheckpointError as exc:
            raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
        (prompts,) = self.connection.execute(f"SELECT COUNT(*) FROM j{n}.prompts").fetchone()
        self._schemas.append(job.settings.schema)
        columns = present_columns(self.connection, f"j{n}")
        self._scored.append("score" in columns)
        scoring = job.scoring.describe() if job.scoring else None
        return JobSide(job.job_id, job.model_id, prompts, scoring=scoring, name=job.name)

    @property
    def fields(self) -> list[str]:
        """The answers' fields every job has (each job with a schema): what agreement is
        counted for. A choices job's one field is its label."""
        schemas = self._schemas
        if not schemas or any(schema is None for schema in schemas):
            return []
        names = [[name for name, _ in schema.columns()] for schema in schemas if schema]
        return [name for name in names[0] if all(name in others for others in names[1:])]

    def _json_path(self, name: str) -> str:
        """The JSON path of a field (`a.b` is nested) in every job's answers."""
        schema = self._schemas[0]
        assert schema is not None
        path = dict(schema.columns())[name]
        return "$" + "".join(f'."{part}"' for part in path)

    def _agreement(self, name: str) -> str:
        """SQL: every job's value of field `name` alike (all answered validly)."""
        path = self._json_path(name).replace("'", "''")
        values = [f"json_extract(r{k}.output, '{path}')" for k in range(len(self.sides))]
        return " AND ".join(f"{value} IS {values[0]}" for value in values[1:])

    def _valid_everywhere(self) -> str:
        return " AND ".join(f"r{k}.output IS NOT NULL" for k in range(len(self.sides)))

    def _score(self, k: int) -> str:
        return f"r{k}.score" if self._scored[k] else "NULL"

    def _changed(self) -> tuple[str, str]:
        """SQL: right in the first job and wrong in another (a regression); wrong in the
        first and right in another (an improvement)."""
        first = self._score(0)
        later = [self._score(k) for k in range(1, len(self.sides))]
        # A right answer that became a failure, or went missing, is a regression too: a
        # later job that failed every prompt must not pass a gate. (A job without
        # scores is no side of this.)
        worse = " OR ".join(
            f"({first} >= {RIGHT} AND ({s} IS NULL OR {s} < {RIGHT}))" for s in later if s != "NULL"
        )
        better = " OR ".join(f"({first} < {RIGHT} AND {s} >= {RIGHT})" for s in later)
        return worse or "0", better

    def _row_sql(self) -> str:
        n = range(len(self.sides))
        answers = ", ".join(
            f"m.i{k}, r{k}.success, r{k}.response_text, r{k}.error_message, "
            f"r{k}.tokens_output, r{k}.duration, {self._score(k)}"
            for k in n
        )
        worse, better = self._changed()
        joins = " ".join(f"LEFT JOIN j{k}.results r{k} ON r{k}.prompt_index = m.i{k}" for k in n)
        prompt = (
            "COALESCE("
            + ", ".join(
                f"(SELECT json_extract(data, '$.text') FROM j{k}.prompts WHERE idx = m.i{k})"
                for k in n
            )
            + ")"
        )
        missing = " OR ".join(f"m.i{k} IS NULL" for k in n)
        not_run = " OR ".join(f"r{k}.prompt_index IS NULL" for k in n)
        failed = " OR ".join(f"r{k}.success = 0" for k in n)
        same = " AND ".join(f"r{k}.response_text = r0.response_text" for k in n if k)
        state = (
            f"CASE WHEN {missing} THEN 'missing' WHEN {not_run} THEN 'not run' "
            f"WHEN {failed} THEN 'failed' WHEN {same} THEN 'identical' ELSE 'different' END"
        )
        lengths = ", ".join(f"COALESCE(LENGTH(r{k}.response_text), 0)" for k in n)
        latencies = ", ".join(f"COALESCE(r{k}.duration, 0)" for k in n)
        self._search = " OR ".join(
            ["m.key LIKE :pattern ESCAPE '\\'"]
            + [f"r{k}.response_text LIKE :pattern ESCAPE '\\'" for k in n]
        )
        return (
            f"SELECT * FROM (SELECT m.row, m.key, {prompt} AS prompt, {state} AS state, "
            f"{answers}, MAX({lengths}) - MIN({lengths}) AS length_gap, "
            f"MAX({latencies}) - MIN({latencies}) AS latency_gap, "
            f"COALESCE({worse}, 0) AS regression, COALESCE({better}, 0) AS improvement "
            f"FROM matched m {joins} WHERE {{search}})"
        )

    def _where(
        self,
        state: str | None,
        search: str | None,
        differs: str | None = None,
        changed: bool = False,
    ) -> tuple[str, str, dict[str, Any]]:
        if state is not None and state not in STATES:
            raise SettingsError(f"Unknown state {state!r}: use one of {', '.join(STATES)}")
        params: dict[str, Any] = {}
        search_sql = "1"
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["pattern"] = f"%{escaped}%"
            search_sql = self._search
        if differs is not None:
            if differs not in self.fields or '"' in differs:
                known = ", ".join(self.fields) or "none: give jobs whose answers have a schema"
                raise SettingsError(f"Unknown field {differs!r:.60} (known: {known})")
            search_sql = (
                f"({search_sql}) AND {self._valid_everywhere()} "
                f"AND NOT ({self._agreement(differs)})"
            )
        conditions = []
        if state:
            conditions.append("state = :state")
            params["state"] = state
        if changed:
            if not any(self._scored) or not any(side.scoring for side in self.sides):
                raise SettingsError(
                    "No scores to compare: score the jobs against expected answers first "
                    "(run with --expect COLUMN, or tui-batch score JOB --expect COLUMN)"
                )
            conditions.append("(regression OR improvement)")
        outer = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        return search_sql, outer, params

    def summary(self) -> CompareSummary:
        states: dict[str, int] = {}
        worse = better = 0
        for state, count, regressions, improvements in self.connection.execute(
            "SELECT state, COUNT(*), TOTAL(regression), TOTAL(improvement) "
            f"FROM ({self._select.format(search='1')}) GROUP BY state"
        ):
            states[state] = count
            worse, better = worse + int(regressions), better + int(improvements)
        for k, side in enumerate(self.sides):
            results, succeeded, tokens, latency, scored, right = self.connection.execute(
                f"SELECT COUNT(r.prompt_index), TOTAL(r.success), TOTAL(r.tokens_output), "
                f"AVG(CASE WHEN r.success = 1 THEN r.duration END), COUNT({self._score(k)}), "
                f"TOTAL({self._score(k)} >= {RIGHT}) FROM matched m "
                f"JOIN j{k}.results r{k} ON r{k}.prompt_index = m.i{k}".replace("r.", f"r{k}.")
            ).fetchone()
            side.results, side.succeeded = results, int(succeeded)
            side.tokens_output, side.mean_latency = int(tokens), latency
            side.scored, side.right = scored, int(right)
        agreements = []
        joins = " ".join(
            f"JOIN j{k}.results r{k} ON r{k}.prompt_index = m.i{k}" for k in range(len(self.sides))
        )
        for name in self.fields:
            if '"' in name:
                continue
            compared, agree = self.connection.execute(
                f"SELECT COUNT(*), TOTAL({self._agreement(name)}) FROM matched m {joins} "
                f"WHERE {self._valid_everywhere()}"
            ).fetchone()
            agreements.append(FieldAgreement(name, int(agree), compared))
        summary = CompareSummary(self.sides, self.matched_on, states, agreements)
        summary.regressions, summary.improvements = worse, better
        return summary

    def count(
        self,
        state: str | None = None,
        search: str | None = None,
        differs: str | None = None,
        changed: bool = False,
    ) -> int:
        search_sql, outer, params = self._where(state, search, differs, changed)
        sql = f"SELECT COUNT(*) FROM ({self._select.format(search=search_sql)}) {outer}"
        return self.connection.execute(sql, params).fetchone()[0]

    def rows(self, *args: Any, **kwargs: Any) -> list[CompareRow]:
        """A page of matched prompts, sorted and filtered (`iter_rows`, as a list)."""
        return list(self.iter_rows(*args, **kwargs))

    def iter_rows(
        self,
        order: str = "index",
        state: str | None = None,
        search: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        differs: str | None = None,
        changed: bool = False,
        regressions_first: bool = False,
    ) -> Iterator[CompareRow]:
        """Matched prompts in `order`, in `state`, holding `search`; with `differs`, only
        those every job answered validly with different values of that field; with
        `changed`, only those right in one job and wrong in another, regressions (right
        in the first job, wrong in a later one) first; with `regressions_first`, every
        row, regressions then improvements first."""
        if order not in ORDERS:
            raise SettingsError(f"Unknown order {order!r}: use one of {', '.join(ORDERS)}")
        search_sql, outer, params = self._where(state, search, differs, changed)
        sort = {
            "index": "row",
            "length": "length_gap DESC, row",
            "latency": "latency_gap DESC, row",
        }
        sql = (
            f"SELECT * FROM ({self._select.format(search=search_sql)}) {outer} "
            f"ORDER BY {'regression DESC, improvement DESC, ' if changed or regressions_first else ''}{sort[order]} LIMIT {-1 if limit is None else int(limit)} "
            f"OFFSET {int(offset)}"
        )
        width = len(self.sides)
        for values in self.connection.execute(sql, params):
            row, key, prompt, state_value = values[:4]
            answers = []
            for k in range(width):
                index, success, text, error, tokens, duration, score = values[
                    4 + 7 * k : 11 + 7 * k
                ]
                answers.append(
                    ComparedAnswer(
                        index,
                        None if success is None else bool(success),
                        text,
                        error,
                        tokens,
                        duration,
                        score,
                    )  # fmt: skip
                )
            regression = bool(values[4 + 7 * width + 2])
            yield CompareRow(row, key, prompt or "", state_value, answers, regression)


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """`a` and `b` as runs of words: ("=", text) in both, ("-", text) only in `a`,
    ("+", text) only in `b` (whitespace kept, so the runs join back to each text)."""
    left, right = _WORD.findall(a), _WORD.findall(b)
    runs: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            runs.append(("=", "".join(left[i1:i2])))
            continue
        if i2 > i1:
            runs.append(("-", "".join(left[i1:i2])))
        if j2 > j1:
            runs.append(("+", "".join(right[j1:j2])))
    return runs
