"""Progress figures (percent, ETA, throughput) and the one-line progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tui_batch.core.jobs import BatchResult


@dataclass(slots=True)
class ProgressUpdate:
    """One update per finished prompt, as `process_batch` hands to `progress_callback`."""

    completed: int
    failed: int
    total: int
    percent: float
    elapsed: float
    eta_seconds: float | None
    throughput: float
    tokens_per_second: float
    result: BatchResult | None
    # Of the failed, answers that broke the job's schema, and thoughts that left no
    # answer (`reasoning.INCOMPLETE_THOUGHT`).
    invalid: int = 0
    thought_cut: int = 0
    # A job with a budget: what it has spent of it (`budget: 1,234 of 5,000 tokens`).
    budget: str | None = None

    @property
    def done(self) -> int:
        return self.completed + self.failed


class ProgressTracker:
    """Turns finished results into progress figures.

    Rates count only what this run did, so a resumed job's ETA is not skewed by the
    results that were already in its checkpoint; time spent paused is not counted (the
    elapsed clock and the rates stop while the job is paused).
    """

    def __init__(
        self,
        total: int,
        completed: int = 0,
        failed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        invalid: int = 0,
        thought_cut: int = 0,
    ) -> None:
        self.clock = clock
        self.total = total
        self.completed = completed
        self.failed = failed
        self.invalid = invalid
        self.thought_cut = thought_cut
        self._start = clock()
        self._done_this_run = 0
        self._tokens_this_run = 0
        self._paused = 0.0
        self._paused_since: float | None = None
        # A job with a budget: what it has spent of it, as text (None: it has none).
        self.budget: Callable[[], str] | None = None

    def pause(self) -> None:
        """The job is paused: the clock stops until `resume`."""
        if self._paused_since is None:
            self._paused_since = self.clock()

    def resume(self) -> None:
        if self._paused_since is not None:
            self._paused += self.clock() - self._paused_since
            self._paused_since = None

    @property
    def elapsed(self) -> float:
        """Seconds this run has been running, paused time left out."""
        now = self._paused_since if self._paused_since is not None else self.clock()
        return now - self._start - self._paused

    def record(self, result: BatchResult) -> ProgressUpdate:
        if result.success:
            self.completed += 1
        else:
            self.failed += 1
            self.invalid += result.invalid
            self.thought_cut += result.thought_cut
        self._done_this_run += 1
        self._tokens_this_run += result.tokens_output
        return self.update(result)

    def update(self, result: BatchResult | None = None) -> ProgressUpdate:
        elapsed = self.elapsed
        done = self.completed + self.failed
        remaining = self.total - done
        rate = self._done_this_run / elapsed if elapsed > 0 else 0.0
        if remaining <= 0:
            eta: float | None = 0.0
        elif rate > 0:
            eta = remaining / rate
        else:
            eta = None
        return ProgressUpdate(
            completed=self.completed,
            failed=self.failed,
            total=self.total,
            percent=100.0 * done / self.total if self.total else 100.0,
            elapsed=elapsed,
            eta_seconds=eta,
            throughput=rate,
            tokens_per_second=self._tokens_this_run / elapsed if elapsed > 0 else 0.0,
            result=result,
            invalid=self.invalid,
            thought_cut=self.thought_cut,
            budget=self.budget() if self.budget is not None else None,
        )


def format_duration(seconds: float | None) -> str:
    """`2m 15s`, `1h 03m`, `45s`; `--` when unknown."""
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_progress_line(update: ProgressUpdate, width: int = 30, status: str | None = None) -> str:
    """The progress line: `Progress: [=====-----] 66.7% (4/6) | ETA: 2m 15s`; `status`
    in place of the ETA where the ETA would say nothing (`waiting: every server is
    out`, `starting: 16 prompts running`)."""
    filled = int(width * update.done / update.total) if update.total else width
    bar = "=" * filled + "-" * (width - filled)
    eta = status or f"ETA: {format_duration(update.eta_seconds)}"
    line = f"Progress: [{bar}] {update.percent:.1f}% ({update.done}/{update.total}) | {eta}"
    errors = update.failed - update.invalid - update.thought_cut
    if errors:
        line += f" | failed: {errors}"
    if update.invalid:
        line += f" | invalid: {update.invalid}"
    if update.thought_cut:
        line += f" | no answer after the thought: {update.thought_cut}"
    if update.tokens_per_second:
        line += f" | {update.tokens_per_second:.1f} tok/s"
    if update.budget:
        line += f" | {update.budget}"
    return line
