"""Checkpoints: one SQLite file per job, appended to as results finish.

SQLite in WAL mode gives the promises the engine makes: a commit is atomic, so a
`kill -9` at any instant leaves either the old or the new state, never a torn file; and a
checkpoint inserts only the new result rows, so its cost does not grow with the job.
`synchronous=NORMAL` keeps commits cheap; it is durable against a process crash, and on
power loss may lose the last commits but never corrupts the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchJob, BatchResult, Prompt, utc_now, validate_job_id

SCHEMA_VERSION = 1
CHECKPOINT_PREFIX = "batch_"
CHECKPOINT_SUFFIX = ".db"
RESULT_COLUMNS = (
    "prompt_index",
    "response_text",
    "tokens_input",
    "tokens_output",
    "duration",
    "success",
    "error_message",
    "attempts",
    "finish_reason",
    "started_at",
    "completed_at",
)
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
    completed_at TEXT
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INSERT_RESULT = (
    f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
)


@dataclass(slots=True)
class CheckpointListing:
    """What a scan of the checkpoint directory found: readable entries and the rest."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _result_row(result: BatchResult) -> tuple[Any, ...]:
    return (
        result.prompt_index,
        result.response_text,
        result.tokens_input,
        result.tokens_output,
        result.duration,
        int(result.success),
        result.error_message,
        result.attempts,
        result.finish_reason,
        result.started_at,
        result.completed_at,
    )


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; safe beside a writer (WAL readers never block it)."""
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
    )
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        return connect_read_only(path)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


class CheckpointStore:
    """The checkpoint directory: creating, appending to, reading and listing job files."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, job_id: str) -> Path:
        return self.directory / f"{CHECKPOINT_PREFIX}{validate_job_id(job_id)}{CHECKPOINT_SUFFIX}"

    def exists(self, job_id: str) -> bool:
        return self.path_for(job_id).exists()

    def create(self, job: BatchJob) -> Path:
        """Write a new checkpoint holding the job and its prompts, readable by the owner only."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.path_for(job.job_id)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise CheckpointError(
                f"A checkpoint for job {job.job_id} already exists: {path}"
            ) from None
        job.checkpoint_file = str(path)
        with closing(_connect(path)) as connection:
            connection.executescript(f"BEGIN;{_SCHEMA}")
            connection.execute("INSERT INTO job (id, header) VALUES (1, ?)", (_header_json(job),))
            connection.executemany(
                "INSERT INTO prompts (idx, data) VALUES (?, ?)",
                (
                    (i, json.dumps(p.to_dict(), ensure_ascii=False))
                    for i, p in enumerate(job.prompts)
                ),
            )
            connection.execute("COMMIT")
        return path

    @contextmanager
    def lock(self, job_id: str) -> Iterator[None]:
        """Hold the job's run lock: two processes never run the same job at once.

        An advisory `flock` on a side file, which the OS releases when the holder dies,
        so a `kill -9` never leaves a job locked. (No-op where `fcntl` is missing.)
        """
        try:
            import fcntl
        except ImportError:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(f"{self.path_for(job_id)}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CheckpointError(
                    f"Job {job_id} is already running in another process"
                ) from None
            yield
        finally:
            os.close(fd)

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
        """Read a checkpoint file back into a job and its results, ordered by prompt index."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"Checkpoint not found: {path}")
        try:
            with closing(_connect(path, read_only=True)) as connection:
                header = _read_header(connection, path)
                prompts = [
                    Prompt.from_dict(json.loads(data))
                    for (data,) in connection.execute("SELECT data FROM prompts ORDER BY idx")
                ]
                rows = connection.execute(
                    f"SELECT {', '.join(RESULT_COLUMNS)} FROM results ORDER BY prompt_index"
                ).fetchall()
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
        job = BatchJob.from_header(header, prompts)
        job.checkpoint_file = str(path)
        results = []
        for row in rows:
            values = dict(zip(RESULT_COLUMNS, row, strict=True))
            values["success"] = bool(values["success"])
            index = values["prompt_index"]
            results.append(
                BatchResult(prompt=prompts[index].text, custom_id=job.custom_id(index), **values)
            )
        return job, results

    def load_header(self, job_id: str) -> dict[str, Any]:
        """A job's header (everything but prompts and results): quick at any size."""
        path = self.path_for(job_id)
        if not path.exists():
            raise CheckpointError(f"No checkpoint for job {job_id} in {self.directory}")
        try:
            with closing(_connect(path, read_only=True)) as connection:
                header = _read_header(connection, path)
        except (sqlite3.Error, ValueError) as exc:
            raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
        header["checkpoint_file"] = str(path)
        return header

    def load_job(self, job_id: str) -> tuple[BatchJob, list[BatchResult]]:
        path = self.path_for(job_id)
        if not path.exists():
            raise CheckpointError(f"No checkpoint for job {job_id} in {self.directory}")
        return self.load(path)

    def delete(self, job_id: str) -> None:
        path = self.path_for(job_id)
        with self.lock(job_id):
            for extra in ("", "-wal", "-shm", ".lock"):
                Path(f"{path}{extra}").unlink(missing_ok=True)

    def delete_file(self, path: Path) -> None:
        """Delete a checkpoint file by path; only files of this directory's pattern."""
        path = Path(path)
        if path.parent.resolve() != self.directory.resolve() or not (
            path.name.startswith(CHECKPOINT_PREFIX) and path.name.endswith(CHECKPOINT_SUFFIX)
        ):
            raise CheckpointError(f"Not a checkpoint of {self.directory}: {path}")
        for extra in ("", "-wal", "-shm", ".lock"):
            Path(f"{path}{extra}").unlink(missing_ok=True)

    def scan(self) -> CheckpointListing:
        """Summaries of every checkpoint; unreadable files are reported, not raised."""
        listing = CheckpointListing()
        if not self.directory.is_dir():
            return listing
        for path in sorted(self.directory.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}")):
            try:
                with closing(_connect(path, read_only=True)) as connection:
                    header = _read_header(connection, path)
            except (sqlite3.Error, ValueError, KeyError, TypeError, CheckpointError) as exc:
                listing.unreadable.append((path, str(exc)))
                continue
            size = sum(
                Path(f"{path}{extra}").stat().st_size
                for extra in ("", "-wal")
                if Path(f"{path}{extra}").exists()
            )
            listing.entries.append(
                {
                    "job_id": header["job_id"],
                    "model_id": header["model_id"],
                    "status": header["status"],
                    "total_prompts": header["total_prompts"],
                    "completed": header["completed"],
                    "failed": header["failed"],
                    "checkpoint_file": str(path),
                    "updated_at": header["updated_at"],
                    "created_at": header.get("created_at"),
                    "size_bytes": size,
                }
            )
        listing.entries.sort(key=lambda entry: entry["updated_at"] or "", reverse=True)
        return listing


