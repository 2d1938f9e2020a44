"""Temporary files beside a target, renamed or linked into place when whole.

Each name carries the writing process's id, so the litter of a process that was killed
midway is recognised (its process is gone) and removed by the next writer in that folder.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SCRATCH_SUFFIX = ".tmp"


def scratch_file(target: Path) -> tuple[int, Path]:
    """Create `.NAME.tui-batch-PID-RANDOM.tmp` beside `target`, owner-only; return its fd
    and path. Raises OSError."""
    name = f".{target.name}.tui-batch-{os.getpid()}-{secrets.token_hex(4)}{SCRATCH_SUFFIX}"
    path = target.parent / name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    return fd, path


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
