"""What the CLI shows on a terminal: the progress line, tables, and Ctrl+C handling."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, TextIO

from tui_batch.core.progress import ProgressUpdate, format_progress_line


class cancel_on_sigint:
    """First Ctrl+C: stop after the current step and save. A second one: stop at once."""

    def __init__(self, cancel: threading.Event, err: TextIO) -> None:
        self.cancel = cancel
        self.err = err

    def _handle(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.cancel.set()
        print("\nStopping after the current step (Ctrl+C again to stop at once)...", file=self.err)

    def __enter__(self) -> None:
        self.previous = signal.signal(signal.SIGINT, self._handle)

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGINT, self.previous)


class ProgressPrinter:
    """The guide's progress line: redrawn in place on a terminal, a line per update otherwise."""

    REDRAW_INTERVAL = 0.1

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self._last_draw = 0.0
        self._pending: ProgressUpdate | None = None

    def __call__(self, update: ProgressUpdate) -> None:
        if not self.interactive:
            print(format_progress_line(update), file=self.stream, flush=True)
            return
        self._pending = update
        now = time.monotonic()
        if now - self._last_draw >= self.REDRAW_INTERVAL or update.done == update.total:
            self._draw()
            self._last_draw = now

    def _draw(self) -> None:
        if self._pending is not None:
            self.stream.write("\r\x1b[K" + format_progress_line(self._pending))
            self.stream.flush()

    def finish(self) -> None:
        if self.interactive and self._pending is not None:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
