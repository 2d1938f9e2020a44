"""What the CLI shows on a terminal: the progress line, tables, and stop signals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from tui_batch.backends.factory import in_model_log_callback
from tui_batch.core.backend import Backend
from tui_batch.core.jobs import BatchJob
from tui_batch.core.progress import ProgressUpdate, format_progress_line
from tui_batch.core.text import one_line

# How often the CLI looks for news from a backend (servers out, limits changed).
WATCH_INTERVAL = 0.5

# Signals that ask a run to stop: Ctrl+C, `kill`/process managers/`timeout`, a closed
# terminal. Each is handled alike; the exit status says which came (128 + its number).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class cancel_on_signals:
    """The first stop signal: stop after the current step and save. A second one: stop
    at once (finished results are still saved). `received` is the first signal's number.

    The handler never raises into code that is not ours: a second signal that finds the
    main thread inside llama.cpp's log callback (a call from C, where an exception is
    printed and lost) is raised again a moment later, once our own code runs."""

    AGAIN_AFTER = 0.05

    def __init__(self, err: TextIO) -> None:
        self.cancel = threading.Event()
        self.err = err
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            if in_model_log_callback(frame):
                again = threading.Timer(self.AGAIN_AFTER, os.kill, (os.getpid(), signum))
                again.daemon = True
                again.start()
                return
            raise KeyboardInterrupt
        self.received = signum
        self.cancel.set()
        name = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
        # After SIGHUP the terminal may be gone: then stop quietly.
        with contextlib.suppress(OSError, ValueError):
            print(
                f"\n{name}: stopping after the current step (again to stop at once)...",
                file=self.err,
                flush=True,
            )

    @property
    def exit_status(self) -> int:
        """128 + the signal that stopped the run (130 for Ctrl+C)."""
        return 128 + (self.received or signal.SIGINT)

    def __enter__(self) -> cancel_on_signals:
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Once stopping, the process is on its way out with its status: a signal more
        # must not end it by another (the default SIGINT would, as -2).
        stopping = self.cancel.is_set()
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_IGN if stopping else handler)


class ProgressPrinter:
    """The one-line progress bar (`Progress: [=====-----] 66.7% (4/6) | ETA: 2m 15s`):
    redrawn in place on a terminal; otherwise (a log) a line per update, at most one a
    second once the job is large, and always the last."""

    REDRAW_INTERVAL = 0.1
    LOG_INTERVAL = 1.0
    # Up to this many prompts a log gets a line for every update.
    LOG_EVERY_UP_TO = 100
    # While the job waits (every server out), a log gets a line this often.
    WAIT_LOG_INTERVAL = 30.0

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self._last_draw = 0.0
        self._pending: ProgressUpdate | None = None
        self._lock = threading.Lock()  # notes come from another thread
        # What the job waits for (every server out), shown in place of the ETA.
        self._waiting: str | None = None
        self._last_wait_line = 0.0
        self._first = False  # started, and no answer yet
        # While a large input is read in: how much, on the progress line.
        self._reading: str | None = None

    def note(self, text: str) -> None:
        """A line of news (a server went out, a limit changed) above the progress line."""
        with self._lock:
            clear = "\r\x1b[K" if self.interactive else ""
            self.stream.write(f"{clear}tui-batch: {one_line(text)}\n")
            if self.interactive:
                self._draw()
            self.stream.flush()

    def started(self, job: BatchJob) -> None:
        """The job begins: until its first answer, the line says what is going on
        (prompts started, tokens so far), never nothing for the half minute a first
        batch of prompts can take on a CPU."""
        with self._lock:
            self._pending = ProgressUpdate(
                job.completed, job.failed, job.total_prompts,
                100.0 * job.done / job.total_prompts if job.total_prompts else 100.0,
                0.0, None, 0.0, 0.0, None,
            )  # fmt: skip
            self._first = True
            if self.interactive:
                self._waiting = "starting: the first prompts"
                self._draw()
                self._waiting = None
            else:
                print("Running: each answer is counted here as it finishes", file=self.stream)

    @property
    def before_first_answer(self) -> bool:
        """Started, no answer yet, on a terminal: the line says what goes on (`activity`)."""
        return self._first and self.interactive

    def activity(self, running: int, tokens: int) -> None:
        """Before the first answer: `running` prompts started, `tokens` written so far
        (redrawn at most every REDRAW_INTERVAL; a log is not written to for it)."""
        with self._lock:
            now = time.monotonic()
            if not (self.interactive and self._first and self._waiting is None):
                return
            if now - self._last_draw < self.REDRAW_INTERVAL:
                return
            self._last_draw = now
            self._waiting = f"starting: {running:,} running, {tokens:,} tokens so far"
            self._draw()
            self._waiting = None

    def waiting(self, text: str | None) -> None:
        """The job waits (`text` says for what), or no longer (None): on the progress
        line, redrawn; in a log, a line when it starts and every WAIT_LOG_INTERVAL."""
        with self._lock:
            now = time.monotonic()
            started = self._waiting is None and text is not None
            self._waiting = None if text is None else f"waiting: {text}"
            if text is None:
                return
            if self.interactive:
                self._draw()
            elif started or now - self._last_wait_line >= self.WAIT_LOG_INTERVAL:
                print(self._line(), file=self.stream, flush=True)
                self._last_wait_line = now

    def reading(self, records: int, done: bool) -> None:
        """The job's input is read in as it runs: `records` read so far (`done`: all)."""
        with self._lock:
            self._reading = None if done else f"input: {records:,} records read"

    def _line(self) -> str:
        if self._pending is None:
            return self._waiting or ""
        line = format_progress_line(self._pending, status=self._waiting)
        return f"{line} | {self._reading}" if self._reading else line

    def watch(self, backend: Backend) -> contextlib.AbstractContextManager[None]:
        """While the block runs, print each change the backend reports (servers)."""
        return _watching(self, backend)

    def __call__(self, update: ProgressUpdate) -> None:
        with self._lock:
            self._first = False
            self._show(update)

    def _show(self, update: ProgressUpdate) -> None:
        now = time.monotonic()
        if not self.interactive:
            if (
                update.total <= self.LOG_EVERY_UP_TO
                or now - self._last_draw >= self.LOG_INTERVAL
                or update.done == update.total
            ):
                self._pending = update
                print(self._line(), file=self.stream, flush=True)
                self._last_draw = now
            return
        self._pending = update
        if now - self._last_draw >= self.REDRAW_INTERVAL or update.done == update.total:
            self._draw()
            self._last_draw = now

    def _draw(self) -> None:
        if self._pending is not None or self._waiting is not None:
            self.stream.write("\r\x1b[K" + self._line())
            self.stream.flush()

    def finish(self) -> None:
        self._waiting = None
        if self.interactive and self._pending is not None:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


@contextlib.contextmanager
def _watching(printer: ProgressPrinter, backend: Backend) -> Iterator[None]:
    if backend.status() is None:
        yield
        return
    stop = threading.Event()
    seen = [0]

    def said() -> Any:
        status = backend.status()
        if status is not None:
            for change in status.new_changes(seen[0]):
                printer.note(change)
            seen[0] = status.change_count
        return status

    def watch() -> None:
        while not stop.wait(WATCH_INTERVAL):
            status = said()
            if status is not None:
                printer.waiting(status.note if status.out_for is not None else None)

    watcher = threading.Thread(target=watch, name="tui-batch-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        said()  # what changed since the last look (a short job ends before one)


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows aligned in columns; every cell is data (a model name a server sent, a file
    name), shown on one line with its control characters escaped."""
    rows = [tuple(one_line(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def terminal_width() -> int:
    """The terminal's columns where stdout is one; 100 for a pipe or a file, where
    nothing wraps lines, so a table may be read as wide as it is."""
    if not sys.stdout.isatty():
        return 100
    return max(60, shutil.get_terminal_size((100, 24)).columns)
