"""The prompts of a run left to start, taken from the job's checkpoint a window at a time
(never a list of them all), with the rest of a streamed job's input read in, a chunk in
one transaction, when the checkpoint's run out."""

from __future__ import annotations

from collections.abc import Callable

from tui_batch.core.checkpoint_file import DuplicateId
from tui_batch.core.errors import DataFileError, PromptFileError, TemplateError, TuiBatchError
from tui_batch.core.jobs import BatchJob
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.store import CheckpointWriter
from tui_batch.core.stored import StoredPrompts

# Prompts taken from the checkpoint at a time (at least four times what runs at once).
WINDOW = 1024
# How the reason of a job stopped because its input could not be read on begins.
INPUT_STOPPED = "reading the input stopped"


class InputStopped(TuiBatchError):
    """The job's input cannot be read on (a record it cannot use, a duplicate id): the
    job stops with this reason; what was read in before stays and runs."""


class PendingPrompts:
    """The prompts of `job` with no result, in order, `window` at a time; `stream` (if
    any) the rest of its input. `read` is told of each chunk read in: the records of the
    file read so far, and whether that is all."""

    def __init__(
        self,
        writer: CheckpointWriter,
        job: BatchJob,
        stream: PromptStream | None,
        window: int,
        read: Callable[[int, bool], None],
    ) -> None:
        self.writer, self.job, self.stream = writer, job, stream
        self.window = max(WINDOW, window)
        self.read = read
        self.cursor = -1  # the last prompt index handed out

    def next_window(self) -> list[int]:
        """The next prompts with no result (empty: none are left); InputStopped where
        the input cannot be read on."""
        while True:
            window = self.writer.pending(self.cursor, self.window)
            if window:
                self.cursor = window[-1]
                return window
            if self.stream is None or self.stream.done:
                return []
            try:
                self._read_on(self.stream)
            except (PromptFileError, TemplateError, DataFileError) as exc:
                raise InputStopped(f"{INPUT_STOPPED}: {exc}") from None

    def _read_on(self, stream: PromptStream) -> None:
        """The next chunk of the job's input into its checkpoint."""
        job = self.job
        prompts = stream.chunk()
        job.reading = stream.reading()
        if stream.done and stream.template_source is not None:
            job.template = stream.template_source
        try:
            self.writer.add_prompts(job, prompts, stream.check_ids)
        except DuplicateId as exc:
            raise stream.duplicate(exc, job.prompts, prompts) from None
        if isinstance(job.prompts, StoredPrompts):
            job.prompts.grow(job.total_prompts)
        self.read(stream.records, stream.done)
