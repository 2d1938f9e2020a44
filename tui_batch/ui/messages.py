"""Messages the batch worker thread posts to the app (thread-safe `post_message`)."""

from __future__ import annotations

from textual.message import Message

from tui_batch.core.jobs import JobStatus


class ResultFinished(Message):
    """One or more results finished since the last of these (bursts are merged)."""

    def __init__(self, job_id: str, done: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.done = done

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ResultFinished)


class TokensStreamed(Message):
    """New text for a running prompt (merged like ResultFinished)."""

    def __init__(self, job_id: str, index: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.index = index

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TokensStreamed)


class JobStateChanged(Message):
    def __init__(self, job_id: str, status: JobStatus, reason: str | None = None) -> None:
        super().__init__()
        self.job_id = job_id
        self.status = status
        self.reason = reason


class JobFinished(Message):
    def __init__(self, job_id: str, status: JobStatus, completed: int, failed: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.status = status
        self.completed = completed
        self.failed = failed


class JobError(Message):
    """The run could not start or broke off (a model that will not load, say)."""

    def __init__(self, job_id: str, error: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.error = error
