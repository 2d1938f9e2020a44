"""BatchProcessor: the guide's API, driving a backend with checkpoints, retries and cancel."""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tui_batch.core import events
from tui_batch.core.backend import Backend, CallableBackend, Completion, Task, describe_error
from tui_batch.core.errors import CheckpointError
from tui_batch.core.export import export_results
from tui_batch.core.jobs import BatchJob, BatchResult, JobStatus, Prompt, utc_now
from tui_batch.core.paths import checkpoint_dir as default_checkpoint_dir
from tui_batch.core.progress import ProgressTracker, ProgressUpdate
from tui_batch.core.prompts import load_prompt_file
from tui_batch.core.rows import JobSummary
from tui_batch.core.settings import ErrorStrategy, GenerationSettings, JobOptions
from tui_batch.core.store import CheckpointStore, CheckpointWriter, JobLock

ProgressCallback = Callable[[ProgressUpdate], None]
EventCallback = Callable[[events.BatchEvent], None]
# How long an idle wait (paused, or a retry's backoff) sleeps before looking at cancel again.
IDLE_POLL = 0.05


class BatchProcessor:
    """Runs batch jobs and keeps their checkpoints in `checkpoint_dir`.

    `checkpoint_dir=None` means `<data dir>/checkpoints` (see `tui_batch.core.paths`).
    """

    def __init__(
        self,
        checkpoint_dir: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` times durations, elapsed and ETA (tests pass a fixed one)."""
        self.clock = clock
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
        self.store = CheckpointStore(self.checkpoint_dir)
        self.unreadable_checkpoints: list[JobSummary] = []

    def load_prompts_from_file(self, file_path: str | Path) -> list[Prompt]:
        """Prompts from a .txt, .json, .jsonl or .csv file (see `core.prompts`)."""
        return load_prompt_file(file_path).prompts

    def create_job(
        self,
        model_id: str,
        prompts: Sequence[str | Prompt],
        *,
        job_id: str | None = None,
        settings: GenerationSettings | None = None,
        **options: Any,
    ) -> BatchJob:
        """A new pending job, saved at once so it can be resumed from its first prompt.

        `options` are further BatchJob fields: error_strategy, retries, retry_backoff,
        checkpoint_every (or all four as `options=JobOptions(...)`), model_path,
        source_file, output_file, output_format. Nothing is left behind on failure.
        """
        if isinstance(options.get("options"), JobOptions):
            options.update(options.pop("options").to_dict())
        job = BatchJob(
            job_id=self._new_job_id() if job_id is None else job_id,
            model_id=model_id,
            prompts=[p if isinstance(p, Prompt) else Prompt(text=str(p)) for p in prompts],
            settings=settings or GenerationSettings(),
            **options,
        )
        self.store.create(job)
        return job

    def save_checkpoint(self, job: BatchJob, results: Sequence[BatchResult]) -> Path:
        """Save the job and these results (new ones are added, known ones replaced)."""
        return self.store.save(job, results)

    def load_checkpoint(self, checkpoint_file: str | Path) -> tuple[BatchJob, list[BatchResult]]:
        return self.store.load(checkpoint_file)

    def load_job(self, job_id: str) -> tuple[BatchJob, list[BatchResult]]:
        """Load a checkpoint by job id; an id that is not a plain name is an error."""
        return self.store.load_job(job_id)

    def job_summary(self, job_id: str) -> JobSummary:
        """A job's summary without its prompts or results (a quick look at any size)."""
        return self.store.summary(job_id)

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """The guide's listing: one dict per readable checkpoint, newest first, with
        `job_id`, `model_id`, `status`, `total_prompts`, `completed`, `failed`,
        `checkpoint_file`, `created_at`, `updated_at`, `size_bytes` and `resumable`.
        `job_summaries()` is the same as typed objects.

        Unreadable files are skipped and left in `self.unreadable_checkpoints`, each
        with the reason in its `unreadable` field.
        """
        return [summary.to_dict() for summary in self.job_summaries()]

    def job_summaries(self) -> list[JobSummary]:
        """Every readable checkpoint as a `JobSummary`, newest first (unreadable files
        are left in `self.unreadable_checkpoints`)."""
        summaries = self.store.scan()
        self.unreadable_checkpoints = [s for s in summaries if s.unreadable]
        return [s for s in summaries if not s.unreadable]

    def delete_checkpoint(self, job_id: str) -> None:
        """Delete a job's checkpoint; refused while the job runs."""
        self.store.delete(job_id)

    def delete_unreadable(self, path: Path) -> None:
        """Delete a damaged file that `list_checkpoints` reported (and only such a file)."""
        self.store.delete_file(path)

    def export_results(
        self,
        job: BatchJob,
        results: Sequence[BatchResult],
        output_file: str | Path,
        format: str = "json",
        **options: Any,
    ) -> Path:
        """Write `results` (see `core.export`); never over a checkpoint of this processor."""
        return export_results(
            job, results, output_file, format, protected=[self.checkpoint_dir], **options
        )

    def process_batch(
        self,
        job: BatchJob,
        execute_fn: Callable[[str], Any] | Backend,
        progress_callback: ProgressCallback | None = None,
        error_strategy: str | None = None,
        *,
        cancel_event: threading.Event | None = None,
        pause_event: threading.Event | None = None,
        retry_failed: bool = False,
        on_event: EventCallback | None = None,
        previous: Sequence[BatchResult] | None = None,
        lock: JobLock | None = None,
    ) -> list[BatchResult]:
        """Run every prompt of `job` that has no result yet; return all results by index.

        `execute_fn` is the guide's function of one prompt, or a Backend that may hold
        several prompts in flight. Setting `cancel_event` stops after the current step;
        setting `pause_event` holds the run until it is cleared. Either way, and on any
        error, every finished result is saved before this returns or raises. A prompt
        whose processing raises fails alone; the job goes on.

        The run takes the job's lock (one run of a job at a time), and reads the job's
        results so far from its checkpoint; a caller that holds the lock already passes
        it as `lock`, with the results it read under it as `previous`.

        A Backend passed in is begun and ended here, never closed: whoever made it
        closes it. With nothing left to run it is not even opened, and the job is just
        finished.
        """
        backend = execute_fn if isinstance(execute_fn, Backend) else CallableBackend(execute_fn)
        if error_strategy is not None:
            job.error_strategy = str(ErrorStrategy.parse(error_strategy))
        if previous is not None and (lock is None or not lock.covers(job.job_id)):
            raise ValueError("previous results must come with the job's lock held")
        run = _Run(self, job, backend, progress_callback, on_event, cancel_event, pause_event)
        if lock is not None and lock.covers(job.job_id):
            return run.execute(retry_failed, previous)
        with self.store.lock(job.job_id):
            return run.execute(retry_failed, previous)

    def _new_job_id(self) -> str:
        while True:
            job_id = uuid.uuid4().hex[:8]
            if not self.store.exists(job_id):
                return job_id


class _Run:
    """One call of `process_batch`: the loop and its bookkeeping."""

    def __init__(
        self,
        processor: BatchProcessor,
        job: BatchJob,
        backend: Backend,
        progress_callback: ProgressCallback | None,
        on_event: EventCallback | None,
        cancel_event: threading.Event | None,
        pause_event: threading.Event | None,
    ) -> None:
        self.store = processor.store
        self.clock = processor.clock
        self.job = job
        self.backend = backend
        self.progress_callback = progress_callback
        self.on_event = on_event
        self.cancel = cancel_event or threading.Event()
        self.pause = pause_event or threading.Event()
        self.strategy = ErrorStrategy.parse(job.error_strategy)
        self.results: dict[int, BatchResult] = {}
        self.unsaved: list[BatchResult] = []
        self.started: dict[int, tuple[float, str, int]] = {}
        self.first_text: dict[int, float] = {}  # when each running prompt first streamed
        self.retry_queue: list[tuple[float, int, int]] = []

    def execute(
        self, retry_failed: bool, previous: Sequence[BatchResult] | None
    ) -> list[BatchResult]:
        """The run, with the job's lock held."""
        job = self.job
        writer = self.store.writer(job)
        try:
            self._load_previous(writer, retry_failed, previous)
            pending = deque(i for i in range(job.total_prompts) if i not in self.results)
            self.tracker = ProgressTracker(job.total_prompts, job.completed, job.failed, self.clock)
            if pending:
                # Text streams always: its first piece times the prompt's first token.
                self.backend.begin(job, self._token)
                try:
                    status, reason = self._loop(writer, pending)
                finally:
                    self.backend.end()
            else:
                status, reason = JobStatus.COMPLETED, None
            self._finish(writer, status, reason)
        except BaseException as exc:
            # A crash of the backend or the disk, or a KeyboardInterrupt: keep what finished.
            if job.status in (JobStatus.RUNNING, JobStatus.PAUSED):
                interrupted = isinstance(exc, KeyboardInterrupt)
                job.status = JobStatus.CANCELLED if interrupted else JobStatus.FAILED
            # If the disk failed before it fails again: then the last commit stands.
            with contextlib.suppress(CheckpointError):
                writer.commit(job, self.unsaved)
            raise
        finally:
            writer.close()
        return [self.results[i] for i in sorted(self.results)]

    def _load_previous(
        self,
        writer: CheckpointWriter,
        retry_failed: bool,
        previous: Sequence[BatchResult] | None,
    ) -> None:
        job = self.job
        if previous is None:
            _, previous = self.store.load(writer.path)
        self.results = {r.prompt_index: r for r in previous}
        if retry_failed:
            failed = [i for i, r in self.results.items() if not r.success]
            for index in failed:
                del self.results[index]
            if failed:
                writer.remove(job, failed)
        job.completed = sum(1 for r in self.results.values() if r.success)
        job.failed = len(self.results) - job.completed

    def _loop(self, writer: CheckpointWriter, pending: deque[int]) -> tuple[JobStatus, str | None]:
        job, backend = self.job, self.backend
        job.started_at = job.started_at or utc_now()
        self._set_status(writer, JobStatus.RUNNING)
        while True:
            if self.cancel.is_set():
                return JobStatus.CANCELLED, "cancelled"
            if self.pause.is_set():
                self._wait_while_paused(writer)
                continue
            broken: list[Completion] = []
            while backend.in_flight < backend.capacity:
                task = self._next_task(pending)
                if task is None:
                    break
                self.started[task.index] = (self.clock(), utc_now(), task.attempt)
                self.first_text.pop(task.index, None)
                self._emit(events.PromptStarted(task.index, task.attempt))
                try:
                    backend.submit(task)
                except Exception as exc:  # noqa: BLE001 - one prompt's failure is its own
                    broken.append(
                        Completion(task.index, error=describe_error(exc), retryable=False)
                    )
            failed = [self._record(writer, completion) for completion in broken]
            if any(failed) and self.strategy.should_stop(job.failed):
                return JobStatus.FAILED, f"error strategy {self.strategy} reached"
            if backend.in_flight == 0:
                if not self.retry_queue:
                    return JobStatus.COMPLETED, None
                self.cancel.wait(
                    min(IDLE_POLL * 4, max(0.0, self.retry_queue[0][0] - time.monotonic()))
                )
                continue
            try:
                finished = backend.step()
            except Exception as exc:  # noqa: BLE001 - a broken step fails what was in it
                error = describe_error(exc)
                finished = [Completion(i, error=error, finish_reason=None) for i in backend.abort()]
            failed = [self._record(writer, completion) for completion in finished]
            if any(failed) and self.strategy.should_stop(job.failed):
                return JobStatus.FAILED, f"error strategy {self.strategy} reached"

    def _record(self, writer: CheckpointWriter, completion: Completion) -> bool:
        """Record a completion; True when it is a final failure."""
        result = self._complete(completion)
        if result is None:
            return False
        if len(self.unsaved) >= self.job.checkpoint_every:
            writer.commit(self.job, self.unsaved)
            self.unsaved = []
        return not result.success

    def _next_task(self, pending: deque[int]) -> Task | None:
        if self.retry_queue and self.retry_queue[0][0] <= time.monotonic():
            _, index, attempt = heapq.heappop(self.retry_queue)
            return Task(index, self.job.prompts[index], attempt)
        if pending:
            index = pending.popleft()
            return Task(index, self.job.prompts[index], 1)
        return None

    def _complete(self, completion: Completion) -> BatchResult | None:
        """Record a finished task, or schedule its retry; return the result if recorded."""
        job = self.job
        start, started_at, attempt = self.started.pop(completion.index)
        first_text = self.first_text.pop(completion.index, None)
        if not completion.success and completion.retryable and attempt <= job.retries:
            delay = job.retry_backoff * 2 ** (attempt - 1)
            heapq.heappush(
                self.retry_queue, (time.monotonic() + delay, completion.index, attempt + 1)
            )
            self._emit(
                events.PromptRetrying(completion.index, attempt + 1, completion.error or "", delay)
            )
            return None
        result = BatchResult(
            prompt_index=completion.index,
            prompt=job.prompts[completion.index].text,
            response_text=completion.response_text,
            tokens_input=completion.tokens_input,
            tokens_output=completion.tokens_output,
            duration=self.clock() - start,
            success=completion.success,
            error_message=completion.error,
            custom_id=job.custom_id(completion.index),
            attempts=completion.attempts or attempt,
            finish_reason=completion.finish_reason,
            started_at=started_at,
            completed_at=utc_now(),
            endpoint=completion.endpoint,
            attempt_log=completion.attempt_log,
            ttft=_ttft(completion, start, first_text),
        )
        self.results[completion.index] = result
        self.unsaved.append(result)
        update = self.tracker.record(result)
        job.completed, job.failed = update.completed, update.failed
        if self.progress_callback is not None:
            self.progress_callback(update)
        self._emit(events.ResultReady(update))
        return result

    def _wait_while_paused(self, writer: CheckpointWriter) -> None:
        self._set_status(writer, JobStatus.PAUSED)
        self.backend.pause()
        while self.pause.is_set() and not self.cancel.is_set():
            self.cancel.wait(IDLE_POLL)
        if not self.cancel.is_set():  # a cancel ends the run: the backend is ended paused
            self.backend.resume()
            self._set_status(writer, JobStatus.RUNNING)

    def _finish(self, writer: CheckpointWriter, status: JobStatus, reason: str | None) -> None:
        job = self.job
        if status is JobStatus.COMPLETED:
            job.completed_at = utc_now()
        job.status = status
        writer.commit(job, self.unsaved)
        self.unsaved = []
        self._emit(events.JobStateChanged(job.job_id, status, reason))

    def _set_status(self, writer: CheckpointWriter, status: JobStatus) -> None:
        self.job.status = status
        writer.commit(self.job, self.unsaved)
        self.unsaved = []
        self._emit(events.JobStateChanged(self.job.job_id, status))

    def _token(self, index: int, text: str) -> None:
        if text and index in self.started and index not in self.first_text:
            self.first_text[index] = self.clock()
        if self.on_event is not None:
            self.on_event(events.TokensStreamed(index, text))

    def _emit(self, event: events.BatchEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _ttft(completion: Completion, start: float, first_text: float | None) -> float | None:
    """Time to first token: the server's, measured on the request that answered, where
    there is one; else from the start to the first streamed text here."""
    if completion.attempt_log and completion.attempt_log[-1].ttft is not None:
        return completion.attempt_log[-1].ttft
    return None if first_text is None else max(0.0, first_text - start)
