"""How a checkpoint's rows become results and summaries, and results become rows.

The store writes and reads these; the results view reads them too, through the same
functions, so a damaged row is refused the same way everywhere.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import TOKEN_COUNTS, Attempt, BatchResult, JobStatus, Prompt
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT
from tui_batch.core.scoring.methods import RIGHT, Scoring
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.templates.source import TemplateSource

RESULT_COLUMNS = (
    "prompt_index",
    "response_text",
    "tokens_input",
    "tokens_output",
    "duration",
    "success",
    "error_message",
    "attempts",
    "finish_reason",
    "started_at",
    "completed_at",
    "endpoint",
    "attempt_log",
    "ttft",
    "queue_wait",
    "token_counts",
    "output",
    "invalid",
    "score",
    "expected",
    "cached_from",
    "reasoning",
    "reasoning_tokens",
)


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One checkpoint as a listing shows it, read from its header alone.

    `unreadable` holds why a damaged file could not be read; its other fields are empty.
    """

    job_id: str
    checkpoint_file: str
    model_id: str = ""
    status: JobStatus = JobStatus.PENDING
    total_prompts: int = 0
    completed: int = 0
    failed: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    size_bytes: int = 0
    unreadable: str | None = None
    # A template job's template and data file, to check before a resume.
    template: TemplateSource | None = None
    # What the job's answers must be (None: free text), and how they are scored.
    schema: AnswerSchema | None = None
    scoring: Scoring | None = None
    # What listings call the job (None: it has no name).
    name: str | None = None
    # The group it belongs to (a matrix's jobs), if any.
    group_id: str | None = None
    # A process holds the job's run lock now: it runs (or is paused) in a live process.
    live: bool = False

    @property
    def interrupted(self) -> bool:
        """Its record says running or paused, but no live process runs it: killed (`kill
        -9`, a crash, a power cut) and resumable."""
        return self.status in (JobStatus.RUNNING, JobStatus.PAUSED) and not self.live

    @property
    def state(self) -> str:
        """The status as a person reads it: `interrupted` for a job no process runs
        any more, else its status."""
        return "interrupted" if self.interrupted else self.status.value

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def finished(self) -> bool:
        """Every prompt has a result (some may have failed)."""
        return self.done >= self.total_prompts

    @property
    def resumable(self) -> bool:
        """`resume` has something to do: prompts left to run (the job was cancelled,
        paused, stopped by its error strategy, never started or killed), or a run killed
        after its last result, which resume just finishes. Failed prompts alone are run
        again with retry-failed, and do not count here."""
        if self.unreadable or self.live or self.status is JobStatus.COMPLETED:
            return False
        return not self.finished or self.status is not JobStatus.FAILED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["resumable"] = self.resumable
        data["state"] = self.state
        data.pop("template")
        data.pop("schema")
        data.pop("scoring")
        return data


def result_from_row(values: Sequence[Any], prompt: Prompt) -> BatchResult:
    """A result from a `results` row (RESULT_COLUMNS, in order) and its prompt."""
    row = dict(zip(RESULT_COLUMNS, values, strict=True))
    for key in ("prompt_index", "tokens_input", "tokens_output", "attempts"):
        if not isinstance(row[key], int):
            raise CheckpointError(f"a result has a wrong {key}: {row[key]!r:.40}")
    duration = row["duration"]
    if (
        not isinstance(row["response_text"], str)
        or not isinstance(duration, (int, float))
        or not 0 <= duration <= 1e12
    ):
        raise CheckpointError(f"result {row['prompt_index']} is damaged")
    thought_tokens = row["reasoning_tokens"]
    if thought_tokens is not None and (
        not isinstance(thought_tokens, int) or not 0 <= thought_tokens <= 2**62
    ):
        raise CheckpointError(f"result {row['prompt_index']} has a wrong reasoning_tokens")
    for key in ("ttft", "queue_wait"):
        if row[key] is not None and not isinstance(row[key], (int, float)):
            raise CheckpointError(f"result {row['prompt_index']} has a wrong {key}")
    if row["token_counts"] is not None and row["token_counts"] not in TOKEN_COUNTS:
        raise CheckpointError(f"result {row['prompt_index']} has a wrong token_counts")
    for key in (
        "error_message",
        "finish_reason",
        "started_at",
        "completed_at",
        "endpoint",
        "cached_from",
        "reasoning",
    ):
        if row[key] is not None and not isinstance(row[key], str):
            raise CheckpointError(f"result {row['prompt_index']} has a wrong {key}")
    row["success"] = bool(row["success"])
    row["invalid"] = bool(row["invalid"])
    output = row["output"]
    if output is not None:
        if not isinstance(output, str):
            raise CheckpointError(f"result {row['prompt_index']} has a wrong output")
        try:
            row["output"] = json.loads(output)
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"result {row['prompt_index']} has a damaged output") from None
    score, expected = row["score"], row["expected"]
    if score is not None and (not isinstance(score, (int, float)) or not 0 <= score <= 1):
        raise CheckpointError(f"result {row['prompt_index']} has a wrong score")
    if expected is not None:
        try:
            row["expected"] = json.loads(expected)
        except (TypeError, json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"result {row['prompt_index']} has a damaged expected") from None
    log = json.loads(row["attempt_log"]) if row["attempt_log"] else []
    if not isinstance(log, list):
        raise CheckpointError(f"result {row['prompt_index']} has a damaged attempt log")
    row["attempt_log"] = [Attempt.from_dict(a) for a in log]
    index = row["prompt_index"]
    return BatchResult(prompt=prompt.text, custom_id=prompt.custom_id or f"request-{index}", **row)


