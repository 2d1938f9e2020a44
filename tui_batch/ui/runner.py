"""The state of the job being run, shared by the worker thread and the screens.

The worker thread writes it under a lock as core events arrive; screens read it on a
steady timer. So a burst of 1,000 results a second costs one repaint per tick, not
1,000, and keys are answered between ticks.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable

from tui_batch.core import events
from tui_batch.core.jobs import BatchJob, BatchResult, JobStatus
from tui_batch.core.progress import ProgressUpdate

HISTORY_SECONDS = 120
# Results are long-lived and hold no reference cycles: every so many, move them out of
# the garbage collector's sight, so a full collection never has 100,000 of them to scan
# (such a scan stalls every thread, the UI's too, for up to ~100 ms).
FREEZE_EVERY = 5_000
# The worker posts a "results finished" message at most this often; the rest is merged.
NOTIFY_INTERVAL = 0.05


class BatchRun:
    """One run of one job: statuses per prompt, finished results, live text, figures."""

    def __init__(
        self,
        job: BatchJob,
        results: list[BatchResult],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.job = job
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.pause = threading.Event()
        self.status: list[str] = ["pending"] * job.total_prompts
        self.results: dict[int, BatchResult] = {}
        self.failed: list[int] = []
        for result in results:
            self._record(result)
        self.running: dict[int, int] = {}  # prompt index -> attempt
        self.live_index: int | None = None
        self.live_text: dict[int, list[str]] = {}
        self.update: ProgressUpdate | None = None
        self.job_status = job.status
        self.error: str | None = None
        self.finished = False
        self.version = 0
        self._buckets: deque[tuple[int, int, int]] = deque(maxlen=HISTORY_SECONDS)
        self._started = clock()
        self._last_notice = 0.0

    def _record(self, result: BatchResult) -> None:
        self.results[result.prompt_index] = result
        self.status[result.prompt_index] = "ok" if result.success else "failed"
        if not result.success:
            self.failed.append(result.prompt_index)

    def handle(self, event: events.BatchEvent) -> bool:
        """Apply a core event (worker thread). True when the UI should hear of it now."""
        with self.lock:
            self.version += 1
            if isinstance(event, events.TokensStreamed):
                self.live_text.setdefault(event.index, []).append(event.text)
                self.live_index = event.index
                return self._due()
            if isinstance(event, events.ResultReady):
                result = event.update.result
                self.update = event.update
                if result is not None:
                    self._record(result)
                    if len(self.results) % FREEZE_EVERY == 0:
                        gc.freeze()
                    self.running.pop(result.prompt_index, None)
                    self.live_text.pop(result.prompt_index, None)
                    self._count(result)
                return self._due()
            if isinstance(event, events.PromptStarted):
                self.running[event.index] = event.attempt
                self.status[event.index] = "running" if event.attempt == 1 else "retrying"
                self.live_text[event.index] = []
                self.live_index = event.index
                return False
            if isinstance(event, events.PromptRetrying):
                self.running.pop(event.index, None)
                self.status[event.index] = "retrying"
                return False
            if isinstance(event, events.JobStateChanged):
                self.job_status = event.status
                if event.status in (JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.COMPLETED):
                    for index in self.running:
                        if self.status[index] in ("running", "retrying"):
                            self.status[index] = "pending"
                    self.running.clear()
                return True
        return False

    def _due(self) -> bool:
        now = self.clock()
        if now - self._last_notice >= NOTIFY_INTERVAL:
            self._last_notice = now
            return True
        return False

    def _count(self, result: BatchResult) -> None:
        second = int(self.clock() - self._started)
        if self._buckets and self._buckets[-1][0] == second:
            _, results, tokens = self._buckets[-1]
            self._buckets[-1] = (second, results + 1, tokens + result.tokens_output)
        else:
            self._buckets.append((second, 1, result.tokens_output))

    def history(self) -> list[float]:
        """Throughput per second over the last two minutes: tokens/s, or results/s when a
        backend reports no tokens. Seconds with nothing finished count as zero."""
        with self.lock:
            buckets = list(self._buckets)
        if not buckets:
            return []
        use_tokens = any(tokens for _, _, tokens in buckets)
        by_second = {s: (t if use_tokens else r) for s, r, t in buckets}
        now = int(self.clock() - self._started)
        first = max(buckets[0][0], now - HISTORY_SECONDS + 1)
        return [float(by_second.get(s, 0)) for s in range(first, now + 1)]

    def live(self) -> tuple[int | None, str]:
        """The oldest running prompt and its text so far (several run at once in
        parallel mode; following one keeps the view from flickering between them)."""
        with self.lock:
            index = min(self.running) if self.running else self.live_index
            return index, "".join(self.live_text.get(index, [])) if index is not None else ""

    def rows(self, failed_only: bool) -> tuple[int, Callable[[int], int]]:
        """How many rows the prompt table has, and which prompt each row shows."""
        if failed_only:
            failed = list(self.failed)
            return len(failed), failed.__getitem__
        return self.job.total_prompts, lambda position: position

    @property
    def is_active(self) -> bool:
        return not self.finished
