"""A backend for OpenAI-compatible chat completion servers: one, or a fleet.

The `openai` package's `AsyncOpenAI` sends the requests, with its own retries off: every
retry goes through our `Admission` (limits, Retry-After, failover) and our attempt log.
The backend owns one asyncio loop on its own thread; the engine's `submit` / `step` /
`abort` cross to it thread-safely, so cancel, pause, checkpoints and error strategies work
as with a local model.

A prompt is retried here (408, 409, 429, 5xx, timeouts, dropped connections), with
exponential backoff and full jitter, possibly on another endpoint; other 4xx fail it at
once with the server's message. A refused connection takes the endpoint out and does not
count against the prompt: it waits for another endpoint, or for this one to come back.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tui_batch.backends.admission import Admission, EndpointState, Outcome
from tui_batch.backends.chat_wire import read_chunk, read_completion, sse_data
from tui_batch.backends.openai_api import Failure, Secret, classify, make_client
from tui_batch.core.backend import Backend, BackendStatus, Completion, Task
from tui_batch.core.jobs import (
    Attempt,
    BatchJob,
    GenerationSettings,
    Prompt,
    build_messages,
    utc_now,
)
from tui_batch.core.servers import ServerSettings

T = TypeVar("T")
# How long `step` waits for a completion before handing control back to the engine.
STEP_WAIT = 0.05
STEP_GATHER = 0.02
MAX_BACKOFF = 120.0
# Chars per token, for the tpm estimate of a prompt before its usage is known.
CHARS_PER_TOKEN = 4


@dataclass(slots=True)
class _Answer:
    """One attempt's end: the outcome for the endpoint, and for the prompt."""

    outcome: Outcome
    attempt: Attempt
    text: str = ""
    finish_reason: str | None = None
    retryable: bool = True


