"""The backend protocol the engine drives: prompts go in, completions come out, possibly
out of order. Backends (`tui_batch.backends`) implement it; the engine owns it.

Two pairs of calls, each closed by whoever opened it:

- `open(settings)` / `close()`: acquire and release what the backend needs (a model).
  Whoever makes a backend opens and closes it (`with backend:` closes it), so a CLI can
  load a model before it creates a job, and reuse it for several jobs.
- `begin(job)` / `end()`: the engine's, around one run of a job. `begin` opens the
  backend for the job's settings if it is not open already; `end` drops unfinished tasks.

Between them the engine keeps up to `capacity` tasks in flight and calls `step()` in a
loop; each call advances the work by one small step (a token, or one whole prompt for a
plain function) and returns whatever finished. Cancel, pause and checkpoints happen
between steps, so a backend never needs to know about them.
"""

from __future__ import annotations

import queue
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.jobs import TOKEN_COUNTS, Attempt, BatchJob, Prompt
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT, incomplete, split_inline
from tui_batch.core.settings import GenerationSettings
from tui_batch.core.text import clean_text

# Where a backend streams a prompt's text: (prompt index, text, whether it is thought).
TokenSink = Callable[[int, str, bool], None]


@dataclass(slots=True)
class Task:
    index: int
    prompt: Prompt
    attempt: int = 1


@dataclass(slots=True)
class Completion:
    """A finished task. `error` set means the prompt failed; `retryable=False` means
    running it again cannot help (it does not fit the context, say), or that the backend
    retried it itself already. A backend that sends requests fills `endpoint`,
    `attempt_log` and `attempts` (the requests it sent), and `duration`: the answering
    request's own time (the engine times the rest). `token_counts` says how the counts
    were made where nobody counted them (`jobs.STREAMED`, `jobs.UNKNOWN`)."""

    index: int
    response_text: str = ""
    tokens_input: int = 0
    tokens_output: int = 0
    finish_reason: str | None = "stop"
    error: str | None = None
    retryable: bool = True
    endpoint: str | None = None
    attempt_log: list[Attempt] = field(default_factory=list)
    attempts: int | None = None
    duration: float | None = None
    token_counts: str | None = None
    # Set by the engine, which checks every answer against the job's schema: the
    # answer's value, or that it broke the schema (then `error` says how).
    output: Any = None
    invalid: bool = False
    # A model that thinks: its thought (None: none), whether the output closed it, and
    # the thought's tokens where counted (they are in `tokens_output` too).
    reasoning: str | None = None
    thought_closed: bool = True
    reasoning_tokens: int | None = None

    @property
    def success(self) -> bool:
        return self.error is None

    def checked(self) -> Completion:
        """This completion if a checkpoint can hold it; else the prompt's failure saying
        what was wrong. A backend (a user's function, a server's answer) may hand back
        anything: a count of 2**64 or a lone surrogate once stopped every run of a job
        at "Cannot save checkpoint"; now such an answer fails alone."""
        # Spelled out, not a loop: this runs for every result (a few µs a million times).
        tokens_in, tokens_out, attempts = self.tokens_input, self.tokens_output, self.attempts
        problem = None
        if (
            type(tokens_in) is not int
            or type(tokens_out) is not int
            or (attempts is not None and type(attempts) is not int)
        ):
            problem = (
                f"token counts that are not whole numbers: {tokens_in!r:.30}, {tokens_out!r:.30}"
            )
        elif not (0 <= tokens_in <= MAX_COUNT and 0 <= tokens_out <= MAX_COUNT) or not (
            attempts is None or 0 <= attempts <= MAX_COUNT
        ):
            problem = f"token counts out of range: {tokens_in}, {tokens_out}"
        elif type(self.response_text) is not str or not (
            self.error is None or type(self.error) is str
        ):
            problem = "an answer that is not text"
        elif not (self.reasoning is None or type(self.reasoning) is str) or not (
            self.reasoning_tokens is None
            or (type(self.reasoning_tokens) is int and 0 <= self.reasoning_tokens <= MAX_COUNT)
        ):
            problem = "a thought that is not text, or a wrong count of its tokens"
        elif self.token_counts is not None and self.token_counts not in TOKEN_COUNTS:
            problem = f"an unknown kind of token count {self.token_counts!r:.40}"
        if problem is not None:
            return Completion(
                self.index, error=f"the backend answered with {problem}", finish_reason=None
            )
        self.response_text = clean_text(self.response_text)
        if self.reasoning is not None:
            self.reasoning = clean_text(self.reasoning)
        if self.error is None and incomplete(
            self.reasoning, self.response_text, self.thought_closed
        ):
            self.error = INCOMPLETE_THOUGHT
        if self.error is not None:
            self.error = clean_text(self.error)
        if self.finish_reason is not None and self.finish_reason != "stop":
            self.finish_reason = clean_text(str(self.finish_reason)[:40])
        return self


