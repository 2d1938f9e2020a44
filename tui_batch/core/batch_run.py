"""One call of `BatchProcessor.process_batch`: the loop that keeps a backend busy, and
its bookkeeping (results, retries, checkpoints, pause, cancel, the error strategy).

Times are measured here, one way for every backend: a result's `duration` is its own
time, from the prompt's admission to a slot to its end with pauses left out, or, for a
backend that sends requests, the answering request's own time (then everything before it
is the result's `queue_wait`). Pauses stop the progress clock too.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tui_batch.core import events
from tui_batch.core.backend import Backend, Completion, Task, describe_error
from tui_batch.core.budget_guard import BudgetGuard
from tui_batch.core.cache.job_cache import JobCache
from tui_batch.core.cache.key import reproducible, sampling_of
from tui_batch.core.errors import CheckpointError
from tui_batch.core.invalid_answers import InvalidAnswers
from tui_batch.core.jobs import BatchJob, BatchResult, JobStatus, utc_now
from tui_batch.core.pending import InputStopped, PendingPrompts
from tui_batch.core.progress import ProgressTracker, ProgressUpdate
from tui_batch.core.prompt import Prompt
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT
from tui_batch.core.settings import ErrorStrategy
from tui_batch.core.store import CheckpointStore, CheckpointWriter
from tui_batch.core.stored import StoredPrompts

ProgressCallback = Callable[[ProgressUpdate], None]
EventCallback = Callable[[events.BatchEvent], None]
# How long an idle wait (paused, or a retry's backoff) sleeps before looking at cancel again.
IDLE_POLL = 0.05
CHECKED_ONLY = "checked, and run again when invalid (not enforced while generating)"


@dataclass(slots=True)
class _Started:
    """A prompt handed to the backend: when (on the run's clock, and as a date), which
    attempt, and how much paused time the run had then (what came later is left out)."""

    at: float
    date: str
    attempt: int
    paused: float
    # The job's prompt (a rerun's seed aside), not read again when it ends; None while
    # a replayable backend holds it (a Batch API's: for hours, thousands at once), read
    # back when it ends. Such a start is shared by the tasks of a second.
    prompt: Prompt | None


class BatchRun:
    """One call of `process_batch`: the loop and its bookkeeping. Setting `cancel` stops
    it after the current step; `pause` holds it until cleared."""

    def __init__(
        self,
        store: CheckpointStore,
        clock: Callable[[], float],
        job: BatchJob,
        backend: Backend,
        progress_callback: ProgressCallback | None,
        on_event: EventCallback | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.job = job
        self.backend = backend
        self.progress_callback = progress_callback
        self.on_event = on_event
        self.cancel = threading.Event()
        self.pause = threading.Event()
        self.strategy = ErrorStrategy.parse(job.error_strategy)
        self.results: dict[int, BatchResult] = {}
        self.unsaved: list[BatchResult] = []
        self.started: dict[int, _Started] = {}
        self._parked: dict[int, _Started] = {}  # attempt -> the latest shared start
        self.read_back: dict[int, Prompt] = {}  # parked prompts read back as they end
        self.first_text: dict[int, float] = {}  # when each running prompt first streamed
        self.retry_queue: list[tuple[float, int, int]] = []
        self.paused = 0.0  # seconds this run has spent paused so far
        self.invalid = InvalidAnswers(job)  # answers that broke the schema, run again
        self.cache: JobCache | None = None
        self.cache_opened = False
        # The job's budget kept (None: it has none); set once a prompt did not fit.
        self.guard: BudgetGuard | None = None
        self.over_budget = False
        self.served_shown = False
        # Keep every result for the caller (`process_batch` returns them); a job run from
        # a stream keeps none: its results are in the checkpoint.
        self.keep_results = True
        # The rest of the job's input, read in a chunk at a time as the prompts run out.
        self.stream: PromptStream | None = None

    def execute(
        self, retry_failed: bool, previous: Sequence[BatchResult] | None
    ) -> list[BatchResult]:
        """The run, with the job's lock held."""
        job = self.job
        writer = self.store.writer(job)
        try:
            invalid, cut = self._load_previous(writer, retry_failed, previous)
            self.tracker = ProgressTracker(
                job.total_prompts, job.completed, job.failed, self.clock, invalid, cut
            )
            if self.guard is not None:
                self.tracker.budget = self.guard.spent
            self.unstarted = PendingPrompts(
                writer, job, self.stream, 4 * self.backend.capacity, self._input_read
            )
            pending: deque[int] = deque()
            stopped = self._refill(writer, pending)
            if stopped is not None:
                status, reason = stopped
            elif pending:
                # Text streams always: its first piece times the prompt's first token.
                self.backend.begin(job, self._token)
                if job.settings.schema is not None:
                    how = self.backend.schema_mode or CHECKED_ONLY
                    self._emit(events.SchemaEnforced(how))
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
                self._commit(writer)
            raise
        finally:
            writer.close()
            if self.cache is not None:
                self.cache.close()
        return [self.results[i] for i in sorted(self.results)]

    def _load_previous(
        self,
        writer: CheckpointWriter,
        retry_failed: bool,
        previous: Sequence[BatchResult] | None,
    ) -> tuple[int, int]:
        """The results so far: kept (to return them) or counted; failed ones removed to
        run again (`retry_failed`). Returns the invalid answers and thoughts cut."""
        job = self.job
        if retry_failed:
            writer.remove_failed(job)
        if self.keep_results:
            if previous is None:
                _, previous = self.store.load(writer.path)
            self.results = {
                r.prompt_index: r for r in previous if not (retry_failed and not r.success)
            }
        counts = writer.counts()
        if job.budget is not None:
            self.guard = BudgetGuard(job, job.budget, counts, self.backend.input_tokens)
        job.completed, job.failed = counts.succeeded, counts.results - counts.succeeded
        return counts.invalid, counts.thought_cut

    def _refill(
        self, writer: CheckpointWriter, pending: deque[int]
    ) -> tuple[JobStatus, str] | None:
        """Take the next window of prompts with no result into `pending` (`PendingPrompts`);
        the answer cache serves what it can first. Returns why the job stops, where its
        input cannot be read on."""
        while not pending:
            try:
                window = self.unstarted.next_window()
            except InputStopped as exc:
                return JobStatus.FAILED, str(exc)
            if not window:
                return None
            if not self.cache_opened:
                self.cache_opened = True
                self.cache = JobCache.open(self.job, self.backend, self._cache_problem)
            if self.cache is not None and self.job.options.cache_reads:
                window = self._serve_cached(writer, self.cache, window)
            pending.extend(window)
        return None

    def _input_read(self, records: int, done: bool) -> None:
        self.tracker.total = self.job.total_prompts
        self._emit(events.InputRead(records, self.job.total_prompts, done))

    def _serve_cached(
        self, writer: CheckpointWriter, cache: JobCache, window: list[int]
    ) -> list[int]:
        """Record what the cache answers of `window` (saved at once, in one commit);
        return the prompts left to run."""
        served = cache.serve(window)
        ordered = [self._scored(served[index]) for index in sorted(served)]
        for result in ordered:
            if self.keep_results:
                self.results[result.prompt_index] = result
            self.unsaved.append(result)
        self.job.completed += len(served)
        self.tracker.completed += len(served)
        if served:
            self._commit(writer)
        left = [i for i in window if i not in served]
        if ordered or not self.served_shown:
            self.served_shown = True
            to_run = self.job.total_prompts - self.job.done
            self._emit(
                events.CacheServed(len(served), to_run, str(cache.cache.path), tuple(ordered))
            )
            if ordered:
                self._emit(events.ResultReady(self.tracker.update()))
        return left

    def _cache_problem(self, message: str) -> None:
        self._emit(events.CacheProblem(message))

    def _commit(self, writer: CheckpointWriter) -> None:
        """Save the job and the results not saved yet; then keep their answers in the
        cache (a checkpoint never lacks an answer the cache has from this run)."""
        writer.commit(self.job, self.unsaved)
        self.unsaved = []
        if self.cache is not None:
            self.cache.flush()

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
            while backend.in_flight < backend.capacity and not self.over_budget:
                if not pending:
                    stopped = self._refill(writer, pending)
                    if stopped is not None:
                        return stopped
                taken = self._next_task(pending)
                if taken is None:
                    break
                task, prompt = taken
                if self.guard is not None and not self.guard.take(task.index, task.prompt):
                    self._put_back(task, pending)  # no prompt starts after it
                    self.over_budget = True
                    break
                self.started[task.index] = (
                    self._parked_start(task.attempt)
                    if backend.replayable
                    else _Started(self.clock(), utc_now(), task.attempt, self.paused, prompt)
                )
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
                if self.over_budget and self.guard is not None:
                    return JobStatus.CANCELLED, self.guard.reason()
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
            if backend.replayable:
                self._read_back([completion.index for completion in finished])
            failed = [self._record(writer, completion) for completion in finished]
            if backend.replayable and self.unsaved:
                self._commit(writer)  # a step's answers stored together
            if any(failed) and self.strategy.should_stop(job.failed):
                return JobStatus.FAILED, f"error strategy {self.strategy} reached"
            stop = backend.stop_reason()
            if stop is not None:
                return JobStatus.CANCELLED, stop

    def _record(self, writer: CheckpointWriter, completion: Completion) -> bool:
        """Record a completion; True when it is a final failure."""
        result = self._complete(completion.checked())
        if result is None:
            if self.guard is not None:  # it runs again: reserved again when it starts
                self.guard.settle(completion.index, None)
            return False
        if len(self.unsaved) >= self.job.checkpoint_every and not self.backend.replayable:
            self._commit(writer)
        return not result.success

    def _put_back(self, task: Task, pending: deque[int]) -> None:
        """A task that may not start now, back where it came from."""
        if task.attempt > 1:
            heapq.heappush(self.retry_queue, (time.monotonic(), task.index, task.attempt))
        else:
            pending.appendleft(task.index)

    def _next_task(self, pending: deque[int]) -> tuple[Task, Prompt] | None:
        """The next task to start, and its prompt as the job holds it."""
        if self.retry_queue and self.retry_queue[0][0] <= time.monotonic():
            _, index, attempt = heapq.heappop(self.retry_queue)
            prompt = self.job.prompts[index]
            return Task(index, self.invalid.rerun(prompt, index), attempt), prompt
        if pending:
            index = pending.popleft()
            prompt = self.job.prompts[index]
            return Task(index, prompt, 1), prompt
        return None

    def _parked_start(self, attempt: int) -> _Started:
        """The start of a task a replayable backend holds: none of its prompt, and one
        record for the tasks of one attempt started within a second (a Batch API holds
        thousands for hours: a few bytes each)."""
        now = self.clock()
        kept = self._parked.get(attempt)
        if kept is None or now - kept.at > 1.0 or kept.paused != self.paused:
            kept = self._parked[attempt] = _Started(now, utc_now(), attempt, self.paused, None)
        return kept

    def _read_back(self, indices: list[int]) -> None:
        """The prompts of these finished tasks, held by none while they ran, read back
        together (in one query, where the job's prompts are in its checkpoint)."""
        parked = [i for i in indices if i in self.started and self.started[i].prompt is None]
        prompts = self.job.prompts
        found = prompts.many(parked) if isinstance(prompts, StoredPrompts) else {}
        for index in parked:
            self.read_back[index] = found.get(index) or prompts[index]

    def _complete(self, completion: Completion) -> BatchResult | None:
        """Record a finished task, or schedule its retry; return the result if recorded."""
        job = self.job
        started = self.started.pop(completion.index)
        prompt = (
            started.prompt
            or self.read_back.pop(completion.index, None)
            or job.prompts[completion.index]
        )
        first_text = self.first_text.pop(completion.index, None)
        attempt = started.attempt
        invalid = self.invalid.check(completion, started.date)
        if invalid is not None:
            heapq.heappush(self.retry_queue, (time.monotonic(), completion.index, attempt + 1))
            self._emit(
                events.PromptRetrying(completion.index, attempt + 1, f"invalid: {invalid}", 0.0)
            )
            return None
        earlier = self.invalid.earlier(completion.index)
        errors = attempt - earlier.count
        if (
            not completion.success
            and not completion.invalid
            and completion.retryable
            and (errors <= job.retries)
            and not self._thinks_the_same(completion, prompt)
        ):
            delay = job.retry_backoff * 2 ** (errors - 1)
            heapq.heappush(
                self.retry_queue, (time.monotonic() + delay, completion.index, attempt + 1)
            )
            self._emit(
                events.PromptRetrying(completion.index, attempt + 1, completion.error or "", delay)
            )
            return None
        # Its own time: paused time left out; a request's own, where a backend timed it.
        elapsed = max(0.0, self.clock() - started.at - (self.paused - started.paused))
        duration, queue_wait = elapsed, None
        if completion.duration is not None:
            duration = completion.duration
            queue_wait = round(max(0.0, elapsed - duration), 4)
        result = BatchResult(
            prompt_index=completion.index,
            prompt=prompt.text,
            response_text=completion.response_text,
            tokens_input=completion.tokens_input,
            tokens_output=completion.tokens_output,
            duration=duration,
            success=completion.success,
            error_message=completion.error,
            custom_id=prompt.custom_id or f"request-{completion.index}",
            attempts=completion.attempts + earlier.requests if completion.attempts else attempt,
            finish_reason=completion.finish_reason,
            started_at=started.date,
            completed_at=utc_now(),
            endpoint=completion.endpoint,
            attempt_log=earlier.attempts + completion.attempt_log,
            ttft=_ttft(completion, started.at, first_text),
            queue_wait=queue_wait,
            token_counts=completion.token_counts,
            output=completion.output,
            invalid=completion.invalid,
            reasoning=completion.reasoning,
            reasoning_tokens=completion.reasoning_tokens,
        )
        self._scored(result, prompt)
        if self.cache is not None:
            self.cache.keep(result, rerun=earlier.count > 0)
        self.invalid.settled(completion.index)
        if self.keep_results:
            self.results[completion.index] = result
        self.unsaved.append(result)
        if self.guard is not None:
            self.guard.settle(completion.index, result)
        update = self.tracker.record(result)
        job.completed, job.failed = update.completed, update.failed
        if self.progress_callback is not None:
            self.progress_callback(update)
        self._emit(events.ResultReady(update))
        return result

    def _thinks_the_same(self, completion: Completion, prompt: Prompt) -> bool:
        """A thought with no answer, whose rerun would think the same again (greedy,
        or a fixed seed): not worth its tokens."""
        if completion.error != INCOMPLETE_THOUGHT:
            return False
        return reproducible(sampling_of(prompt, self.job.settings))

    def _scored(self, result: BatchResult, prompt: Prompt | None = None) -> BatchResult:
        """`result` scored against its record's expected answer, if the job is scored
        (`prompt`: its prompt, where at hand)."""
        job = self.job
        if job.scoring is not None:
            prompt = prompt or job.prompts[result.prompt_index]
            result.score, result.expected = job.scoring.judge(
                prompt.variables,
                result.success,
                result.invalid,
                result.response_text,
                result.output,
                job.settings.schema,
            )
        return result

    def _wait_while_paused(self, writer: CheckpointWriter) -> None:
        self._set_status(writer, JobStatus.PAUSED)
        self.backend.pause()
        since = self.clock()
        self.tracker.pause()
        try:
            while self.pause.is_set() and not self.cancel.is_set():
                self.cancel.wait(IDLE_POLL)
        finally:
            self.paused += self.clock() - since
            self.tracker.resume()
        if not self.cancel.is_set():  # a cancel ends the run: the backend is ended paused
            self.backend.resume()
            self._set_status(writer, JobStatus.RUNNING)

    def _finish(self, writer: CheckpointWriter, status: JobStatus, reason: str | None) -> None:
        job = self.job
        if status is JobStatus.COMPLETED:
            job.completed_at = utc_now()
        job.status = status
        self._commit(writer)
        cache = self.cache
        if cache is not None and not cache.broken and (cache.kept or cache.left_out):
            self._emit(events.CacheKept(cache.kept, tuple(sorted(cache.left_out.items()))))
        self._emit(events.JobStateChanged(job.job_id, status, reason))

    def _set_status(self, writer: CheckpointWriter, status: JobStatus) -> None:
        self.job.status = status
        self._commit(writer)
        self._emit(events.JobStateChanged(self.job.job_id, status))

    def _token(self, index: int, text: str, thought: bool = False) -> None:
        if text and index in self.started and index not in self.first_text:
            self.first_text[index] = self.clock()
        if self.on_event is not None:
            self.on_event(events.TokensStreamed(index, text, thought))

    def _emit(self, event: events.BatchEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _ttft(completion: Completion, start: float, first_text: float | None) -> float | None:
    """Time to first token: the server's, measured on the request that answered, where
    there is one; else from the start to the first streamed text here."""
    if completion.attempt_log and completion.attempt_log[-1].ttft is not None:
        return completion.attempt_log[-1].ttft
    return None if first_text is None else max(0.0, first_text - start)
