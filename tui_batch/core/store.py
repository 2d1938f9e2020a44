"""Checkpoints: one SQLite file per job, appended to as results finish.

SQLite in WAL mode gives the promises the engine makes: a commit is atomic, so a
`kill -9` at any instant leaves either the old or the new state, never a torn file; and a
checkpoint inserts only the new result rows, so its cost does not grow with the job.
`synchronous=NORMAL` keeps commits cheap; it is durable against a process crash, and on
power loss may lose the last commits but never corrupts the file.

A new checkpoint is written whole to a temporary file and linked into place, so a crash
while creating a job leaves no job rather than half of one. Everything read back is
checked (`BatchJob.from_header`, `Prompt.from_dict`, `result_from_row`): a damaged file
is a CheckpointError naming it, never a crash, and a listing flags it and goes on.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_batch.core.errors import CheckpointError
from tui_batch.core.job_lock import JobLock, hold, holder_alive
from tui_batch.core.jobs import (
    BatchJob,
    BatchResult,
    Prompt,
    utc_now,
    validate_job_id,
)
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT
from tui_batch.core.rows import (
    RESULT_COLUMNS,
    JobSummary,
    check_rows,
    result_from_row,
    result_row,
)
from tui_batch.core.scratch import check_folder_writable, remove_stale, scratch_file

# 2 added the results' endpoint and attempt_log, 3 their time to first token, 4 their
# queue wait and how their tokens were counted, 5 a structured answer's value and
# whether it broke the schema, 6 its score and the expected answer it was scored
# against, 7 the job an answer served from the answer cache came from, 8 a thinking
# model's thought and its tokens, apart from the answer; an older file is
# upgraded in place when a run writes to it, and read as it is.
SCHEMA_VERSION = 8
_UPGRADES = {
    1: (
        "ALTER TABLE results ADD COLUMN endpoint TEXT",
        "ALTER TABLE results ADD COLUMN attempt_log TEXT",
    ),
    2: ("ALTER TABLE results ADD COLUMN ttft REAL",),
    3: (
        "ALTER TABLE results ADD COLUMN queue_wait REAL",
        "ALTER TABLE results ADD COLUMN token_counts TEXT",
    ),
    4: (
        "ALTER TABLE results ADD COLUMN output TEXT",
        "ALTER TABLE results ADD COLUMN invalid INTEGER NOT NULL DEFAULT 0",
    ),
    5: (
        "ALTER TABLE results ADD COLUMN score REAL",
        "ALTER TABLE results ADD COLUMN expected TEXT",
    ),
    6: ("ALTER TABLE results ADD COLUMN cached_from TEXT",),
    7: (
        "ALTER TABLE results ADD COLUMN reasoning TEXT",
        "ALTER TABLE results ADD COLUMN reasoning_tokens INTEGER",
    ),
}
# The result columns each older format lacks (read as NULL, or 0 for `invalid`).
_THOUGHT = ("reasoning", "reasoning_tokens")
_SCORED = ("score", "expected", "cached_from", *_THOUGHT)
_STRUCTURED = ("output", "invalid", *_SCORED)
_NEWER = ("queue_wait", "token_counts", *_STRUCTURED)
_MISSING = {
    1: ("endpoint", "attempt_log", "ttft", *_NEWER),
    2: ("ttft", *_NEWER),
    3: _NEWER,
    4: _STRUCTURED,
    5: _SCORED,
    6: ("cached_from", *_THOUGHT),
    7: _THOUGHT,
    SCHEMA_VERSION: (),
}
CHECKPOINT_PREFIX = "batch_"
CHECKPOINT_SUFFIX = ".db"
_SCHEMA = f"""
CREATE TABLE job (id INTEGER PRIMARY KEY CHECK (id = 1), header TEXT NOT NULL);
CREATE TABLE prompts (idx INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE results (
    prompt_index INTEGER PRIMARY KEY,
    response_text TEXT NOT NULL,
    tokens_input INTEGER NOT NULL,
    tokens_output INTEGER NOT NULL,
    duration REAL NOT NULL,
    success INTEGER NOT NULL,
    error_message TEXT,
    attempts INTEGER NOT NULL,
    finish_reason TEXT,
    started_at TEXT,
    completed_at TEXT,
    endpoint TEXT,
    attempt_log TEXT,
    ttft REAL,
    queue_wait REAL,
    token_counts TEXT,
    output TEXT,
    invalid INTEGER NOT NULL DEFAULT 0,
    score REAL,
    expected TEXT,
    cached_from TEXT,
    reasoning TEXT,
    reasoning_tokens INTEGER
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INSERT_RESULT = (
    f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; safe beside a writer (WAL readers never block it).

    In a folder this process may not write (a backup, a read-only mount) SQLite cannot
    make the WAL index a reader needs; the file is then opened as immutable, which is
    right there: nobody can be writing it.
    """
    uri = path.resolve().as_uri()
    try:
        connection = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
        connection = sqlite3.connect(
            f"{uri}?immutable=1", uri=True, check_same_thread=False, isolation_level=None
        )
    return connection


@contextmanager
def read_snapshot(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Every read inside sees one state of the file, however a writer moves on."""
    connection.execute("BEGIN")
    try:
        yield connection
    finally:
        connection.execute("COMMIT")


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (a second writer waits its busy timeout at
    the start, never halfway): committed when the block ends, rolled back if it raises.
    The checkpoints and the answer cache write through it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def _storage_error(action: str, path: Path, exc: BaseException) -> CheckpointError:
    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return CheckpointError(f"Cannot {action} {path}: {cause}")


@dataclass(frozen=True, slots=True)
class CheckpointScan:
    """What a checkpoint folder holds: summaries of the jobs it can read (newest first),
    and of the files it cannot, each with its `unreadable` reason."""

    readable: list[JobSummary]
    unreadable: list[JobSummary]


class CheckpointStore:
    """The checkpoint directory: creating, appending to, reading and listing job files."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, job_id: str) -> Path:
        return self.directory / f"{CHECKPOINT_PREFIX}{validate_job_id(job_id)}{CHECKPOINT_SUFFIX}"

    def exists(self, job_id: str) -> bool:
        return self.path_for(job_id).exists()

    def check_writable(self, job_id: str | None = None) -> None:
        """Raise a CheckpointError now if checkpoints (or this job's) cannot be written,
        before a model is loaded for nothing."""
        try:
            check_folder_writable(self.directory, mode=0o700)
            if job_id is not None and self.exists(job_id):
                os.close(os.open(self.path_for(job_id), os.O_RDWR))
        except OSError as exc:
            where = self.path_for(job_id) if job_id and self.exists(job_id) else self.directory
            raise _storage_error("write checkpoints in", where, exc) from None

    def create(self, job: BatchJob, check_ids: bool = False) -> Path:
        """Write a new checkpoint holding the job and its prompts, readable by the owner only.

        It is built in a scratch file and linked into place only when whole. Two prompts
        with one id are a DuplicateId (`check_ids` False: their ids are known unique).
        """
        path = self.path_for(job.job_id)
        if path.exists():
            raise CheckpointError(f"A checkpoint for job {job.job_id} already exists: {path}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            remove_stale(self.directory)
            fd, scratch = scratch_file(path)
            os.close(fd)
        except OSError as exc:
            raise _storage_error("create a checkpoint in", self.directory, exc) from None
        job.checkpoint_file = str(path)
        try:
            with closing(sqlite3.connect(scratch, isolation_level=None)) as connection:
                connection.executescript(f"BEGIN;{_SCHEMA}")
                connection.execute(
                    "INSERT INTO job (id, header) VALUES (1, ?)", (_header_json(job),)
                )
                _insert_prompts(connection, 0, job.prompts, check_ids)
                connection.execute("COMMIT")
            os.link(scratch, path)  # fails if the job exists: never replaces one
        except FileExistsError:
            raise CheckpointError(
                f"A checkpoint for job {job.job_id} already exists: {path}"
            ) from None
        except DuplicateId:
            raise
        except (sqlite3.Error, OSError, UnicodeEncodeError) as exc:
            raise _storage_error("create checkpoint", path, exc) from None
        finally:
            for extra in ("", "-journal"):
                Path(f"{scratch}{extra}").unlink(missing_ok=True)
        return path

    def lock(self, job_id: str) -> AbstractContextManager[JobLock]:
        """Hold the job's run lock: two runs never run the same job at once (see
        `job_lock.hold`). The lock yielded may be handed to
        `BatchProcessor.process_batch(lock=...)`, which then runs under it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _storage_error("lock job in", self.directory, exc) from None
        return hold(job_id, f"{self.path_for(job_id)}.lock")

    def writer(self, job: BatchJob) -> CheckpointWriter:
        """An open handle that appends results to the job's checkpoint."""
        path = self.path_for(job.job_id)
        if not path.exists():
            self.create(job)
        return CheckpointWriter(path)

    def save(self, job: BatchJob, results: Iterable[BatchResult]) -> Path:
        with self.writer(job) as writer:
            writer.commit(job, results)
        return writer.path

    def load(self, path: str | Path) -> tuple[BatchJob, list[BatchResult]]:
        """Read a checkpoint file back into a job and its results, ordered by prompt index.

        One read transaction: a job being written meanwhile is read as it was at one
        commit, its header's counts matching its results.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"Checkpoint not found: {path}")
        try:
            with closing(connect_read_only(path)) as connection, read_snapshot(connection):
                header = read_header(connection)
                prompts = []
                for index, data in connection.execute("SELECT idx, data FROM prompts ORDER BY idx"):
                    if index != len(prompts):
                        raise CheckpointError(f"prompt {len(prompts)} is missing")
                    prompts.append(Prompt.from_dict(json.loads(data)))
                job = BatchJob.from_header(header, prompts)
                results = [
                    result_from_row(row, prompts[row[0]])
                    for row in connection.execute(
                        f"SELECT {result_columns(connection)} FROM results ORDER BY prompt_index"
                    )
                    if _in_range(row[0], len(prompts))
                ]
        except (sqlite3.Error, ValueError, TypeError, RecursionError, CheckpointError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
        job.checkpoint_file = str(path)
        return job, results

    def open_job(self, job_id: str) -> BatchJob:
        """A job read from its checkpoint without its results, its prompts read as they
        are needed (`stored.StoredPrompts`): quick, and flat in memory, at any size."""
        from tui_batch.core.stored import StoredPrompts

        path = self.path_for(job_id)
        if not path.exists():
            raise CheckpointError(f"No checkpoint for job {job_id} in {self.directory}")
        try:
            with closing(connect_read_only(path)) as connection, read_snapshot(connection):
                header = read_header(connection)
                check_rows(connection)  # one pass in SQL: damage is said now, not midway
                (count,) = connection.execute("SELECT COUNT(*) FROM prompts").fetchone()
                (last,) = connection.execute("SELECT MAX(idx) FROM prompts").fetchone()
            if count and last != count - 1:
                raise CheckpointError(f"prompt {count - 1} is missing")
            job = BatchJob.from_header(header, StoredPrompts(path, count))
        except (sqlite3.Error, ValueError, TypeError, RecursionError, CheckpointError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
        job.checkpoint_file = str(path)
        return job

    def summary(self, job_id: str) -> JobSummary:
        """A job's summary from its header alone: quick at any size."""
        path = self.path_for(job_id)
        if not path.exists():
            raise CheckpointError(f"No checkpoint for job {job_id} in {self.directory}")
        summary = self._summarise(path)
        if summary.unreadable:
            raise CheckpointError(f"Unreadable checkpoint {path}: {summary.unreadable}")
        return summary

    def load_job(self, job_id: str) -> tuple[BatchJob, list[BatchResult]]:
        path = self.path_for(job_id)
        if not path.exists():
            raise CheckpointError(f"No checkpoint for job {job_id} in {self.directory}")
        return self.load(path)

    def delete(self, job_id: str) -> None:
        path = self.path_for(job_id)
        with self.lock(job_id):
            _unlink_all(path)

    def delete_file(self, path: Path) -> None:
        """Delete a checkpoint file by path; only files of this directory's pattern."""
        path = Path(path)
        if path.parent.resolve() != self.directory.resolve() or not (
            path.name.startswith(CHECKPOINT_PREFIX) and path.name.endswith(CHECKPOINT_SUFFIX)
        ):
            raise CheckpointError(f"Not a checkpoint of {self.directory}: {path}")
        _unlink_all(path)

    def scan(self) -> CheckpointScan:
        """Every checkpoint here: the readable ones' summaries, newest first, and the
        files that cannot be read, each with the reason."""
        if not self.directory.is_dir():
            return CheckpointScan([], [])
        summaries = [
            self._summarise(path)
            for path in sorted(self.directory.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}"))
        ]
        readable = [s for s in summaries if not s.unreadable]
        readable.sort(key=lambda s: s.updated_at or "", reverse=True)
        return CheckpointScan(readable, [s for s in summaries if s.unreadable])

    def _summarise(self, path: Path) -> JobSummary:
        name = path.name[len(CHECKPOINT_PREFIX) : -len(CHECKPOINT_SUFFIX)]
        try:
            with closing(connect_read_only(path)) as connection:
                header = read_header(connection)
            job = BatchJob.from_header(header, [])
        except (sqlite3.Error, ValueError, TypeError, RecursionError, CheckpointError) as exc:
            return JobSummary(job_id=name, checkpoint_file=str(path), unreadable=str(exc))
        total = header.get("total_prompts")
        size = 0
        for extra in ("", "-wal"):
            with suppress(OSError):
                size += Path(f"{path}{extra}").stat().st_size
        return JobSummary(
            job_id=job.job_id,
            checkpoint_file=str(path),
            model_id=job.model_id,
            status=job.status,
            total_prompts=total if isinstance(total, int) else 0,
            completed=job.completed,
            failed=job.failed,
            created_at=job.created_at,
            updated_at=job.updated_at,
            size_bytes=size,
            template=job.template,
            schema=job.settings.schema,
            scoring=job.scoring,
            live=holder_alive(f"{path}.lock"),
            name=job.name,
        )


class CheckpointWriter:
    """One open connection to a job's checkpoint; each commit is one atomic transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._connection = _connect(path)
            (version,) = self._connection.execute("PRAGMA user_version").fetchone()
            if version in _UPGRADES:
                steps = [s for v in sorted(_UPGRADES) if v >= version for s in _UPGRADES[v]]
                steps.append(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._connection.executescript(f"BEGIN;{';'.join(steps)};COMMIT;")
        except sqlite3.Error as exc:
            raise _storage_error("open checkpoint", path, exc) from None

    def commit(self, job: BatchJob, results: Iterable[BatchResult]) -> None:
        """Append `results` and save the job's header in a single transaction.

        A failure (disk full, say) rolls back to the last commit and is a CheckpointError
        naming the file and the cause.
        """
        job.updated_at = utc_now()
        self._transaction(
            lambda c: c.executemany(_INSERT_RESULT, (result_row(r) for r in results)), job
        )

    def add_prompts(
        self, job: BatchJob, prompts: Sequence[Prompt], check_ids: bool = False
    ) -> None:
        """Append `prompts` (numbered on from the job's count) and save the job's header,
        in one transaction (a job read in from a stream: `job.total_prompts` grows by
        them). Two prompts with one id are a DuplicateId, and nothing is added."""
        start = job.total_prompts
        job.total_prompts = start + len(prompts)
        job.updated_at = utc_now()
        try:
            self._transaction(lambda c: _insert_prompts(c, start, prompts, check_ids), job)
        except BaseException:
            job.total_prompts = start
            raise

    def pending(self, after: int, limit: int) -> list[int]:
        """Up to `limit` prompts after index `after` with no result, in order."""
        return [
            index
            for (index,) in self._connection.execute(
                "SELECT idx FROM prompts WHERE idx > ? AND NOT EXISTS "
                "(SELECT 1 FROM results WHERE prompt_index = idx) ORDER BY idx LIMIT ?",
                (after, limit),
            )
        ]

    def counts(self) -> tuple[int, int, int, int]:
        """The results so far: how many, succeeded, invalid, and thoughts with no answer."""
        row = self._connection.execute(
            "SELECT COUNT(*), COALESCE(SUM(success), 0), COALESCE(SUM(invalid), 0), "
            "COALESCE(SUM(NOT success AND substr(COALESCE(error_message, ''), 1, ?) = ?), 0) "
            "FROM results",
            (len(INCOMPLETE_THOUGHT), INCOMPLETE_THOUGHT),
        ).fetchone()
        return row[0], row[1], row[2], row[3]

    def remove_failed(self, job: BatchJob) -> int:
        """Delete every failed result (to run those prompts again); how many."""
        removed = 0

        def change(connection: sqlite3.Connection) -> None:
            nonlocal removed
            removed = connection.execute("DELETE FROM results WHERE success = 0").rowcount

        job.updated_at = utc_now()
        self._transaction(change, job)
        return removed

    def remove(self, job: BatchJob, indices: Iterable[int]) -> None:
        job.updated_at = utc_now()
        self._transaction(
            lambda c: c.executemany(
                "DELETE FROM results WHERE prompt_index = ?", ((i,) for i in indices)
            ),
            job,
        )

    def set_scores(
        self, header: dict[str, Any], scores: Iterable[tuple[float | None, str | None, int]]
    ) -> None:
        """Replace the results' scores and expected values (`(score, expected JSON,
        prompt index)`) and the job record with `header`, in one transaction."""
        self._write(
            lambda c: c.executemany(
                "UPDATE results SET score = ?, expected = ? WHERE prompt_index = ?", scores
            ),
            json.dumps({**header, "updated_at": utc_now()}, ensure_ascii=False),
        )

    def _transaction(self, change: Any, job: BatchJob) -> None:
        self._write(change, _header_json(job))

    def _write(self, change: Any, header: str) -> None:
        """`change` and the job record `header` (JSON), as one transaction."""
        try:
            with write_transaction(self._connection) as connection:
                change(connection)
                connection.execute("UPDATE job SET header = ? WHERE id = 1", (header,))
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise _storage_error("save checkpoint", self.path, exc) from None

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DuplicateId(CheckpointError):
    """Two prompts of a job with one id: the `index` being added and the `first`."""

    def __init__(self, custom_id: str, first: int, index: int) -> None:
        super().__init__(f"duplicate id {custom_id!r:.60} (prompts {first} and {index})")
        self.custom_id, self.first, self.index = custom_id, first, index


_IDS = "CREATE TABLE IF NOT EXISTS ids (custom_id TEXT PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID"


def _insert_prompts(
    connection: sqlite3.Connection, start: int, prompts: Sequence[Prompt], check_ids: bool
) -> None:
    """Insert `prompts` from index `start`; with `check_ids`, their ids too (a table of
    them, so a duplicate is found at any size without holding every id in memory)."""
    connection.executemany(
        "INSERT INTO prompts (idx, data) VALUES (?, ?)",
        ((start + i, json.dumps(p.to_dict(), ensure_ascii=False)) for i, p in enumerate(prompts)),
    )
    if not check_ids:
        return
    connection.execute(_IDS)
    for offset, prompt in enumerate(prompts):
        if prompt.custom_id is None or prompt.repeat not in (None, 0):
            continue
        try:
            connection.execute(
                "INSERT INTO ids (custom_id, idx) VALUES (?, ?)", (prompt.custom_id, start + offset)
            )
        except sqlite3.IntegrityError:
            (first,) = connection.execute(
                "SELECT idx FROM ids WHERE custom_id = ?", (prompt.custom_id,)
            ).fetchone()
            raise DuplicateId(prompt.custom_id, first, start + offset) from None


def _in_range(index: Any, count: int) -> bool:
    if not isinstance(index, int) or not 0 <= index < count:
        raise CheckpointError(f"a result for prompt {index!r:.20}, which the job does not hold")
    return True


def _unlink_all(path: Path) -> None:
    for extra in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{extra}").unlink(missing_ok=True)


def _header_json(job: BatchJob) -> str:
    return json.dumps(job.header(), ensure_ascii=False)


def result_columns(connection: sqlite3.Connection, prefix: str = "") -> str:
    """The SELECT list for RESULT_COLUMNS; an older file lacks the newer ones."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    old = _MISSING.get(version, ())
    return ", ".join("NULL" if c in old else f"{prefix}{c}" for c in RESULT_COLUMNS)


def read_header(connection: sqlite3.Connection, schema: str = "main") -> Any:
    """The job record of the checkpoint open as `schema` (an attached one, say), as
    JSON; a CheckpointError for a file that is not one of ours."""
    (version,) = connection.execute(f"PRAGMA {schema}.user_version").fetchone()
    if version not in _MISSING:
        raise CheckpointError(f"not a tui-batch checkpoint (format version {version})")
    row = connection.execute(f"SELECT header FROM {schema}.job WHERE id = 1").fetchone()
    if row is None:
        raise CheckpointError("checkpoint has no job record")
    if not isinstance(row[0], str):
        raise CheckpointError("the job record is not text")
    return json.loads(row[0])
