"""Temporary files beside a target, renamed or linked into place when whole: the one way
tui-batch writes a file (exports, job files, the remembered setup; checkpoints are built
in one and linked into place), and the one check that a folder can be written.

Each name carries the writing process's id, so the litter of a process that was killed
midway is recognised (its process is gone) and removed by the next writer in that folder.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

SCRATCH_SUFFIX = ".tmp"


def scratch_file(target: Path) -> tuple[int, Path]:
    """Create `.NAME.tui-batch-PID-RANDOM.tmp` beside `target`, owner-only; return its fd
    and path. Raises OSError."""
    name = f".{target.name}.tui-batch-{os.getpid()}-{secrets.token_hex(4)}{SCRATCH_SUFFIX}"
    path = target.parent / name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    return fd, path


def write_atomically(target: Path, write: Callable[[IO[str]], None]) -> None:
    """Write `target` (UTF-8, owner-only) through `write` into a scratch file beside it,
    then rename that into place: a reader sees the old file or the new one, whole.
    Raises OSError (or what `write` raises) with nothing left behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, target.name)
    fd, scratch = scratch_file(target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            write(out)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def check_folder_writable(folder: Path, mode: int = 0o777) -> None:
    """Make `folder` if it is missing (with `mode`), and write and remove a scratch file
    there: an OSError now, not when the work is done, if files cannot be written there."""
    folder.mkdir(parents=True, exist_ok=True, mode=mode)
    fd, probe = scratch_file(folder / "probe")
    os.close(fd)
    probe.unlink()


def _writer_pid(name: str) -> int | None:
    marker = ".tui-batch-"
    if not (name.startswith(".") and name.endswith(SCRATCH_SUFFIX) and marker in name):
        return None
    pid, _, _ = name.rpartition(marker)[2].partition("-")
    return int(pid) if pid.isdigit() and len(pid) < 10 else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def remove_stale(directory: Path, target_name: str | None = None) -> int:
    """Remove scratch files in `directory` (for `target_name`, or any) whose writer died."""
    prefix = f".{target_name}." if target_name else "."
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return 0
    for name in names:
        pid = _writer_pid(name)
        if pid is None or _alive(pid):
            continue
        for extra in ("", "-journal", "-wal", "-shm"):
            try:
                os.unlink(directory / f"{name}{extra}")
                removed += not extra
            except OSError:
                pass
    return removed
