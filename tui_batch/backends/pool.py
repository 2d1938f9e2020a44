"""The backends of jobs running at once in one process (a group headless, the
dashboard's queue): each model loaded once and shared, each fleet of servers shared.

- Jobs on servers start at once; jobs on the same servers (base URLs and key) share one
  `Fleet`: its concurrency, rpm and tpm hold for them together, shared by priority.
- Jobs on the same GGUF with the same load settings and `--parallel` share one loaded
  model and its slots (`SharedModel`), their prompts decoded in the same steps. A job
  whose model is loaded otherwise (other context, threads, slots), or is a model more
  than `max_models` allow, waits until a model is free; a model no job uses is closed
  to make room. A GGUF is never loaded twice.
- A job with `--parallel 0` (one prompt at a time) has the model to itself.
- A job through a Batch API has a backend of its own: its batches are its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tui_batch.backends.factory import backend_for_job, model_file
from tui_batch.core.backend import Backend
from tui_batch.core.jobs import BatchJob

if TYPE_CHECKING:
    from tui_batch.backends.llama.shared import SharedModel
    from tui_batch.backends.remote.fleet import Fleet


@dataclass(eq=False)
class _Model:
    """A model the pool holds: shared (continuous batching) or one job's at a time."""

    path: str
    parallel: int | None
    backend: Backend
    shared: SharedModel | None
    jobs: int = 0  # given to jobs now
    key: tuple[object, ...] = ()  # the load settings of the jobs given it now

    def same_slots(self, job: BatchJob) -> bool:
        """Whether the model object serves `job`'s slots (else it is made again)."""
        shared = job.settings.effective_parallel >= 1
        return job.settings.parallel == self.parallel and (self.shared is not None) == shared

    def fits(self, job: BatchJob) -> bool:
        """Whether `job` can run on it now, beside the jobs already running there."""
        if self.jobs == 0:
            return True
        return self.shared is not None and self.same_slots(job) and self.key == _key(job)


class BackendPool:
    """Hands out backends to jobs that run at the same time (see the module doc)."""

    def __init__(self, max_models: int = 1, on_load: Callable[[str], None] | None = None) -> None:
        """`on_load(name)`: told each time a model is taken into memory."""
        self.max_models = max(1, max_models)
        self.on_load = on_load
        self._models: list[_Model] = []
        self._fleets: dict[object, Fleet] = {}
        self._given: dict[int, _Model] = {}  # id(backend) -> its model
        self._lock = threading.Lock()

    def ready(self, job: BatchJob) -> bool:
        """Whether `job` may start now (else it waits for a model to be free)."""
        if job.server is not None:
            return True
        with self._lock:
            model = self._model_of(job)
            if model is not None:
                return model.fits(job)
            return len(self._models) < self.max_models or any(m.jobs == 0 for m in self._models)

    def take(self, job: BatchJob, priority: int = 1) -> Backend:
        """The backend `job` runs on (only when `ready`, and from the thread that asks
        `ready`: what is taken counts at once); hand it back with `give_back`."""
        if job.server is not None and job.server.batch_api:
            return backend_for_job(job, opened=False)  # its own batches: nothing shared
        if job.server is not None:
            from tui_batch.backends.remote.backend import RemoteBackend
            from tui_batch.backends.remote.fleet import Fleet, fleet_key

            with self._lock:
                fleet = self._fleets.setdefault(fleet_key(job.server), Fleet(job.server))
            return RemoteBackend(job.server, job.model_id, fleet, priority)
        with self._lock:
            model = self._model_of(job)
            if model is not None and model.jobs == 0 and not model.same_slots(job):
                self._unload(model)
                model = None
            if model is None:
                for idle in [m for m in self._models if m.jobs == 0]:
                    if len(self._models) < self.max_models:
                        break
                    self._unload(idle)
                model = self._load(job)
            model.jobs += 1
            model.key = _key(job)
            backend = model.shared.lane(priority) if model.shared is not None else model.backend
            self._given[id(backend)] = model
            return backend

    def give_back(self, backend: Backend) -> None:
        """The job that ran on `backend` is over (its model stays loaded for the next;
        a job's connections to its servers are closed)."""
        with self._lock:
            model = self._given.pop(id(backend), None)
            if model is not None:
                model.jobs -= 1
                return
        backend.close()

    def close(self) -> None:
        with self._lock:
            for model in self._models:
                (model.shared or model.backend).close()
            self._models.clear()
            fleets = list(self._fleets.values())
            self._fleets.clear()
        for fleet in fleets:
            fleet.close()

    def _model_of(self, job: BatchJob) -> _Model | None:
        path = str(model_file(job, must_exist=False))
        return next((m for m in self._models if m.path == path), None)

    def _load(self, job: BatchJob) -> _Model:
        """A model object for the job (loaded by the job's `begin`, not here)."""
        backend = backend_for_job(job, opened=False)
        shared = None
        if job.settings.effective_parallel >= 1:
            from tui_batch.backends.llama.shared import SharedModel

            shared = SharedModel(backend)  # type: ignore[arg-type]
        path = str(model_file(job, must_exist=False))
        if self.on_load is not None:
            self.on_load(job.model_id)
        model = _Model(path, job.settings.parallel, backend, shared)
        self._models.append(model)
        return model

    def _unload(self, model: _Model) -> None:
        (model.shared or model.backend).close()
        self._models.remove(model)


def _key(job: BatchJob) -> tuple[object, ...]:
    """What a loaded model must match for `job` to run on it beside others."""
    from tui_batch.backends.llama.parallel import model_key

    return model_key(job.settings)
