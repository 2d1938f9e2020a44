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

The file's format and how it is opened live in `checkpoint_file`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import (
    CHECKPOINT_PREFIX,
    CHECKPOINT_SUFFIX,
    INSERT_RESULT,
    SCHEMA,
    SCHEMA_VERSION,
    UPGRADES,
    connect_read_only,
    connect_writable,
    header_json,
    insert_prompts,
    read_header,
    read_snapshot,
    result_columns,
    storage_error,
    write_transaction,
)
from tui_batch.core.errors import CheckpointError
from tui_batch.core.job_lock import JobLock, hold, holder_alive
from tui_batch.core.jobs import (
    BatchJob,
    BatchResult,
    Prompt,
    utc_now,
    validate_job_id,
)
from tui_batch.core.rows import (
    JobSummary,
    ResultCounts,
    check_rows,
    count_results,
    result_from_row,
    result_row,
)
from tui_batch.core.scratch import check_folder_writable, remove_stale, scratch_file
from tui_batch.core.stored import StoredPrompts


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
            raise storage_error("write checkpoints in", where, exc) from None

    def create(
        self,
        job: BatchJob,
        check_ids: bool = False,
        fill: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Path:
        """Write a new checkpoint holding the job and its prompts, readable by the owner only.

        It is built in a scratch file and linked into place only when whole. Two prompts
        with one id are a DuplicateId (`check_ids` False: their ids are known unique).
        `fill`, if given, fills the file instead of `job.prompts`: it gets the scratch
        file's connection, the job record written, and no transaction open.
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
            raise storage_error("create a checkpoint in", self.directory, exc) from None
        job.checkpoint_file = str(path)
        try:
            with closing(sqlite3.connect(scratch, isolation_level=None)) as connection:
                connection.executescript(f"BEGIN;{SCHEMA}")
                connection.execute(
                    "INSERT INTO job (id, header) VALUES (1, ?)", (header_json(job),)
                )
                if fill is None:
                    insert_prompts(connection, 0, job.prompts, check_ids)
                connection.execute("COMMIT")
                if fill is not None:
                    fill(connection)
            os.link(scratch, path)  # fails if the job exists: never replaces one
        except FileExistsError:
            raise CheckpointError(
                f"A checkpoint for job {job.job_id} already exists: {path}"
            ) from None
        except (sqlite3.Error, OSError, UnicodeEncodeError) as exc:
            raise storage_error("create checkpoint", path, exc) from None
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
            raise storage_error("lock job in", self.directory, exc) from None
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
        path = self.path_for(job_id)
        if not path.exists():
            raise CheckpointError(f"No checkpoint for job {job_id} in {self.directory}")
        return self.open(path)

    def open(self, path: Path) -> BatchJob:
        """`open_job` of the checkpoint file at `path` (one from another machine, say)."""
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
            group_id=job.group_id,
        )


class CheckpointWriter:
    """One open connection to a job's checkpoint; each commit is one atomic transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._connection = connect_writable(path)
            (version,) = self._connection.execute("PRAGMA user_version").fetchone()
            if version in UPGRADES:
                steps = [s for v in sorted(UPGRADES) if v >= version for s in UPGRADES[v]]
                steps.append(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._connection.executescript(f"BEGIN;{';'.join(steps)};COMMIT;")
        except sqlite3.Error as exc:
            raise storage_error("open checkpoint", path, exc) from None

    def commit(self, job: BatchJob, results: Iterable[BatchResult]) -> None:
        """Append `results` and save the job's header in a single transaction.

        A failure (disk full, say) rolls back to the last commit and is a CheckpointError
        naming the file and the cause.
        """
        job.updated_at = utc_now()
        self._transaction(
            lambda c: c.executemany(INSERT_RESULT, (result_row(r) for r in results)), job
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
            self._transaction(lambda c: insert_prompts(c, start, prompts, check_ids), job)
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

    def counts(self) -> ResultCounts:
        """The results so far, counted (`rows.count_results`)."""
        return count_results(self._connection)

    def remove_failed(self, job: BatchJob) -> None:
        """Delete every failed result (to run those prompts again)."""
        job.updated_at = utc_now()
        self._transaction(lambda c: c.execute("DELETE FROM results WHERE success = 0"), job)

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
        self._write(change, header_json(job))

    def _write(self, change: Any, header: str) -> None:
        """`change` and the job record `header` (JSON), as one transaction."""
        try:
            with write_transaction(self._connection) as connection:
                change(connection)
                connection.execute("UPDATE job SET header = ? WHERE id = 1", (header,))
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise storage_error("save checkpoint", self.path, exc) from None

    def close(self) -> None:
        """Close, with the log written into the file: `batch_ID.db` alone then holds the
        whole job (a shard copied from another machine, a backup)."""
        with suppress(sqlite3.Error):
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._connection.close()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _in_range(index: Any, count: int) -> bool:
    if not isinstance(index, int) or not 0 <= index < count:
        raise CheckpointError(f"a result for prompt {index!r:.20}, which the job does not hold")
    return True


def _unlink_all(path: Path) -> None:
    for extra in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