def result_row(result: BatchResult) -> tuple[Any, ...]:
    return (
        result.prompt_index,
        result.response_text,
        result.tokens_input,
        result.tokens_output,
        result.duration,
        int(result.success),
        result.error_message,
        result.attempts,
        result.finish_reason,
        result.started_at,
        result.completed_at,
        result.endpoint,
        json.dumps([a.to_dict() for a in result.attempt_log]) if result.attempt_log else None,
        result.ttft,
        result.queue_wait,
        result.token_counts,
        None if result.output is None else json.dumps(result.output, ensure_ascii=False),
        int(result.invalid),
        result.score,
        None if result.expected is None else json.dumps(result.expected, ensure_ascii=False),
        result.cached_from,
        result.reasoning,
        result.reasoning_tokens,
    )


# What each result column may hold, as SQL over the row (a checkpoint is untrusted: a
# crash or a person may have damaged it). A column an older format lacks is skipped.
# A checkpoint made now carries these as its tables' CHECK constraints, so SQLite refuses
# a wrong row as it is written and the readers need not look at each row again.
RESULT_CHECKS = {
    "prompt_index": "typeof(prompt_index) = 'integer'",
    "response_text": "typeof(response_text) = 'text'",
    "tokens_input": "typeof(tokens_input) = 'integer' AND tokens_input >= 0",
    "tokens_output": "typeof(tokens_output) = 'integer' AND tokens_output >= 0",
    "duration": "typeof(duration) IN ('real', 'integer') AND duration BETWEEN 0 AND 1e12",
    "success": "typeof(success) = 'integer' AND success IN (0, 1)",
    "error_message": "error_message IS NULL OR typeof(error_message) = 'text'",
    "attempts": "typeof(attempts) = 'integer' AND attempts >= 0",
    "finish_reason": "finish_reason IS NULL OR typeof(finish_reason) = 'text'",
    "started_at": "started_at IS NULL OR typeof(started_at) = 'text'",
    "completed_at": "completed_at IS NULL OR typeof(completed_at) = 'text'",
    "endpoint": "endpoint IS NULL OR typeof(endpoint) = 'text'",
    "attempt_log": "attempt_log IS NULL OR (typeof(attempt_log) = 'text' "
    "AND json_valid(attempt_log))",
    "ttft": "ttft IS NULL OR (typeof(ttft) IN ('real', 'integer') AND ttft BETWEEN 0 AND 1e12)",
    "queue_wait": "queue_wait IS NULL OR (typeof(queue_wait) IN ('real', 'integer') "
    "AND queue_wait BETWEEN 0 AND 1e12)",
    "token_counts": "token_counts IS NULL OR token_counts IN ('streamed', 'unknown')",
    "output": "output IS NULL OR (typeof(output) = 'text' AND json_valid(output))",
    "invalid": "invalid IN (0, 1)",
    "score": "score IS NULL OR (typeof(score) IN ('real', 'integer') AND score BETWEEN 0 AND 1)",
    "expected": "expected IS NULL OR (typeof(expected) = 'text' AND json_valid(expected))",
    "cached_from": "cached_from IS NULL OR typeof(cached_from) = 'text'",
    "reasoning": "reasoning IS NULL OR typeof(reasoning) = 'text'",
    "reasoning_tokens": "reasoning_tokens IS NULL OR (typeof(reasoning_tokens) = 'integer' "
    "AND reasoning_tokens >= 0)",
}


