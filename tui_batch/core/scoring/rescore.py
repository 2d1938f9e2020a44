"""A finished job's answers scored again, with other settings, without running a prompt
(`tui-batch score`): every result's score and expected value replaced in one
transaction, the job's scoring with them."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from tui_batch.core.checkpoint_file import connect_read_only, read_header, read_snapshot
from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchJob, Prompt
from tui_batch.core.rows import check_rows, present_columns
from tui_batch.core.scoring.methods import RIGHT, Scoring
from tui_batch.core.scoring.records import check_expected
from tui_batch.core.store import CheckpointStore


@dataclass(frozen=True, slots=True)
class Rescored:
    """What scoring a job again gave: results scored, right, and left unscored."""

    job_id: str
    scoring: Scoring
    scored: int
    right: int
    unscored: int

    @property
    def accuracy(self) -> float | None:
        return self.right / self.scored if self.scored else None


def rescore(store: CheckpointStore, job_id: str, scoring: Scoring) -> Rescored:
    """Score every result of job `job_id` with `scoring` and save it; refused while the
    job runs (its lock is held), and for a value of the expected column the method
    cannot read (nothing is changed then)."""
    path = store.path_for(job_id)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint for job {job_id!r}")
    with store.lock(job_id):
        try:
            with closing(connect_read_only(path)) as connection, read_snapshot(connection):
                header = read_header(connection)
                job = BatchJob.from_header(header, [])
                check_rows(connection)
                records = [
                    Prompt("", line=line, variables=_variables(variables))
                    for variables, line in connection.execute(
                        "SELECT json_extract(data, '$.variables'), json_extract(data, '$.line') "
                        "FROM prompts ORDER BY idx"
                    )
                ]
                results = connection.execute(
                    "SELECT prompt_index, success, invalid, response_text, output FROM results"
                    if "invalid" in present_columns(connection)
                    else "SELECT prompt_index, success, 0, response_text, NULL FROM results"
                ).fetchall()
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
        check_expected(scoring, records)
        schema = job.settings.schema
        scores = []
        right = scored = 0
        for index, success, invalid, text, output in results:
            score, expected = scoring.judge(
                records[index].variables if 0 <= index < len(records) else None,
                bool(success),
                bool(invalid),
                text,
                json.loads(output) if output is not None else None,
                schema,
            )
            if score is not None:
                scored += 1
                right += score >= RIGHT
            shown = None if expected is None else json.dumps(expected, ensure_ascii=False)
            scores.append((score, shown, index))
        with store.writer(job) as writer:
            writer.set_scores({**header, "scoring": scoring.to_dict()}, scores)
    return Rescored(job.job_id, scoring, scored, right, len(results) - scored)


def _variables(text: str | None) -> dict[str, Any] | None:
    """A stored prompt's record, which must be an object (a CheckpointError if not)."""
    value = json.loads(text) if text else None
    if value is not None and not isinstance(value, dict):
        raise CheckpointError("a prompt's variables are not an object")
    return value
