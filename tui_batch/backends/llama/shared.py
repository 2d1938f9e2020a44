"""One loaded model, its continuous-batching slots shared by several jobs at once.

`SharedModel` owns a `ParallelLlamaBackend` and a decode thread; each job running on it
gets a `ModelLane`, a backend of its own for the engine (its own indices, in flight,
pause, abort). The decode thread admits the lanes' prompts into free slots, weighted by
each lane's priority and work-conserving (a lane alone gets every slot; a slot is never
held back while a prompt waits), and steps the model: the prompts of every job decode in
the same `llama_decode`, each with its job's sampling, schema, reasoning and max tokens
(`parallel.JobRun`). A lane's `step` takes what finished for it, as a server backend does.

The model is open for one set of load settings (`load_key`): a job whose settings differ
waits for the model to be free (the caller decides; see `cli.group_run`), never a second
copy of the GGUF.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field, replace

from tui_batch.backends.llama.parallel import JobRun, ParallelLlamaBackend, model_key
from tui_batch.backends.llama.tokens import local_request_form
from tui_batch.core.backend import Backend, Completion, Inbox, RequestForm, Task, TokenSink
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import BatchJob, GenerationSettings, Prompt

# How long a lane's `step` waits for something to finish before handing control back to
# the engine (which checks cancel and pause between steps).
STEP_WAIT = 0.05


@dataclass(eq=False)
class _LaneState:
    """The decode thread's side of a lane (guarded by the model's lock)."""

    lane: ModelLane
    waiting: deque[tuple[int, Task]] = field(default_factory=deque)
    running: set[int] = field(default_factory=set)  # shared indices in a slot
    held: bool = False  # paused: nothing more admitted


class SharedModel:
    """A model loaded once, decoding the prompts of several jobs together.

    Two locks, always taken in this order: `_using` while the model is used (a step, a
    load, a lane's tasks dropped), `_lock` for the lanes' queues, so a lane's `submit`
    never waits for a step to end."""

    def __init__(self, backend: ParallelLlamaBackend) -> None:
        self.backend = backend
        self.model_path = backend.model_path
        self._using = threading.Lock()
        self._lock = threading.Condition()
        self._lanes: list[_LaneState] = []
        # A shared index for every task given to the model: lanes' indices may repeat.
        self._numbers = itertools.count()
        self._owner: dict[int, tuple[_LaneState, int]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def capacity(self) -> int:
        return self.backend.capacity

    def lane(self, priority: int = 1) -> ModelLane:
        """A backend for one job on this model; `priority` weighs its share of slots."""
        return ModelLane(self, priority)

    def fits(self, settings: GenerationSettings) -> bool:
        """Whether a job with `settings` can run on the model as it is loaded now."""
        loaded = self.backend.loaded
        return loaded is None or loaded.key == model_key(settings)

    def open(self, settings: GenerationSettings) -> None:
        """Load the model for `settings` (a no-op when it is, or while jobs run on it)."""
        with self._using, self._lock:
            if not self._lanes:
                self.backend.open(settings)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._using:
            self.backend.close()

    # -- the lanes' side ----------------------------------------------------------------

    def _join(self, lane: ModelLane, settings: GenerationSettings) -> _LaneState:
        with self._using, self._lock:
            if not self._lanes:
                self.backend.open(settings)
                self.backend.use_prefix(settings)  # the first job's start is decoded once
            elif not self.fits(settings):
                raise ModelError(
                    f"{self.model_path.name} is loaded with other settings (context, "
                    "threads, GPU layers) for the jobs running on it: run this job after them"
                )
            state = _LaneState(lane)
            lane.run = self.backend.job_run(settings, lane.sink)
            self._lanes.append(state)
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(
                    target=self._decode_loop, name="tui-batch-shared-model", daemon=True
                )
                self._thread.start()
            return state

    def _leave(self, state: _LaneState) -> None:
        with self._using, self._lock:
            self._drop(state)
            self._lanes.remove(state)

    def _submit(self, state: _LaneState, task: Task) -> None:
        with self._lock:
            number = next(self._numbers)
            self._owner[number] = (state, task.index)
            state.waiting.append((number, replace(task, index=number)))
            self._lock.notify_all()

    def _drop(self, state: _LaneState) -> None:
        """Drop a lane's tasks, waiting and running (both locks held)."""
        numbers = {number for number, _ in state.waiting} | state.running
        self.backend.drop(numbers)
        for number in numbers:
            self._owner.pop(number, None)
        state.waiting.clear()
        state.running.clear()

    def _abort(self, state: _LaneState) -> None:
        with self._using, self._lock:
            self._drop(state)

    def _hold(self, state: _LaneState, held: bool) -> None:
        with self._lock:
            state.held = held
            self._lock.notify_all()

    def _count(self, prompt: Prompt, settings: GenerationSettings) -> int:
        with self._using:
            return self.backend.count_tokens(prompt, settings)

    # -- the decode thread --------------------------------------------------------------

    def _decode_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._work():
                    self._lock.wait()
                if self._closed:
                    return
            with self._using:
                try:
                    self._admit()
                    finished = self.backend.step()
                except Exception as exc:  # noqa: BLE001 - what was in the step fails with it
                    error = f"{type(exc).__name__}: {exc}"
                    finished = [
                        Completion(number, error=error, finish_reason=None)
                        for number in self.backend.abort()
                    ]
                with self._lock:
                    for completion in finished:
                        owner = self._owner.pop(completion.index, None)
                        if owner is None:  # its lane dropped it
                            continue
                        state, index = owner
                        state.running.discard(completion.index)
                        completion.index = index
                        state.lane.inbox.put(completion)

    def _work(self) -> bool:
        """Whether the model has something to do: a prompt in a slot, or one that may
        be admitted."""
        return self.backend.in_flight > 0 or any(
            state.waiting and not state.held for state in self._lanes
        )

    def _admit(self) -> None:
        """Fill free slots from the lanes' waiting prompts: each next one from the lane
        with the fewest running for its priority (a lane alone takes every slot)."""
        while self.backend.free_slots > 0:
            with self._lock:
                ready = [state for state in self._lanes if state.waiting and not state.held]
                if not ready:
                    return
                state = min(ready, key=lambda s: (len(s.running) + 1) / s.lane.priority)
                number, task = state.waiting.popleft()
                state.running.add(number)
                run = state.lane.run
            self.backend.submit(task, run)


class ModelLane(Backend):
    """One job's backend on a `SharedModel` (see the module doc)."""

    def __init__(self, model: SharedModel, priority: int = 1) -> None:
        self.model = model
        self.priority = max(1, priority)
        # As many waiting as the model has slots, so a slot freed never waits on the
        # engine, and a lane alone fills them all.
        self.capacity = model.capacity
        self.inbox = Inbox()  # what the decode thread finished for this job
        self.run = JobRun(GenerationSettings())
        self.sink: TokenSink | None = None
        self._state: _LaneState | None = None

    def open(self, settings: GenerationSettings) -> None:
        self.model.open(settings)

    def set_priority(self, priority: int) -> None:
        self.priority = max(1, priority)  # read by the decode thread at its next admission

    def begin(self, job: BatchJob, on_token: TokenSink | None = None) -> None:
        self.on_token = on_token
        self.sink = self._buffer if on_token is not None else None
        self._state = self.model._join(self, job.settings)
        self.capacity = self.model.capacity
        self.schema_mode = self.run.schema_mode

    def end(self) -> None:
        if self._state is not None:
            self.model._leave(self._state)
            self._state = None
        self.inbox.forget()

    def _buffer(self, index: int, text: str, thought: bool) -> None:
        """The decode thread's streamed text (by shared index), kept for `step`."""
        owner = self.model._owner.get(index)
        if owner is not None:
            self.inbox.text(owner[1], text, thought)

    @property
    def in_flight(self) -> int:
        return len(self.inbox.pending)

    def submit(self, task: Task) -> None:
        assert self._state is not None, "begin() first"
        self.inbox.pending.add(task.index)
        self.model._submit(self._state, task)

    def step(self) -> list[Completion]:
        return self.inbox.take(self.on_token, STEP_WAIT)

    def abort(self) -> list[int]:
        if self._state is not None:
            self.model._abort(self._state)
        return self.inbox.forget()

    def pause(self) -> None:
        """Admit none of this job's prompts more; those in slots finish and wait."""
        if self._state is not None:
            self.model._hold(self._state, True)

    def resume(self) -> None:
        if self._state is not None:
            self.model._hold(self._state, False)

    def input_tokens(self, prompt: Prompt) -> int | None:
        return self.model._count(prompt, self.run.settings)

    def request_form(self, job: BatchJob) -> RequestForm:
        return local_request_form(self.model.model_path, job.settings)
