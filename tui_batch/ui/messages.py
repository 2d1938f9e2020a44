"""Messages the batch worker thread posts to the app (thread-safe `post_message`).

Progress is not a message: the worker writes `RunState` and the screens read it on a
steady timer, so a burst of results costs one repaint per tick.
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from tui_batch.core.jobs import JobStatus


class JobFinished(Message):
    """A run has ended: how, where its results were written (or why they were not), and
    how many of its answers are empty."""

    def __init__(self, job_id: str, status: JobStatus, completed: int, failed: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.status = status
        self.completed = completed
        self.failed = failed
        self.empty = 0
        self.results_file: Path | None = None
        self.export_error: str | None = None