class RemoteBackend(Backend):
    """Runs prompts on the job's servers; see the module doc."""

    def __init__(self, server: ServerSettings, model: str) -> None:
        self.server = server
        self.model = model
        # Room for more prompts than may be in flight, so a free slot never waits on the
        # engine (which wakes for a batch of results, not for each).
        self.capacity = server.concurrency * 4 + 16
        self.secret = Secret(server.api_key_env)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._tokens: deque[tuple[int, str]] = deque()
        self._submitted: deque[Task] = deque()
        self._wake_pending = False
        self._sending: set[int] = set()  # prompts with a request on its way (loop side)
        self._timers: dict[int, _Timers] = {}  # their attempts' timers, to call them back
        self._pending: set[int] = set()  # submitted, not yet returned by step (engine side)
        self._aborting = False
        self.admission = Admission(server)  # made again for each run, in `begin`
        self.job: BatchJob | None = None
        self.settings = GenerationSettings()

    # -- the owner's pair ---------------------------------------------------------------

    def open(self, settings: GenerationSettings) -> None:
        self.settings = settings
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tui-batch-remote", daemon=True
        )
        self._thread.start()
        self._call(self._make_clients())

    def close(self) -> None:
        if self._loop is None:
            return
        self.abort()
        try:
            self._call(self._close_clients())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = None

    # -- the engine's protocol ----------------------------------------------------------

    def begin(self, job: BatchJob, on_token: Any = None) -> None:
        super().begin(job, on_token)
        self.job = job
        self._aborting = False
        self.admission = Admission(self.server)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, task: Task) -> None:
        assert self._loop is not None, "begin() first"
        self._pending.add(task.index)
        self._submitted.append(task)
        # One wake-up of the loop for a burst of submits, not one each.
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._start_submitted)

    def step(self) -> list[Completion]:
        finished: list[Completion] = []
        try:
            finished.append(self._done.get(timeout=STEP_WAIT))
            # Let a few more finish: the engine wakes (and takes the GIL from the
            # loop's thread) once for several, not once for each.
            time.sleep(STEP_GATHER)
            while True:
                finished.append(self._done.get_nowait())
        except queue.Empty:
            pass
        self._deliver_tokens()
        finished = [c for c in finished if c.index in self._pending]
        for completion in finished:
            self._pending.discard(completion.index)
        return finished

    def abort(self) -> list[int]:
        """Cancel every request (their connections close, so servers stop generating);
        their prompts stay pending."""
        if self._loop is not None and (self._tasks or self._submitted):
            self._aborting = True
            try:
                self._call(self._cancel_all())
            finally:
                self._aborting = False  # every task has ended: new ones may run
        dropped = sorted(self._pending)
        self._pending.clear()
        while not self._done.empty():
            self._done.get_nowait()
        self._tokens.clear()
        return dropped

    def pause(self) -> None:
        """Send nothing more, and call back the requests on their way (their
        connections close, so servers stop); they are sent again on `resume`, at no
        cost to their prompts' retries."""
        if self._loop is not None:
            self._call(self._hold(True))

    def resume(self) -> None:
        if self._loop is not None:
            self._call(self._hold(False))

    async def _hold(self, paused: bool) -> None:
        self.admission.hold(paused)
        if paused:
            for timers in list(self._timers.values()):
                timers.expire("paused")

    def status(self) -> BackendStatus | None:
        return replace(self.admission.status(), sending=frozenset(self._sending))

    # -- the loop's side ----------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _make_clients(self) -> None:
        self._clients = {
            e.url: make_client(e, self.server, self.secret) for e in self.server.endpoints
        }

    async def _close_clients(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients = {}

    async def _cancel_all(self) -> None:
        self._submitted.clear()  # submitted, not started: never start them
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_submitted(self) -> None:
        assert self._loop is not None
        self._wake_pending = False
        while self._submitted:
            task = self._submitted.popleft()
            self._tasks[task.index] = self._loop.create_task(self._run(task))

    async def _run(self, task: Task) -> None:
        try:
            completion = await self._prompt(task)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - a bug here fails one prompt, not the job
            completion = Completion(
                task.index,
                error=self.secret.scrub(f"{type(exc).__name__}: {exc}"),
                finish_reason=None,
                retryable=False,
            )
        finally:
            self._tasks.pop(task.index, None)
        self._done.put(completion)

    async def _prompt(self, task: Task) -> Completion:
        """Send the prompt until it succeeds, fails for good, or runs out of retries."""
        assert self.job is not None
        request = self._request(task.prompt)
        estimate = _estimate_tokens(request)
        log: list[Attempt] = []
        failures = 0
        while True:
            state = await self.admission.acquire(estimate)
            self._sending.add(task.index)
            try:
                answer = await self._attempt(state, request, task.index)
            finally:
                self._sending.discard(task.index)
            log.append(answer.attempt)
            self.admission.release(
                state, answer.outcome, answer.attempt.retry_after, answer.attempt.error
            )
            if answer.outcome is Outcome.OK:
                usage = answer.attempt
                self.admission.correct_tokens(
                    estimate, usage.tokens_input + usage.tokens_output or None
                )
                return Completion(
                    task.index,
                    response_text=answer.text,
                    tokens_input=usage.tokens_input,
                    tokens_output=usage.tokens_output,
                    finish_reason=answer.finish_reason,
                    endpoint=state.url,
                    attempt_log=log,
                    attempts=len(log),
                    retryable=False,
                )
            if self._aborting:
                raise asyncio.CancelledError
            if answer.outcome in (Outcome.DOWN, Outcome.CANCELLED):
                continue  # never reached a server, or called back: not the prompt's fault
            if not answer.retryable or failures >= self.job.retries:
                return Completion(
                    task.index,
                    error=answer.attempt.error,
                    finish_reason=None,
                    endpoint=state.url,
                    attempt_log=log,
                    attempts=len(log),
                    retryable=False,
                )
            failures += 1
            ceiling = min(MAX_BACKOFF, self.job.retry_backoff * 2 ** (failures - 1))
            await asyncio.sleep(random.uniform(0, ceiling))

    def _request(self, prompt: Prompt) -> dict[str, Any]:
        settings, options = self.settings, prompt.options
        request: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(prompt, settings.system_prompt),
            "max_tokens": options.get("max_tokens", settings.max_tokens),
            "temperature": options.get("temperature", settings.temperature),
            "top_p": options.get("top_p", settings.top_p),
        }
        seed = options.get("seed", settings.seed)
        if seed is not None:
            request["seed"] = seed
        stop = options.get("stop", settings.stop)
        if stop:
            request["stop"] = stop
        if self.server.stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        return request

    async def _attempt(self, state: EndpointState, request: dict[str, Any], index: int) -> _Answer:
        """One request to one endpoint, under our timeouts; never raises but on cancel."""
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        attempt = _AttemptTimes(state.url, start, utc_now())
        inner = loop.create_task(self._send(state, request, index, attempt))
        timers = _Timers(loop, inner, self.server)
        attempt.timers = timers
        self._timers[index] = timers
        try:
            text, finish = await inner
        except asyncio.CancelledError:
            if timers.expired is None or self._aborting:
                raise
            if timers.expired == "paused":
                called_back = Failure(Outcome.CANCELLED, "cancelled: the job was paused")
                return self._failure(attempt, called_back)
            return self._failure(attempt, Failure(Outcome.FAILED, f"timeout: {timers.expired}"))
        except Exception as exc:  # noqa: BLE001 - each kind is sorted out below
            return self._sort_out(attempt, exc)
        finally:
            timers.cancel()
            self._timers.pop(index, None)
        return _Answer(Outcome.OK, attempt.record(None, None), text, finish)

    async def _send(
        self, state: EndpointState, request: dict[str, Any], index: int, times: _AttemptTimes
    ) -> tuple[str, str | None]:
        """The request, sent by the client; its answer read by `chat_wire`."""
        create = self._clients[state.url].chat.completions.with_streaming_response.create
        async with create(**request) as response:
            if not request.get("stream"):
                whole = read_completion(await response.read())
                times.first_chunk()
                times.tokens(whole.usage)
                return whole.text, whole.finish_reason
            parts: list[str] = []
            finish: str | None = None
            async for payload in sse_data(response.iter_lines()):
                times.first_chunk()
                piece = read_chunk(payload)
                if piece.usage is not None:
                    times.tokens(piece.usage)
                if piece.text:
                    times.first_token()
                    parts.append(piece.text)
                    if self.on_token is not None:
                        self._tokens.append((index, piece.text))
                finish = piece.finish_reason or finish
        return "".join(parts), finish

    def _sort_out(self, times: _AttemptTimes, exc: Exception) -> _Answer:
        return self._failure(times, classify(exc, times.url, self.secret, times.first is not None))

    def _failure(self, times: _AttemptTimes, failure: Failure) -> _Answer:
        attempt = times.record(failure.status, failure.error, failure.retry_after)
        return _Answer(failure.outcome, attempt, retryable=failure.retryable)

    def _deliver_tokens(self) -> None:
        sink = self.on_token
        while self._tokens:
            index, text = self._tokens.popleft()
            if sink is not None and index in self._pending:
                sink(index, text)