class CheckpointWriter:
    """One open connection to a job's checkpoint; each commit is one atomic transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = _connect(path)

    def commit(self, job: BatchJob, results: Iterable[BatchResult]) -> None:
        """Append `results` and save the job's header in a single transaction."""
        job.updated_at = utc_now()
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(_INSERT_RESULT, (_result_row(r) for r in results))
            connection.execute("UPDATE job SET header = ? WHERE id = 1", (_header_json(job),))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def remove(self, job: BatchJob, indices: Iterable[int]) -> None:
        job.updated_at = utc_now()
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "DELETE FROM results WHERE prompt_index = ?", ((i,) for i in indices)
        )
        connection.execute("UPDATE job SET header = ? WHERE id = 1", (_header_json(job),))
        connection.execute("COMMIT")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _header_json(job: BatchJob) -> str:
    return json.dumps(job.header(), ensure_ascii=False)


def _read_header(connection: sqlite3.Connection, path: Path) -> dict[str, Any]:
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version != SCHEMA_VERSION:
        raise CheckpointError(f"{path}: not a tui-batch checkpoint (format version {version})")
    row = connection.execute("SELECT header FROM job WHERE id = 1").fetchone()
    if row is None:
        raise CheckpointError(f"{path}: checkpoint has no job record")
    return json.loads(row[0])
