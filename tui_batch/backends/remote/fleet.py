"""Servers that several jobs run on at once: one event loop and one `Admission` for
them all, so the fleet's concurrency, rpm and tpm hold for the jobs together (each
job's `RemoteBackend` takes a `Share` of it, weighted by its priority)."""

from __future__ import annotations

import asyncio
import threading

from tui_batch.backends.remote.admission import Admission
from tui_batch.core.servers import ServerSettings

# The longest `close` waits for the loop's thread to end.
CLOSE_WAIT = 10.0


class Fleet:
    """One set of servers (base URLs and key), shared by the jobs on it."""

    def __init__(self, server: ServerSettings) -> None:
        self.server = server
        self.admission = Admission(server)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The fleet's running event loop, started on its own thread the first time."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="tui-batch-fleet", daemon=True
                )
                self._thread.start()
            return self._loop

    def close(self) -> None:
        """Stop the loop (its jobs' backends are closed first)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=CLOSE_WAIT)
        if not loop.is_running():
            loop.close()


def fleet_key(server: ServerSettings) -> tuple[tuple[str, ...], str | None]:
    """What makes two jobs' servers one fleet: the same base URLs and the same key."""
    return tuple(sorted(e.url for e in server.endpoints)), server.api_key_env
