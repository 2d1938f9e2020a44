"""A job's run lock: two runs never run the same job at once, in one process or two.

An advisory `flock` on a side file (`batch_<id>.db.lock`), which the OS releases when the
holder dies, so a `kill -9` never leaves a job locked. The holder removes the file when
its run ends, so none outlives it; a process that opened the file just before it went
finds it gone once it holds the lock, and takes the lock again on a new file.

The holder writes its process id into the file: a listing tells a job running now (its
holder alive) from one whose process was killed (`kill -9` leaves the file, naming a
process that is gone), without taking the lock, which a run starting at that moment
would then find held.
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
            with suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder before removed it: lock the file that is there now


def holder_alive(path: str) -> bool:
    """Whether the lock file at `path` names a process that is alive: the job runs now
    (in this process, or another). False when there is no such file, or its process is
    gone."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(32)
    except OSError:
        return False
    try:
        pid = int(text.strip() or b"0")
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    except OSError:
        return False
    return _not_a_zombie(pid)


def _not_a_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent still answers `kill(pid, 0)`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read(512).rsplit(b")", 1)[-1].split()
    except OSError:
        return True  # no /proc (macOS): alive, as far as can be told
    return not fields or fields[0] != b"Z"
