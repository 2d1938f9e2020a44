"""The signals that stop the dashboard like "stop the job and quit": a process manager's
SIGTERM and a closed terminal's SIGHUP; the exit status is 128 + the signal's number.

SIGTERM is handled on the event loop. SIGHUP is not: with the terminal gone, Textual's
writes to it fail, its output queue fills, and the loop blocks on it for good, so a
handler the loop runs may never run. A plain signal handler runs even then: it stops
the jobs (each saves), asks the loop for the orderly exit, and, where the app is the
process, ends it once the jobs have saved, whatever the loop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from typing import Any, Protocol

from tui_batch.ui.job_queue import JobQueue

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
HANGUP = getattr(signal, "SIGHUP", None)
# After a stop signal, once the job has stopped and saved, the process ends within this
# many seconds even where the orderly exit cannot.
STOP_GRACE = 5.0


class Stoppable(Protocol):
    """What the handlers need of the app."""

    queue: JobQueue
    batch_ended: threading.Event  # set while no job's worker runs

    def stop_and_exit(self, return_code: int = 0) -> None: ...


class StopSignals:
    """The app's handlers for STOP_SIGNALS, installed while it is mounted."""

    def __init__(self, app: Stoppable) -> None:
        self.app = app
        # Set by the command that runs the app as its process: after a stop signal, the
        # process ends once the jobs have saved, even if the orderly exit cannot.
        self.end_process = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_hangup: Any = None

    def install(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            if signum == HANGUP:
                with contextlib.suppress(ValueError):  # not the main thread
                    self._previous_hangup = signal.signal(signum, self._hung_up)
                continue
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._stopped, signum)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            if signum == HANGUP:
                if self._previous_hangup is not None:
                    with contextlib.suppress(ValueError):
                        signal.signal(signum, self._previous_hangup)
                continue
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)

    def _stopped(self, signum: int) -> None:
        """SIGTERM (on the event loop): stop the jobs, then exit with 128 + it."""
        self.app.stop_and_exit(128 + signum)
        self._end_when_saved(128 + signum)

    def _hung_up(self, signum: int, frame: object) -> None:
        """SIGHUP: the terminal is gone."""
        self.app.queue.stop_all()
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self.app.stop_and_exit, 128 + signum)
        self._end_when_saved(128 + signum)

    def _end_when_saved(self, code: int) -> None:
        """Where the app is the process, end it with `code` STOP_GRACE seconds after the
        jobs have saved, if the orderly exit has not ended it by then."""
        if not self.end_process:
            return
        ended = self.app.batch_ended

        def end() -> None:
            ended.wait()
            time.sleep(STOP_GRACE)
            os._exit(code)

        threading.Thread(target=end, name="stop-signal", daemon=True).start()