@dataclass(frozen=True, slots=True)
class ResultCounts:
    """What a run's last line says of a job's results, counted with SQL."""

    results: int = 0
    succeeded: int = 0
    empty: int = 0
    cached: int = 0
    invalid: int = 0
    thought_cut: int = 0  # failed as a thought with no answer after it
    tokens_output: int = 0  # generated here (not served from the cache)
    uncounted: int = 0  # answers generated here whose output tokens nobody counted
    scored: int = 0
    right: int = 0
    tokens_input: int = 0  # counted for answers generated here


def count_results(connection: sqlite3.Connection, schema: str = "main") -> ResultCounts:
    """The results of the checkpoint open as `schema`, counted in one pass (an older
    file lacking a column counts nothing of it)."""
    present = present_columns(connection, schema)
    cached = "cached_from IS NOT NULL" if "cached_from" in present else "0"
    invalid = "invalid" if "invalid" in present else "0"
    score = "score" if "score" in present else "NULL"
    unknown = "COALESCE(token_counts, '') = 'unknown'" if "token_counts" in present else "0"
    row = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(success), 0), "
        "COALESCE(SUM(success AND trim(response_text) = ''), 0), "
        f"COALESCE(SUM({cached}), 0), COALESCE(SUM({invalid}), 0), "
        "COALESCE(SUM(NOT success AND substr(COALESCE(error_message, ''), 1, ?) = ?), 0), "
        f"COALESCE(SUM(CASE WHEN NOT ({cached}) AND NOT ({unknown}) "
        "THEN tokens_output ELSE 0 END), 0), "
        f"COALESCE(SUM(NOT ({cached}) AND {unknown}), 0), "
        f"COUNT({score}), COALESCE(SUM({score} >= ?), 0), "
        f"COALESCE(SUM(CASE WHEN NOT ({cached}) THEN tokens_input ELSE 0 END), 0) "
        f"FROM {schema}.results",
        (len(INCOMPLETE_THOUGHT), INCOMPLETE_THOUGHT, RIGHT),
    ).fetchone()
    return ResultCounts(*(int(value) for value in row))


def present_columns(connection: sqlite3.Connection, schema: str = "main") -> set[str]:
    """The results table's columns in the checkpoint open as `schema` (an older format
    lacks the newer ones)."""
    return {row[1] for row in connection.execute(f"PRAGMA {schema}.table_info(results)")}


def check_rows(connection: sqlite3.Connection, schema: str = "main") -> None:
    """A CheckpointError naming the first damaged row of the checkpoint open as `schema`
    (a missing table, a result whose duration is text or infinite, bytes where text
    belongs, a prompt that is not JSON), so what reads the rows with SQL (stats, compare,
    the results viewer) can trust their types. One pass over each table, unless the
    table enforces the checks itself (a checkpoint made since they were its CHECK
    constraints: a wrong row was never written)."""
    try:
        present = present_columns(connection, schema)
        if not present:
            raise CheckpointError("the checkpoint has no results table")
        checks = {column: rule for column, rule in RESULT_CHECKS.items() if column in present}
        if not enforces(connection, schema, "results", checks.values()):
            wrong = " ".join(
                f"WHEN NOT ({rule}) THEN '{column}'" for column, rule in checks.items()
            )
            found = connection.execute(
                f"SELECT prompt_index, CASE {wrong} END AS wrong FROM {schema}.results "
                "WHERE wrong IS NOT NULL LIMIT 1"
            ).fetchone()
            if found is not None:
                raise CheckpointError(f"result {found[0]!r:.20} has a wrong {found[1]}")
        bad_prompt = None
        if not enforces(connection, schema, "prompts", [PROMPT_CHECK]):
            bad_prompt = connection.execute(
                f"SELECT idx FROM {schema}.prompts WHERE typeof(idx) != 'integer' "
                f"OR NOT ({PROMPT_CHECK}) LIMIT 1"
            ).fetchone()
    except sqlite3.Error as exc:
        raise CheckpointError(str(exc)) from None
    if bad_prompt is not None:
        raise CheckpointError(f"prompt {bad_prompt[0]!r:.20} is damaged")


# What a prompt's row holds: a JSON object with its text.
PROMPT_CHECK = "typeof(data) = 'text' AND json_valid(data) AND json_type(data, '$.text') IS 'text'"


def enforces(connection: sqlite3.Connection, schema: str, table: str, rules: Iterable[str]) -> bool:
    """Whether `table` of the checkpoint open as `schema` was made with each of `rules`
    as a CHECK constraint, word for word (SQLite then refused every row breaking one)."""
    row = connection.execute(
        f"SELECT sql FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    made = row[0] if row and isinstance(row[0], str) else ""
    return all(f"CHECK ({rule})" in made for rule in rules)
