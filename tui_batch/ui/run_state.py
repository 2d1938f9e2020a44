"""The state of the job being run, shared by the worker thread and the screens.

The worker thread writes it under a lock as core events arrive; screens read it on a
steady timer. So a burst of 1,000 results a second costs one repaint per tick, not
1,000, and keys are answered between ticks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from tui_batch.core import events
from tui_batch.core.backend import Backend, BackendStatus
from tui_batch.core.jobs import BatchJob, BatchResult, JobStatus
from tui_batch.core.progress import ProgressUpdate
from tui_batch.core.stored import result_states, saved_requests
from tui_batch.ui.prompt_states import PromptStatuses, RecentResults

HISTORY_SECONDS = 120
# The throughput chart shows tokens/s averaged over this many seconds: completions
# arrive in bursts (a parallel batch finishes together), per-second counts are spiky.
SMOOTHING_SECONDS = 5


class RunState:
    """One run of one job: statuses per prompt, finished results, live text, figures."""

    def __init__(
        self,
        job: BatchJob,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A new job's run; a saved job's starts from its checkpoint (`resumed`)."""
        self.clock = clock
        self.job = job
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.pause = threading.Event()
        self.status = PromptStatuses(job.total_prompts)
        # The latest results; the screen reads older ones from the checkpoint (`result`).
        self.results = RecentResults()
        self.recorded = 0
        self.failed: list[int] = []
        # Requests sent and failed at each server, from the results' attempt logs: the
        # counts `tui-batch stats` gives, so both screens say the same.
        self.requests: dict[str, list[int]] = {}
        self.running: dict[int, int] = {}  # prompt index -> attempt
        self.live_index: int | None = None
        self.live_text: dict[int, list[str]] = {}
        # A thinking model's thought so far, for prompts still running.
        self.live_thought: dict[int, list[str]] = {}
        self.update: ProgressUpdate | None = None
        # Records of the job's input read so far, while it is read in as the job runs.
        self.records_read = job.reading.position if job.reading is not None else None
        self.job_status = job.status
        self.error: str | None = None
        self.finished = False
        self.version = 0
        self._buckets: deque[tuple[int, int, int]] = deque(maxlen=HISTORY_SECONDS)
        self._streamed: dict[int, int] = {}  # pieces counted so far, by prompt running
        self.tokens_counted = 0  # this run's, streamed or settled by results
        self._started = clock()
        self._paused = 0.0  # seconds spent paused: the clock and tok/s leave them out
        self._paused_since: float | None = None
        # The backend running the job, once the worker has made it (for its status).
        self.backend: Backend | None = None
        # How the job's schema is kept, once the backend has begun (None: no schema).
        self.schema_how: str | None = None
        # What the answer cache did for the run (served so many), or why it could not.
        self.cache_note: str | None = None
        self.cache_problem = False

    @classmethod
    def resumed(
        cls, job: BatchJob, clock: Callable[[], float] = time.monotonic, retry_failed: bool = False
    ) -> RunState:
        """The state a saved job's run starts from, read from its checkpoint with SQL: a
        status byte a result and the requests by server, never the results themselves
        (the screen reads a row's result back as it shows it)."""
        state = cls(job, clock)
        path = job.checkpoint_file
        assert path is not None
        for index, status in result_states(path):
            if status == "ok" or not retry_failed:
                state.recorded += 1
                state.status[index] = status
                if status != "ok":
                    state.failed.append(index)
        state.requests = saved_requests(path, succeeded_only=retry_failed)
        return state

    def _record(self, result: BatchResult) -> None:
        self.results.put(result)
        self.recorded += 1
        self.status[result.prompt_index] = (
            "ok" if result.success else "invalid" if result.invalid else "failed"
        )
        if not result.success:
            self.failed.append(result.prompt_index)
        for attempt in result.attempt_log if result.endpoint is not None else ():
            tally = self.requests.setdefault(attempt.endpoint, [0, 0])
            tally[0] += 1
            # A request called back by a pause is no error of its server, nor is an
            # answer that broke the schema.
            tally[1] += attempt.error is not None and not attempt.error.startswith(
                ("cancelled:", "invalid:")
            )

    def handle(self, event: events.BatchEvent) -> None:
        """Apply a core event (worker thread); the screens see it at their next tick."""
        with self.lock:
            self.version += 1
            if isinstance(event, events.TokensStreamed):
                live = self.live_thought if event.thought else self.live_text
                live.setdefault(event.index, []).append(event.text)
                self.live_index = event.index
                # The chart counts tokens as they come (a piece is about a token), so
                # many prompts decoded together show a steady rate, not a burst as each
                # finishes; the result settles the count.
                self._streamed[event.index] = self._streamed.get(event.index, 0) + 1
                self._count(0, 1)
                return
            if isinstance(event, events.ResultReady):
                result = event.update.result
                self.update = event.update
                if result is not None:
                    self._record(result)
                    self.running.pop(result.prompt_index, None)
                    self.live_text.pop(result.prompt_index, None)
                    self.live_thought.pop(result.prompt_index, None)
                    streamed = self._streamed.pop(result.prompt_index, 0)
                    self._count(1, max(0, result.tokens_output - streamed))
                return
            if isinstance(event, events.PromptStarted):
                self.running[event.index] = event.attempt
                self.status[event.index] = "running" if event.attempt == 1 else "retrying"
                self.live_text[event.index] = []
                self.live_thought.pop(event.index, None)
                self._streamed[event.index] = 0
                self.live_index = event.index
                return
            if isinstance(event, events.PromptRetrying):
                self.running.pop(event.index, None)
                self.status[event.index] = "retrying"
                return
            if isinstance(event, events.InputRead):
                self.records_read = None if event.done else event.records
                return
            if isinstance(event, events.SchemaEnforced):
                self.schema_how = event.how
                return
            if isinstance(event, events.CacheServed):
                for result in event.results:
                    self._record(result)
                self._count(len(event.results), 0)  # no token generated here
                self.cache_note = (
                    f"cache: {event.served:,} of {event.served + event.to_run:,} answers "
                    f"served, {event.to_run:,} to run"
                )
                return
            if isinstance(event, events.CacheProblem):
                self.cache_note, self.cache_problem = event.message, True
                return
            if isinstance(event, events.JobStateChanged):
                self.job_status = event.status
                if event.status is JobStatus.PAUSED and self._paused_since is None:
                    self._paused_since = self.clock()
                elif event.status is not JobStatus.PAUSED and self._paused_since is not None:
                    self._paused += self.clock() - self._paused_since
                    self._paused_since = None
                if event.status in (JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.COMPLETED):
                    for index in self.running:
                        if self.status[index] in ("running", "retrying"):
                            self.status[index] = "pending"
                    self.running.clear()
                    self._streamed.clear()

    def _count(self, results: int, tokens: int) -> None:
        self.tokens_counted += tokens
        second = int(self.clock() - self._started)
        if self._buckets and self._buckets[-1][0] == second:
            _, results_then, tokens_then = self._buckets[-1]
            self._buckets[-1] = (second, results_then + results, tokens_then + tokens)
        else:
            self._buckets.append((second, results, tokens))

    def live_figures(self) -> tuple[float, float]:
        """Seconds the run has been running (paused time left out), and its tokens a
        second, tokens counted as they stream: unlike the last result's figures, these
        move while prompts generate."""
        now = self._paused_since if self._paused_since is not None else self.clock()
        elapsed = max(now - self._started - self._paused, 1e-9)
        return elapsed, self.tokens_counted / elapsed

    def history(self) -> tuple[list[float], str]:
        """Throughput over the last two minutes, one value a second, oldest first, and
        its unit: tokens/s (or prompts/s when a backend reports no tokens), each second
        the average of the SMOOTHING_SECONDS up to it. Padded with zeros to the full
        width, so the chart grows from the right and starts from a zero baseline."""
        with self.lock:
            buckets = list(self._buckets)
        now = int(self.clock() - self._started)
        if not buckets:
            return [0.0] * HISTORY_SECONDS, "tokens/s"
        use_tokens = any(tokens for _, _, tokens in buckets)
        by_second = {s: (t if use_tokens else r) for s, r, t in buckets}
        last = max(0, now - 1)  # the current second is still filling up
        values = []
        for second in range(last - HISTORY_SECONDS + 1, last + 1):
            window = range(max(0, second - SMOOTHING_SECONDS + 1), second + 1)
            span = len(window) if second >= 0 else 1
            values.append(sum(by_second.get(w, 0) for w in window) / span)
        return values, "tokens/s" if use_tokens else "prompts/s"

    def backend_status(self) -> BackendStatus | None:
        """What the backend says it is doing (servers: requests, limits, endpoints); after
        the run, how it ended (requests sent, errors)."""
        backend = self.backend
        return None if backend is None else backend.status()

    def live(self) -> tuple[int | None, str, str]:
        """The oldest running prompt, its thought and its text so far (several run at
        once in parallel mode; following one keeps the view from flickering between
        them)."""
        with self.lock:
            index = min(self.running) if self.running else self.live_index
            if index is None:
                return None, "", ""
            thought = "".join(self.live_thought.get(index, []))
            return index, thought, "".join(self.live_text.get(index, []))

    def rows(self, failed_only: bool) -> tuple[int, Callable[[int], int]]:
        """How many rows the prompt table has, and which prompt each row shows."""
        if failed_only:
            failed = list(self.failed)
            return len(failed), failed.__getitem__
        return self.job.total_prompts, lambda position: position

    @property
    def is_active(self) -> bool:
        return not self.finished

    def finish(self, error: str | None = None) -> None:
        """The run has ended (with this error, if it broke off). A change like any other,
        so screens that skip unchanged ticks repaint the end state once."""
        with self.lock:
            self.finished = True
            self.error = error
            self.version += 1
