"""What a Batch API job holds of its files while they are written and in flight: the
open file, each file in flight, and the prompts each one's answers are awaited for, a
few bytes a prompt (a batch holds 50,000 of them for hours); and what is said of them."""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tui_batch.backends.remote.batch_wire import InputFile
from tui_batch.core.backend import BackendStatus
from tui_batch.core.batch_records import BatchFile, describe

# A prompt's flag in `Waiting`: not awaited (yet), awaited, answered.
_NOT, _AWAITED, _ANSWERED = 0, 1, 2


class Waiting:
    """The prompts of one file the engine waits on: the file's prompt indices, sorted,
    with a flag each (9 bytes a prompt, where a set of ints takes about 60): not
    awaited (yet), awaited, answered."""

    __slots__ = ("count", "flags", "indices")

    def __init__(self, indices: Iterable[int], waiting: bool) -> None:
        self.indices = array("q", sorted(indices))
        self.flags = bytearray([_AWAITED if waiting else _NOT]) * len(self.indices)
        self.count = len(self.indices) if waiting else 0

    def _at(self, index: int) -> int | None:
        at = bisect_left(self.indices, index)
        return at if at < len(self.indices) and self.indices[at] == index else None

    def __contains__(self, index: object) -> bool:
        at = self._at(index) if isinstance(index, int) else None
        return at is not None and self.flags[at] == _AWAITED

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        pairs = zip(self.indices, self.flags, strict=True)
        return (index for index, flag in pairs if flag == _AWAITED)

    def add(self, index: int) -> bool:
        """Wait on a prompt of the file again (after a resume); False where the file has
        no line of it."""
        at = self._at(index)
        if at is None:
            return False
        if self.flags[at] != _AWAITED:
            self.flags[at] = _AWAITED
            self.count += 1
        return True

    def answered(self, index: int) -> bool:
        at = self._at(index)
        return at is not None and self.flags[at] == _ANSWERED

    def take(self, index: int) -> bool:
        """The prompt's answer came: True where it was awaited (now answered)."""
        at = self._at(index)
        if at is None or self.flags[at] != _AWAITED:
            return False
        self.flags[at] = _ANSWERED
        self.count -= 1
        return True

    def clear(self) -> None:
        """Await none (what was answered stays so)."""
        self.flags = bytearray(_ANSWERED if f == _ANSWERED else _NOT for f in self.flags)
        self.count = 0


@dataclass(slots=True)
class OpenFile:
    """The file being written: its number, its lines (on disk) and its prompts' indices
    (a prompt is not held while its batch runs)."""

    number: int
    upload: InputFile
    indices: array[int] = field(default_factory=lambda: array("q"))


@dataclass(slots=True)
class Flight:
    """A file in flight: its record, and the prompts waiting on its answers."""

    record: BatchFile
    tasks: Waiting
    upload: InputFile | None = None  # its lines, until uploaded (none after a resume)
    next_poll: float = 0.0
    wait: float = 0.0
    # An ended batch's result files being read, some lines a step, and what the
    # provider said of its end (status, batch id, output and error file ids).
    reading: Iterator[str] | None = None
    ending: tuple[str, str | None, str | None, str | None] = ("completed", None, None, None)
    # An ended file read again: a run stopped after its answers were read and before
    # the engine stored them all (resume reads them again rather than pay twice).
    replay: bool = False
    # Found in flight by resume (one `creating` may have a batch already, looked for
    # before another is made), and whether a create was tried (the same: it may have).
    resumed: bool = False
    create_tried: bool = False
    # Since when the provider has failed it, and how long until it is tried again.
    failing_since: float | None = None
    retry_wait: float = 0.0


# The latest lines said of the batches, kept for a dashboard and the command line.
KEPT_CHANGES = 20


class BatchNews:
    """What is said of a job's batches: a line for a file whenever its status or counts
    change (not its times), the latest kept, and a snapshot for a dashboard."""

    def __init__(self) -> None:
        self._said: dict[int, tuple[object, ...]] = {}  # file number -> its last state said
        self._changes: list[str] = []
        self._count = 0

    def say(self, line: str) -> None:
        self._changes = [*self._changes[-(KEPT_CHANGES - 1) :], line]
        self._count += 1

    def said_of(self, record: BatchFile) -> None:
        key = (record.batch_id is None, record.status, record.completed, record.failed)
        if self._said.get(record.number) != key:
            self._said[record.number] = key
            self.say(describe(record, time.time()))

    def status(
        self, files: list[BatchFile], in_batches: int, gathered: int, capacity: int
    ) -> BackendStatus:
        """A snapshot: the prompts in batches and gathered for the next (of `capacity`),
        a line for each file in flight, and what was said."""
        now = time.time()
        return BackendStatus(
            in_flight=in_batches,
            waiting=gathered,
            concurrency=capacity,
            changes=tuple(self._changes),
            change_count=self._count,
            batch_api=True,
            batches=tuple(describe(f, now) for f in files if f.in_flight),
        )