# The most a count may be: what a checkpoint's integer columns hold with room to spare.
MAX_COUNT = 2**62


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One server as a dashboard shows it. `state` is `ok`, `cooling` (paused by a 429
    or 503 until `until` seconds from now), or `out` (unreachable; probed again then)."""

    url: str
    state: str
    in_flight: int
    limit: int
    cap: int
    until: float | None = None
    requests: int = 0
    errors: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What a backend is doing now, for a dashboard: requests in flight, prompts waiting
    for a slot, the limits in force and each endpoint's state."""

    in_flight: int
    waiting: int
    concurrency: int
    endpoints: tuple[EndpointStatus, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    note: str | None = None
    # The latest changes of limits and states, newest last, and how many there were.
    changes: tuple[str, ...] = ()
    change_count: int = 0
    # The prompts with a request on its way; the others given to the backend wait for a
    # slot (None: the backend does not say).
    sending: frozenset[int] | None = None
    # Every server has been unreachable this many seconds (None: one is reachable), and
    # the next is tried again in `next_try` seconds.
    out_for: float | None = None
    next_try: float | None = None
    # A Batch API job's (`batch_api`): its batches in flight at the provider, a line each.
    batch_api: bool = False
    batches: tuple[str, ...] = ()

    def new_changes(self, seen: int) -> list[str]:
        """The changes after the first `seen` (as many as are still kept)."""
        fresh = self.change_count - seen
        return list(self.changes[-fresh:]) if fresh > 0 else []


@dataclass(frozen=True, slots=True)
class RequestForm:
    """How a backend makes a job's prompts into requests, as the answer cache keys them:
    `model` names what answers (a server's model id and base URLs; for a local model the
    engine's version, with `model_file`, whose content hash the cache adds), `label` is
    how `tui-batch cache stats` names it, and `render(prompt)` is the text the model
    reads (after the chat template, for a local model). Made without loading a model."""

    model: str
    label: str
    render: Callable[[Prompt], str]
    model_file: Path | None = None


class Backend(ABC):
    """Something that answers prompts. Subclasses hold at most `capacity` tasks at once."""

    capacity: int = 1
    on_token: TokenSink | None = None
    # How the job's schema is kept while generating, in words, once `begin` knows (None:
    # not at all; the engine checks every answer whatever the backend).
    schema_mode: str | None = None
    # Whether an answer given to the engine can be had again, unpaid, after a crash
    # before it was stored (a Batch API's result files): the engine then stores each
    # step's answers together rather than every `checkpoint_every`.
    replayable: bool = False

    def open(self, settings: GenerationSettings) -> None:
        """Acquire what these settings need (load the model); a no-op when already open
        for them. Whoever opens a backend closes it."""

    def close(self) -> None:
        """Release what `open` acquired. The backend may be opened again afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def begin(self, job: BatchJob, on_token: TokenSink | None = None) -> None:
        """The engine starts running `job`: open for its settings, remember the sink."""
        self.on_token = on_token
        self.open(job.settings)

    def end(self) -> None:
        """The engine stops running the job: drop unfinished tasks (the backend stays open)."""
        self.abort()

    @abstractmethod
    def submit(self, task: Task) -> None:
        """Accept a task; only called while `in_flight < capacity`."""

    @abstractmethod
    def step(self) -> list[Completion]:
        """Advance the work by one step and return the tasks that finished."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """How many submitted tasks have not finished yet."""

    @abstractmethod
    def abort(self) -> list[int]:
        """Drop every unfinished task and return their indices."""

    def pause(self) -> None:
        """The job is paused: stop working until `resume`. The engine stops stepping,
        which is enough for a backend that works only inside `step`; one that works on
        its own (requests to servers) stops there too."""

    def resume(self) -> None:
        """The pause is over (or the run is ending)."""

    def set_priority(self, priority: int) -> None:
        """The job's weight among the jobs sharing this backend's model or servers (its
        share of their slots or requests) is now `priority`; a backend shared with no
        other job has nothing to weigh. Safe from any thread."""

    def status(self) -> BackendStatus | None:
        """A snapshot for a dashboard; None for a backend with nothing more to say than
        the engine's progress. Safe to call from any thread."""
        return None

    def stop_reason(self) -> str | None:
        """Why the job should stop now, resumable, though prompts are left (every server
        unreachable for too long); None to go on. Cheap, and safe from any thread: the
        engine asks after every step."""
        return None

    def input_tokens(self, prompt: Prompt) -> int | None:
        """The tokens `prompt` is as this backend sends it to its model, chat template
        included, where it can count them exactly (a loaded local model); None where it
        cannot (servers count their own)."""
        return None

    def request_form(self, job: BatchJob) -> RequestForm | None:
        """How this backend makes `job`'s requests, for the answer cache; None (a plain
        function, say) when its answers cannot be keyed and so are never cached."""
        return None


class Inbox:
    """What another thread (a server backend's event loop, a shared model's decode
    thread) finishes for a backend, handed to the engine at its `step`: the indices given
    and not yet returned, the completions and the streamed text that came in. `put` and
    `text` from the other thread; the rest from the engine's."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._text: deque[tuple[int, str, bool]] = deque()

    def put(self, completion: Completion) -> None:
        self._done.put(completion)

    def text(self, index: int, text: str, thought: bool = False) -> None:
        self._text.append((index, text, thought))

    def take(self, sink: TokenSink | None, wait: float, gather: float = 0.0) -> list[Completion]:
        """What finished: waits up to `wait` for the first, then `gather` seconds for
        more to come with it (the engine wakes once for several). The text streamed
        since goes to `sink` first; anything of an index no longer pending is dropped."""
        finished: list[Completion] = []
        try:
            finished.append(self._done.get(timeout=wait))
            if gather:
                time.sleep(gather)
            while True:
                finished.append(self._done.get_nowait())
        except queue.Empty:
            pass
        while self._text:
            index, text, thought = self._text.popleft()
            if sink is not None and index in self.pending:
                sink(index, text, thought)
        finished = [c for c in finished if c.index in self.pending]
        for completion in finished:
            self.pending.discard(completion.index)
        return finished

    def forget(self) -> list[int]:
        """Drop everything: the indices that were pending, sorted."""
        dropped = sorted(self.pending)
        self.pending.clear()
        while not self._done.empty():
            self._done.get_nowait()
        self._text.clear()
        return dropped


def describe_error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class CallableBackend(Backend):
    """A plain function of one prompt (`execute_fn(prompt)`) as a backend: one prompt at
    a time, each in one step.

    The function gets the prompt text and returns the response text, or a mapping with
    `response_text` and optionally `tokens_input` / `tokens_output` / `reasoning`. A
    thought inline in the text (`<think>…</think>`) is kept apart from the answer. An
    exception is a failed prompt with the exception's message.
    """

    def __init__(self, execute_fn: Callable[[str], str | Mapping[str, Any]]) -> None:
        self.execute_fn = execute_fn
        self._queue: deque[Task] = deque()

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def abort(self) -> list[int]:
        indices = [task.index for task in self._queue]
        self._queue.clear()
        return indices

    def step(self) -> list[Completion]:
        if not self._queue:
            return []
        task = self._queue.popleft()
        try:
            output = self.execute_fn(task.prompt.text)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is a failed prompt
            return [Completion(task.index, error=describe_error(exc), finish_reason=None)]
        if isinstance(output, Mapping):
            thought = split_inline(str(output.get("response_text", "")))
            reasoning = output.get("reasoning")
            return [
                Completion(
                    task.index,
                    response_text=thought.answer,
                    tokens_input=int(output.get("tokens_input", 0) or 0),
                    tokens_output=int(output.get("tokens_output", 0) or 0),
                    reasoning=thought.reasoning if reasoning is None else str(reasoning),
                    thought_closed=thought.closed,
                )
            ]
        thought = split_inline(str(output))
        return [
            Completion(
                task.index,
                response_text=thought.answer,
                reasoning=thought.reasoning,
                thought_closed=thought.closed,
            )
        ]
