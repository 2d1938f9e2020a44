"""A job's scores read from its checkpoint with SQL (the stats' part of them): accuracy's
totals, a confusion matrix per choice or enum field scored, and how alike the runs of
each prompt answered in a job of repeats."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tui_batch.core.jobs import BatchJob
from tui_batch.core.rows import present_columns
from tui_batch.core.scoring.figures import Confusion, RepeatFigures, agreement_of
from tui_batch.core.scoring.methods import RIGHT, Scoring, plain_text
from tui_batch.core.structured.schema import AnswerSchema


def score_totals(connection: sqlite3.Connection) -> tuple[int, int, float | None] | None:
    """Results scored, right, and the mean score (None: a checkpoint from before scores)."""
    if "score" not in present_columns(connection):
        return None
    scored, right, mean = connection.execute(
        "SELECT COUNT(score), TOTAL(score >= ?), AVG(score) FROM results", (RIGHT,)
    ).fetchone()
    return scored, int(right), mean


def confusions(
    connection: sqlite3.Connection, scoring: Scoring, schema: AnswerSchema | None
) -> list[Confusion]:
    """A confusion matrix per choice or enum field scored: the schema's labels, then any
    other expected label (case-folded onto a label where one matches), against the
    answers' (one outside the labels, or none, is OTHER)."""
    labels = schema.label_fields() if schema is not None else {}
    found = []
    for name, (expected_path, answer_path) in scoring.label_paths(schema).items():
        confusion = Confusion(
            name, [label_text(v) for v in labels[name]], {}, expected_path, answer_path
        )
        known = {label.casefold(): label for label in confusion.labels}
        for expected, answered, count in connection.execute(
            "SELECT json_extract(expected, ?) AS e, json_extract(output, ?) AS a, COUNT(*) "
            "FROM results WHERE score IS NOT NULL GROUP BY e, a",
            (expected_path, answer_path),
        ):
            if expected is None:
                continue
            row_label = known.get(label_text(expected).strip().casefold(), label_text(expected))
            if row_label not in confusion.labels:
                confusion.labels.append(row_label)
                known[row_label.casefold()] = row_label
            column = label_text(answered) if answered is not None else Confusion.OTHER
            if column not in known.values():
                column = Confusion.OTHER
            row = confusion.counts.setdefault(row_label, {})
            row[column] = row.get(column, 0) + count
        found.append(confusion)
    return found


def repeat_figures(connection: sqlite3.Connection, job: BatchJob) -> RepeatFigures:
    """How alike each prompt's runs answered: the part of the answer that is scored,
    else its JSON value, else its text, made alike as `exact` compares (a failed or
    invalid run is not an answer)."""
    extra = "output, score" if "score" in present_columns(connection) else "NULL, NULL"
    schema, scoring = job.settings.schema, job.scoring
    answers = []
    for index, success, text, output, score in connection.execute(
        f"SELECT prompt_index, success, response_text, {extra} FROM results ORDER BY prompt_index"
    ):
        key = None
        if success:
            value = json.loads(output) if output is not None else None
            if scoring is not None:
                key = plain_text(scoring.compared(text, value, schema))
            elif value is not None:
                key = json.dumps(value, sort_keys=True, ensure_ascii=False)
            else:
                key = plain_text(text)
        answers.append((index, key, score))
    return agreement_of(job.repeats, answers)


def label_text(value: Any) -> str:
    """A label as text: itself, or its JSON (an enum of numbers)."""
    return value if isinstance(value, str) else json.dumps(value)
