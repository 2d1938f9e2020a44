"""A finished job's results as the records of a data file (`--data job:ID`), so a second
job can judge, translate or summarise the first one's answers with a template.

Each answered result is a record: the first job's record fields (`variables`), then the
answer's fields where it has a schema (a choices job's `label`), then `id`, `prompt`,
`response` (the answer's text), `output` (its JSON value), and where they exist
`expected`, `score` and `repeat`. A failed or invalid result is no record: there is no
answer to work on. Records are numbered by the first job's prompt index + 1.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import (
    CHECKPOINT_PREFIX,
    CHECKPOINT_SUFFIX,
    connect_read_only,
    read_header,
    read_snapshot,
)
from tui_batch.core.errors import CheckpointError, DataFileError
from tui_batch.core.jobs import BatchJob, Prompt, validate_job_id
from tui_batch.core.paths import checkpoint_dir
from tui_batch.core.rows import check_rows, present_columns
from tui_batch.core.store import CheckpointStore
from tui_batch.core.structured.schema import LABEL

JOB_PREFIX = "job:"
# The fields every record has, which a first job's own field of the same name yields to.
OWN_FIELDS = ("id", "prompt", "response", "output", "expected", "score", "repeat")


def job_data_file(value: str | Path) -> Path | None:
    """The checkpoint `job:ID` names (None: `value` is a plain path); a DataFileError
    when there is no such job."""
    text = str(value)
    if not text.startswith(JOB_PREFIX):
        return None
    job_id = text[len(JOB_PREFIX) :].strip()
    try:
        validate_job_id(job_id)
    except CheckpointError as exc:
        raise DataFileError(f"Data {text!r:.80}: {exc}") from None
    path = checkpoint_dir() / f"{CHECKPOINT_PREFIX}{job_id}{CHECKPOINT_SUFFIX}"
    if not path.is_file():
        raise DataFileError(f"Data {text}: no job {job_id!r} in {checkpoint_dir()}")
    try:
        summary = CheckpointStore(checkpoint_dir()).summary(job_id)
    except CheckpointError as exc:
        raise DataFileError(f"Data {text}: {exc}") from None
    if not summary.finished:
        # Its answers so far are not the job's: a chained job would silently miss the rest.
        how = (
            "it is running: wait until it finishes"
            if summary.live
            else f"it is {summary.state}: finish it first (tui-batch resume {job_id})"
        )
        raise DataFileError(
            f"Data {text}: {summary.done:,} of {summary.total_prompts:,} prompts answered; {how}"
        )
    return path


def job_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each answered result of the job in checkpoint `path` as a record, with its number."""
    try:
        with closing(connect_read_only(path)) as connection, read_snapshot(connection):
            job = BatchJob.from_header(read_header(connection), [])
            check_rows(connection)
            columns = present_columns(connection)
            extra = [c if c in columns else "NULL" for c in ("output", "expected", "score")]
            rows = connection.execute(
                f"SELECT r.prompt_index, r.response_text, {', '.join(extra)}, p.data "
                "FROM results r JOIN prompts p ON p.idx = r.prompt_index "
                "WHERE r.success = 1 ORDER BY r.prompt_index"
            )
            for index, text, output, expected, score, data in rows:
                yield index + 1, _record(job, index, text, output, expected, score, data)
    except (sqlite3.Error, ValueError, CheckpointError) as exc:
        raise DataFileError(f"{path}: not a readable job checkpoint ({exc})") from None


def _record(
    job: BatchJob,
    index: int,
    text: str,
    output: str | None,
    expected: str | None,
    score: float | None,
    data: str,
) -> dict[str, Any]:
    prompt = Prompt.from_dict(json.loads(data))  # checked: a CheckpointError if damaged
    record: dict[str, Any] = dict(prompt.variables or {})
    value = json.loads(output) if output is not None else None
    if isinstance(value, dict):
        record.update((k, v) for k, v in value.items() if k not in OWN_FIELDS)
    elif value is not None and job.settings.schema is not None and job.settings.schema.choices:
        record[LABEL] = value
    record.update(
        id=prompt.custom_id or f"request-{index}",
        prompt=prompt.text,
        response=text,
        output=value,
    )
    if expected is not None:
        record["expected"] = json.loads(expected)
    if score is not None:
        record["score"] = score
    if prompt.repeat is not None:
        record["repeat"] = prompt.repeat
    return record
