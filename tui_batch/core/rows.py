"""How a checkpoint's rows become results and summaries, and results become rows.

The store writes and reads these; the results view reads them too, through the same
functions, so a damaged row is refused the same way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import Attempt, BatchResult, JobStatus, Prompt
from tui_batch.core.template_source import TemplateSource

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

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def finished(self) -> bool:
        """Every prompt has a result (some may have failed)."""
        return self.done >= self.total_prompts

    @property
    def resumable(self) -> bool:
        """Prompts are left to run and the job was stopped (cancelled, paused, stopped by
        its error strategy, never started, or killed while running): `resume` goes on."""
        return not self.unreadable and not self.finished and self.status is not JobStatus.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["resumable"] = self.resumable
        data.pop("template")
        return data


def result_from_row(values: Sequence[Any], prompt: Prompt) -> BatchResult:
    """A result from a `results` row (RESULT_COLUMNS, in order) and its prompt."""
    row = dict(zip(RESULT_COLUMNS, values, strict=True))
    for key in ("prompt_index", "tokens_input", "tokens_output", "attempts"):
        if not isinstance(row[key], int):
            raise CheckpointError(f"a result has a wrong {key}: {row[key]!r:.40}")
    if not isinstance(row["response_text"], str) or not isinstance(row["duration"], (int, float)):
        raise CheckpointError(f"result {row['prompt_index']} is damaged")
    if row["ttft"] is not None and not isinstance(row["ttft"], (int, float)):
        raise CheckpointError(f"result {row['prompt_index']} has a wrong ttft")
    for key in ("error_message", "finish_reason", "started_at", "completed_at", "endpoint"):
        if row[key] is not None and not isinstance(row[key], str):
            raise CheckpointError(f"result {row['prompt_index']} has a wrong {key}")
    row["success"] = bool(row["success"])
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
    )
