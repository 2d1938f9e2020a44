"""Several jobs running at once on one terminal: one progress line a job.

Each job writes to its own `JobStream` as it would to stderr (its `ProgressPrinter`
redraws its line with `\\r\\x1b[K`; its news and its summary are whole lines). On a
terminal the board keeps every job's progress line at the bottom, in the jobs' order,
redrawn in place, and prints the whole lines above them, each after its job's label. In a
log (not a terminal) every line goes out as it comes, after its job's label.
"""

from __future__ import annotations

import shutil
import threading
from typing import TextIO

from tui_batch.core.text import one_line

REDRAW = "\r\x1b[K"


class ProgressBoard:
    """The terminal's bottom lines, one a job (see the module doc)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self._live: dict[str, str] = {}  # label -> its progress line, in the jobs' order
        self._drawn = 0
        # Reentrant: a stop signal's line comes through here from the main thread,
        # which may be inside a redraw of its own when the signal lands.
        self._lock = threading.RLock()
        self._width = 0

    def stream_for(self, label: str) -> JobStream:
        """Where one job writes; `label` (its name in the group) heads its lines."""
        with self._lock:
            width = max(len(name) for name in [*self._live, label])
            self._width = min(max(self._width, width), 32)
            self._live.setdefault(label, "")
        return JobStream(self, label)

    def group_stream(self) -> JobStream:
        """Where the group's own lines go (a stop signal's): whole lines, above the
        progress lines, with no job's name."""
        return JobStream(self, None)

    def _tag(self, label: str) -> str:
        return f"[{one_line(label)[: self._width]}]".ljust(self._width + 2)

    def say(self, text: str) -> None:
        """A line of the group's, not a job's: above the progress lines."""
        with self._lock:
            if self.interactive:
                self._redraw(text + "\n")
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def line(self, label: str, text: str) -> None:
        """A whole line of a job's: above the progress lines (in a log, as it comes)."""
        with self._lock:
            if not self.interactive:
                self.stream.write(f"{self._tag(label)} {text}\n")
                self.stream.flush()
                return
            if self._live.get(label) == text:
                self._live[label] = ""  # the job's last progress line, now kept above
            self._redraw(f"{self._tag(label)} {text}\n")

    def live(self, label: str, text: str) -> None:
        """A job's progress line as it is now (a terminal's only)."""
        with self._lock:
            if self._live.get(label) == text:
                return
            self._live[label] = text
            if self.interactive:
                self._redraw("")

    def _redraw(self, above: str) -> None:
        columns = shutil.get_terminal_size((100, 24)).columns
        parts = [f"\x1b[{self._drawn}F\x1b[J" if self._drawn else "\r\x1b[K", above]
        shown = [(label, text) for label, text in self._live.items() if text]
        for label, text in shown:
            parts.append(f"{self._tag(label)} {text}"[: columns - 1] + "\n")
        self._drawn = len(shown)
        self.stream.write("".join(parts))
        self.stream.flush()

    def close(self) -> None:
        """The jobs are over: their last progress lines stay where they are."""
        with self._lock:
            self._live.clear()
            self._drawn = 0


class JobStream:
    """A job's stderr on a `ProgressBoard`: a file-like object for its prints and its
    `ProgressPrinter`."""

    def __init__(self, board: ProgressBoard, label: str | None) -> None:
        self.board = board
        self.label = label
        self._current = ""

    def isatty(self) -> bool:
        return self.board.interactive

    def write(self, text: str) -> int:
        for index, part in enumerate(text.split("\n")):
            if index:  # a newline ended the line before
                if self.label is not None:
                    self.board.line(self.label, self._current)
                elif self._current:
                    self.board.say(self._current)
                self._current = ""
            if REDRAW in part:
                part = part.rsplit(REDRAW, 1)[1]
                self._current = ""
            self._current += part
        if self._current and self.label is not None:
            self.board.live(self.label, self._current)
        return len(text)

    def flush(self) -> None:
        """Every write reaches the board at once."""
