"""A job's run lock: two runs never run the same job at once, in one process or two.

An advisory `flock` on a side file (`batch_<id>.db.lock`), which the OS releases when the
holder dies, so a `kill -9` never leaves a job locked. The holder removes the file when
its run ends, so none outlives it; a process that opened the file just before it went
finds it gone once it holds the lock, and takes the lock again on a new file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from tui_batch.core.errors import CheckpointError


@dataclass(slots=True)
class JobLock:
    """A job's run lock, held until its `with` block ends (`CheckpointStore.lock`)."""

    job_id: str
    released: bool = False

    def covers(self, job_id: str) -> bool:
        return not self.released and job_id == self.job_id


@contextmanager
def hold(job_id: str, path: str) -> Iterator[JobLock]:
    """Hold job `job_id`'s lock, on the file at `path`; a CheckpointError at once if
    another run holds it. (No lock where `fcntl` is missing.)"""
    try:
        import fcntl
    except ImportError:
        yield JobLock(job_id)
        return
    fd = _acquire(job_id, fcntl, path)
    held = JobLock(job_id)
    try:
        yield held
    finally:
        held.released = True
        with suppress(OSError):  # removed while still held (see the module's doc)
            os.unlink(path)
        os.close(fd)


def _acquire(job_id: str, fcntl: Any, path: str) -> int:
    """An open descriptor of the lock file at `path`, locked."""
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise CheckpointError(f"Cannot lock job in {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(f"Job {job_id} is already running in another process") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # the holder before removed it: lock the file that is there now
