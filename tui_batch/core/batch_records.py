"""A Batch API job's files and batches, kept in its checkpoint beside its results, so a
crash anywhere never pays for a batch twice and resume reattaches to what is in flight.

Each input file goes through these states, each committed before the step that needs it:

    written -> uploaded (its file id) -> creating -> created (its batch id) -> ended

`written`: its lines are recorded (custom id -> prompt index) before the upload. A
prompt is in one file at a time; it is written into a later file only once the earlier
has ended (its line answered with an error, expired, or left by a cancel). `creating` is committed just before the batch is created: a file found there on
resume may have a batch the provider made and we never heard of, so the client looks
for one on that input file before it creates another. `ended`: the batch's output and
error files were read and their answers stored (`status` keeps the provider's last
word: completed, expired, cancelled, failed).

The table is made when a job first writes to it (`CREATE TABLE IF NOT EXISTS`); a
checkpoint without it has no batches, and every reader says so.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tui_batch.core.checkpoint_file import connect_read_only, connect_writable, write_transaction
from tui_batch.core.progress import format_duration

_SELECT_FILES = (
    "SELECT number, state, file_id, batch_id, status, lines, written_at, created_at, "
    "ended_at, output_file_id, error_file_id, total, completed, failed, started_at, "
    "finished_at, expires_at, deleted FROM batch_files"
)
_TABLES = (
    """CREATE TABLE IF NOT EXISTS batch_files (
        number INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        file_id TEXT,
        batch_id TEXT,
        status TEXT,
        lines INTEGER NOT NULL,
        written_at REAL NOT NULL,
        created_at REAL,
        ended_at REAL,
        output_file_id TEXT,
        error_file_id TEXT,
        total INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        started_at REAL,
        finished_at REAL,
        expires_at REAL,
        deleted INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS batch_lines (
        custom_id TEXT PRIMARY KEY,
        number INTEGER NOT NULL,
        idx INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS batch_lines_by_file ON batch_lines (number)",
    "CREATE INDEX IF NOT EXISTS batch_lines_by_prompt ON batch_lines (idx, number)",
)
# A line no later file has its prompt in, and whose prompt has no result stored.
_UNSTORED_LINE = """
    NOT EXISTS (SELECT 1 FROM results r WHERE r.prompt_index = l.idx)
    AND NOT EXISTS (
        SELECT 1 FROM batch_lines later WHERE later.idx = l.idx AND later.number > l.number
    )
"""
# Ended files none of whose lines is still needed: each line's prompt has its result
# stored, or a later line in another file.
_STORED = f"""
    SELECT number FROM batch_files f WHERE f.state = 'ended' AND f.deleted = 0
    AND NOT EXISTS (
        SELECT 1 FROM batch_lines l WHERE l.number = f.number AND {_UNSTORED_LINE}
    ) ORDER BY number
"""
# The prompts answered in an ended batch whose answers were never stored (a run stopped
# between reading them and storing them), with the file: resume reads them again.
_UNREAD = f"""
    SELECT l.idx, l.number FROM batch_lines l JOIN batch_files f ON f.number = l.number
    WHERE f.state = 'ended' AND f.deleted = 0 AND f.status != 'failed'
    AND (f.output_file_id IS NOT NULL OR f.error_file_id IS NOT NULL)
    AND {_UNSTORED_LINE}
"""


# A batch's statuses once it is over at the provider.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
# What a poll records of a batch besides its status.
PROVIDER_FIELDS = (
    "total",
    "completed",
    "failed",
    "created_at",
    "started_at",
    "finished_at",
    "expires_at",
)


@dataclass(frozen=True, slots=True)
class BatchFile:
    """One input file of the job and, once made, its batch."""

    number: int
    state: str
    file_id: str | None
    batch_id: str | None
    status: str | None
    lines: int
    written_at: float
    created_at: float | None
    ended_at: float | None
    output_file_id: str | None
    error_file_id: str | None
    # The provider's last word: its request counts and times (seconds since the epoch)
    # the batch began to run, ended there, and expires.
    total: int = 0
    completed: int = 0
    failed: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    # Its input and result files were deleted at the provider (its answers stored).
    deleted: bool = False

    def waited(self, now: float) -> float | None:
        """Seconds from its creation until the provider began to run it (or ended it
        without: a refusal), or until `now` while it waits."""
        if self.created_at is None:
            return None
        begun = self.started_at if self.started_at is not None else self.finished_at
        if begun is None:
            begun = now if self.in_flight else self.ended_at
        return None if begun is None else max(0.0, begun - self.created_at)

    def ran(self, now: float) -> float | None:
        """Seconds the provider ran it, until it ended there (or until `now`)."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)

    def left(self, now: float) -> float | None:
        """Seconds until the provider expires its batch (None: it has ended, or no
        expiry is known)."""
        if not self.in_flight or self.status in ENDED or self.expires_at is None:
            return None
        return max(0.0, self.expires_at - now)

    @property
    def in_flight(self) -> bool:
        """Not yet ended: resume goes on with it (uploads, looks for or creates its
        batch, polls it) and never writes its prompts into another file."""
        return self.state != "ended"


class BatchRecords:
    """The batch tables of one checkpoint (see the module doc). Any thread; each call is
    its own transaction."""

    def __init__(self, checkpoint: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(checkpoint)
        self.clock = clock

    def _write(self) -> sqlite3.Connection:
        connection = connect_writable(self.path)
        for statement in _TABLES:
            connection.execute(statement)
        return connection

    def next_number(self) -> int:
        """The number the next file written gets."""
        with _reading(self.path) as connection:
            if connection is None:
                return 1
            (last,) = connection.execute("SELECT MAX(number) FROM batch_files").fetchone()
        return (last or 0) + 1

    def written(self, number: int, lines: Iterable[tuple[str, int]]) -> None:
        """Record a new input file `number` (`next_number`) and its lines (custom id,
        prompt index) before it is uploaded."""
        connection = self._write()
        try:
            with write_transaction(connection):
                count = 0
                for custom_id, index in lines:
                    connection.execute(
                        "INSERT INTO batch_lines (custom_id, number, idx) VALUES (?, ?, ?)",
                        (custom_id, number, index),
                    )
                    count += 1
                connection.execute(
                    "INSERT INTO batch_files (number, state, lines, written_at) VALUES (?, ?, ?, ?)",
                    (number, "written", count, self.clock()),
                )
        finally:
            connection.close()

    def uploaded(self, number: int, file_id: str) -> None:
        self._set(number, "uploaded", file_id=file_id)

    def creating(self, number: int) -> None:
        self._set(number, "creating")

    def created(self, number: int, batch_id: str) -> None:
        self._set(number, "created", batch_id=batch_id, created_at=self.clock())

    def status(self, number: int, status: str, **said: float | int | None) -> None:
        """The provider's last word on the file's batch: its status (validating,
        in_progress, ...) and what else it said (PROVIDER_FIELDS: request counts, times)."""
        unknown = set(said) - set(PROVIDER_FIELDS)
        if unknown:
            raise ValueError(f"not a batch's field: {sorted(unknown)}")
        self._set(number, None, status=status, **said)

    def deleted(self, number: int) -> None:
        """Its files are deleted at the provider."""
        self._set(number, None, deleted=1)

    def ended(
        self, number: int, status: str, output_file_id: str | None, error_file_id: str | None
    ) -> None:
        """Its answers are stored: the batch is over for this job."""
        self._set(
            number,
            "ended",
            status=status,
            ended_at=self.clock(),
            output_file_id=output_file_id,
            error_file_id=error_file_id,
        )

    def _set(self, number: int, state: str | None, **values: object) -> None:
        if state is not None:
            values["state"] = state
        columns = ", ".join(f"{name} = ?" for name in values)
        connection = self._write()
        try:
            with write_transaction(connection):
                changed = connection.execute(
                    f"UPDATE batch_files SET {columns} WHERE number = ?", (*values.values(), number)
                ).rowcount
        finally:
            connection.close()
        if not changed:
            raise KeyError(f"no batch file {number} in {self.path}")

    def files(self) -> list[BatchFile]:
        """Every input file of the job, oldest first (none where it has no batches)."""
        with _reading(self.path) as connection:
            if connection is None:
                return []
            rows = connection.execute(f"{_SELECT_FILES} ORDER BY number").fetchall()
        return [_file(row) for row in rows]

    def file(self, number: int) -> BatchFile:
        """One input file, as it stands now."""
        with _reading(self.path) as connection:
            row = None
            if connection is not None:
                row = connection.execute(f"{_SELECT_FILES} WHERE number = ?", (number,)).fetchone()
        if row is None:
            raise KeyError(f"no batch file {number} in {self.path}")
        return _file(row)

    def lines_of(self, number: int) -> dict[str, int]:
        """A file's lines: custom id -> prompt index."""
        with _reading(self.path) as connection:
            if connection is None:
                return {}
            rows = connection.execute(
                "SELECT custom_id, idx FROM batch_lines WHERE number = ?", (number,)
            ).fetchall()
        return dict(rows)

    def unread(self) -> dict[int, int]:
        """Prompt index -> the ended file that answered it, for each prompt whose answer
        was never stored (read again by resume, never paid for twice). Only such prompts
        are read into memory, however large the job."""
        with _reading(self.path) as connection:
            if connection is None:
                return {}
            return dict(connection.execute(_UNREAD).fetchall())

    def stored(self) -> list[BatchFile]:
        """The ended files whose answers are all stored (or run again in a later file),
        and whose files at the provider are not deleted yet."""
        with _reading(self.path) as connection:
            if connection is None:
                return []
            numbers = [number for (number,) in connection.execute(_STORED)]
        return [self.file(number) for number in numbers]


def cancelled_batches(checkpoint: str | Path) -> int:
    """How many of a job's batches were cancelled at the provider and not yet read."""
    return sum(
        1
        for record in BatchRecords(checkpoint).files()
        if record.in_flight and record.status in ("cancelling", "cancelled")
    )


# What a file not yet made into a batch is doing, in words.
_STEPS = {
    "written": "uploading",
    "uploaded": "creating its batch",
    "creating": "creating its batch",
}


def describe(record: BatchFile, now: float) -> str:
    """One line on a file and its batch: `batch 2 (batch_abc) in_progress: 1,200 of
    50,000 done, 3 failed; 12m 5s since created, 23h 47m left`. `now`: seconds since
    the epoch."""
    head = f"batch {record.number}"
    if record.batch_id is None:
        lines = f"{record.lines:,} line{'s' if record.lines != 1 else ''}"
        return f"{head}: {_STEPS.get(record.state, record.state)} ({lines})"
    status = record.status or "created"
    line = f"{head} ({record.batch_id}) {status}: "
    total = record.total or record.lines
    line += f"{record.completed:,} of {total:,} done"
    if record.failed:
        line += f", {record.failed:,} failed"
    if record.created_at is not None:
        end = record.finished_at if record.finished_at is not None else now
        line += f"; {format_duration(max(0.0, end - record.created_at))} since created"
    if (left := record.left(now)) is not None:
        line += f", {format_duration(left)} left"
    if record.deleted:
        line += "; its files deleted there"
    return line


def _file(row: tuple) -> BatchFile:  # type: ignore[type-arg]
    return BatchFile(*row[:-1], deleted=bool(row[-1]))


class _reading:
    """A read-only connection, or None where the checkpoint has no batch tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection | None:
        self.connection = connect_read_only(self.path)
        found = self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batch_files'"
        ).fetchone()
        return self.connection if found else None

    def __exit__(self, *exc_info: object) -> None:
        assert self.connection is not None
        self.connection.close()
