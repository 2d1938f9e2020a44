"""The dashboard's jobs: every job started or resumed in this session, run at once.

A job started while others run joins them, no question asked. Each has a priority
(1-9): its weight in the share of a model's slots or a fleet's requests it shares with
the others (`Backend.set_priority`), and its place among the jobs waiting for a model.
A job whose model is not free (another GGUF is loaded and busy) waits until it is;
`BackendPool` decides, as for a group headless.

Each job has a worker thread of its own (the app's), which holds the job's lock from
the start, opens a saved job, waits here until the main thread gives it a backend
(`admit`), runs it, and gives the backend back (`ended`). The main thread alone takes
backends, so what one job takes counts before the next is looked at.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tui_batch.core.backend import Backend
from tui_batch.core.errors import SettingsError, TuiBatchError
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.ui.run_state import RunState

MAX_PRIORITY = 9
# How often a job waiting for its backend looks whether it was stopped meanwhile.
WAIT_POLL = 0.1


class Backends(Protocol):
    """Where jobs get their backends (`backends.pool.BackendPool`, or `OwnBackends`)."""

    def ready(self, job: BatchJob) -> bool: ...

    def take(self, job: BatchJob, priority: int = 1) -> Backend: ...

    def give_back(self, backend: Backend) -> None: ...

    def close(self) -> None: ...


class OwnBackends:
    """Each job a backend of its own from `factory`, made when it starts (a test's or a
    benchmark's backend): every job may start at once."""

    def __init__(self, factory: Callable[[BatchJob], Backend]) -> None:
        self.factory = factory

    def ready(self, job: BatchJob) -> bool:
        return True

    def take(self, job: BatchJob, priority: int = 1) -> Backend:
        return self.factory(job)

    def give_back(self, backend: Backend) -> None:
        backend.close()

    def close(self) -> None:
        pass


@dataclass(eq=False)
class QueuedJob:
    """One job of the session: what its worker needs, and where it stands."""

    job_id: str
    number: int  # the order jobs were added in: first come, first served
    run: RunState | None = None  # once its job is open (a saved one opens in its worker)
    stream: PromptStream | None = None  # the rest of its input, while it is read in
    retry_failed: bool = False
    priority: int = 1
    backend: Backend | None = None  # once admitted
    refused: str | None = None  # why no backend could be made for it
    admitted: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False  # stop asked, maybe before its job was open
    show: bool = True  # its progress shown once its job is open
    told: bool = False  # the person was told it waits for its model
    ended: bool = False  # its worker is over

    @property
    def label(self) -> str:
        """The job as a person knows it: its id, and its variant or name (jobs of one
        file share a name)."""
        job = self.run.job if self.run is not None else None
        name = job.variant or job.name if job is not None else None
        return f"{self.job_id} ({name})" if name else self.job_id

    @property
    def waiting(self) -> bool:
        """Open, and not yet given a backend."""
        return self.run is not None and not self.admitted.is_set() and not self.ended

    def state(self) -> str:
        """What the job is doing, in a word or three."""
        run = self.run
        if run is None:
            return "ended" if self.ended else "opening"
        if run.finished:
            return "error" if run.error else run.job_status.value
        if self.stopped or run.cancel.is_set():
            return "stopping"
        if self.waiting:
            return "waiting (paused)" if run.pause.is_set() else "waiting for its model"
        return run.job_status.value


class JobQueue:
    """The session's jobs, in the order they were added (see the module doc)."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.jobs: list[QueuedJob] = []
        self._lock = threading.Lock()
        self._added = 0

    def add(
        self,
        job_id: str,
        run: RunState | None = None,
        stream: PromptStream | None = None,
        retry_failed: bool = False,
        priority: int = 1,
    ) -> QueuedJob:
        """A job to run: a new one (its `run` made) or a saved one (opened by its worker)."""
        if self.find(job_id) is not None:
            raise SettingsError(f"Job {job_id} is already running here (ctrl+j lists the jobs)")
        self._added += 1
        entry = QueuedJob(job_id, self._added, run, stream, retry_failed, _clamp(priority))
        self.jobs.append(entry)
        return entry

    def find(self, job_id: str) -> QueuedJob | None:
        """The job's entry while its worker runs."""
        return next((e for e in self.jobs if e.job_id == job_id and not e.ended), None)

    def entry_of(self, run: RunState) -> QueuedJob | None:
        return next((e for e in self.jobs if e.run is run), None)

    def active(self) -> list[QueuedJob]:
        """The jobs whose workers run: opening, waiting, running, paused or stopping."""
        return [e for e in self.jobs if not e.ended]

    def runs(self) -> list[RunState]:
        """The open jobs' runs not yet over, in the order they were added."""
        return [e.run for e in self.jobs if e.run is not None and not e.run.finished]

    def forget(self, entry: QueuedJob) -> None:
        """Drop a job that never opened (its checkpoint could not be read)."""
        if entry.ended and entry.run is None and entry in self.jobs:
            self.jobs.remove(entry)

    def admit(self) -> list[QueuedJob]:
        """Give a backend to each waiting job whose model is free, highest priority
        first, then first come; return them. Main thread only."""
        admitted = []
        with self._lock:
            waiting = [e for e in self.jobs if e.waiting and not e.stopped]
            for entry in sorted(waiting, key=lambda e: (-e.priority, e.number)):
                assert entry.run is not None
                if entry.run.cancel.is_set() or entry.run.pause.is_set():
                    continue  # a paused job takes no model until it goes on
                try:
                    if not self.backends.ready(entry.run.job):
                        continue
                    entry.backend = self.backends.take(entry.run.job, entry.priority)
                except TuiBatchError as exc:  # its model is gone, say
                    entry.refused = str(exc)
                entry.admitted.set()
                admitted.append(entry)
        return admitted

    def wait(self, entry: QueuedJob) -> Backend | None:
        """The job's worker: its backend once admitted; None if it was stopped first."""
        run = entry.run
        assert run is not None
        while not entry.admitted.wait(WAIT_POLL):
            if run.cancel.is_set():
                return None
        if entry.refused is not None:
            raise SettingsError(entry.refused)
        return entry.backend

    def ended(self, entry: QueuedJob) -> None:
        """The job's worker is over: its backend goes back (its model stays loaded for
        the next job on it). Any thread."""
        with self._lock:
            entry.ended = True
            backend, entry.backend = entry.backend, None
        if backend is not None:
            self.backends.give_back(backend)

    def set_priority(self, entry: QueuedJob, priority: int) -> int:
        """The job's new priority (clamped to 1-9), for its place in the queue and its
        share of what it runs on."""
        entry.priority = _clamp(priority)
        backend = entry.backend
        if backend is not None:
            backend.set_priority(entry.priority)
        return entry.priority

    def stop_all(self) -> None:
        """Stop every job (each after its current step, saved). Takes no lock: a signal
        handler calls it."""
        for entry in list(self.jobs):
            if not entry.ended:
                stop(entry)

    def close(self) -> None:
        self.backends.close()


def stop(entry: QueuedJob) -> None:
    """Stop one job: a running one after its current step (saved), a waiting one before
    it starts; a paused one is let go so that it can stop."""
    entry.stopped = True
    if entry.run is not None:
        entry.run.cancel.set()
        entry.run.pause.clear()


def never_started(run: RunState) -> None:
    """A job stopped while it waited: it ends as cancelled, its checkpoint unchanged."""
    run.job.status = JobStatus.CANCELLED
    run.job_status = JobStatus.CANCELLED


def _clamp(priority: int) -> int:
    return min(MAX_PRIORITY, max(1, priority))
