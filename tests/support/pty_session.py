"""The dashboard as a person runs it: `tui-batch` in a real pseudo-terminal, its output
read as it comes, keys written to it. For what only a real terminal shows: which file
descriptors the process holds, whether the screen still answers keys, what is printed
after the app exits."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

KEYS = {
    "f1": "\x1bOP",
    "f2": "\x1bOQ",
    "f5": "\x1b[15~",
    "ctrl+b": "\x02",
    "ctrl+q": "\x11",
    "ctrl+r": "\x12",
    "escape": "\x1b",
    "enter": "\r",
    "tab": "\t",
}


class PtySession:
    """`python -m tui_batch ARGS` on a pty of `size` (columns, lines)."""

    def __init__(
        self,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        size: tuple[int, int] = (120, 36),
        cwd: str | Path | None = None,
    ) -> None:
        master, slave = pty.openpty()
        columns, lines = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tui_batch", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            # COLUMNS and LINES as the terminal's size: a test runner's worker may have
            # them set to its own (xdist's: 80), which the app would take over the pty's.
            env={
                **os.environ,
                "TERM": "xterm-256color",
                "COLUMNS": str(columns),
                "LINES": str(lines),
                **(env or {}),
            },
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output.extend(chunk)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout: float = 60.0, since: int = 0) -> int:
        """Wait until `needle` is in the output after byte `since`; return where."""
        deadline = time.monotonic() + timeout
        encoded = needle.encode()
        while True:
            found = self.output.find(encoded, since)
            if found >= 0:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.text()[-1500:]
                raise AssertionError(f"{needle!r} never shown; the output ended with {tail!r}")
            time.sleep(0.05)

    def press(self, *keys: str) -> None:
        for key in keys:
            os.write(self.master, KEYS.get(key, key).encode())
            # A lone ESC is a key only once no sequence follows it soon.
            time.sleep(0.3 if key == "escape" else 0.05)

    def descriptors(self) -> dict[int, str]:
        """Where the process's stdin, stdout and stderr point now."""
        return {fd: os.readlink(f"/proc/{self.process.pid}/fd/{fd}") for fd in (0, 1, 2)}

    def hang_up(self, signal_after: float = 0.0) -> None:
        """The terminal goes away, as a closed window or a dropped ssh session does: its
        other end is closed (the app's writes to it fail from here on) and the process
        gets SIGHUP `signal_after` seconds later (from the kernel once the shell that
        started it has gone, say)."""
        os.close(self.master)
        self.master = -1
        time.sleep(signal_after)
        self.process.send_signal(signal.SIGHUP)

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(2)
        if self.master >= 0:
            os.close(self.master)
        return self.process.returncode

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