class _Timers:
    """Our timeouts on one attempt: the first byte, then a stall between chunks, and the
    whole-request deadline. One timer, re-armed only when it fires early; expiring
    cancels the attempt and names why."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], server: ServerSettings
    ) -> None:
        self.loop, self.task, self.server = loop, task, server
        now = loop.time()
        self.expired: str | None = None
        self.deadline = now + server.request_timeout
        self.last: float | None = None  # when the last chunk came
        first = now + server.first_token_timeout if server.stream else self.deadline
        self.handle = loop.call_at(min(first, self.deadline), self._check)

    def touch(self) -> None:
        """A chunk came: the stall clock starts again."""
        self.last = self.loop.time()

    def _check(self) -> None:
        now = self.loop.time()
        if now >= self.deadline:
            self.expire("request deadline")
        elif self.last is None:
            self.expire("first byte")
        elif now >= self.last + self.server.stall_timeout:
            self.expire("stalled stream")
        else:
            due = min(self.last + self.server.stall_timeout, self.deadline)
            self.handle = self.loop.call_at(due, self._check)

    def expire(self, phase: str) -> None:
        self.expired = phase
        self.task.cancel()

    def cancel(self) -> None:
        self.handle.cancel()


class _AttemptTimes:
    """What one attempt measured, turned into its `Attempt` record at the end."""

    __slots__ = ("url", "start", "started_at", "first", "ttft", "usage", "timers")

    def __init__(self, url: str, start: float, started_at: str) -> None:
        self.url, self.start, self.started_at = url, start, started_at
        self.first: float | None = None
        self.ttft: float | None = None
        self.usage = (0, 0)
        self.timers: _Timers | None = None

    def first_chunk(self) -> None:
        if self.first is None:
            self.first = time.monotonic()
        if self.timers is not None:
            self.timers.touch()

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.start

    def tokens(self, usage: tuple[int, int] | None) -> None:
        if usage is not None:
            self.usage = usage

    def record(
        self, status: int | None, error: str | None, retry_after: float | None = None
    ) -> Attempt:
        return Attempt(
            endpoint=self.url,
            status=status if status is not None else (200 if error is None else None),
            error=error,
            retry_after=retry_after,
            latency=round(time.monotonic() - self.start, 4),
            ttft=round(self.ttft, 4) if self.ttft is not None else None,
            tokens_input=self.usage[0],
            tokens_output=self.usage[1],
            started_at=self.started_at,
        )


def _estimate_tokens(request: dict[str, Any]) -> float:
    chars = sum(len(str(m.get("content", ""))) for m in request["messages"])
    return chars / CHARS_PER_TOKEN + (request.get("max_tokens") or 0)
