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
import concurrent.futures
import contextlib
import inspect
import random
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from tui_batch.backends.remote.admission import Admission, Outcome, Share
from tui_batch.backends.remote.call import Call
from tui_batch.backends.remote.chat_wire import (
    chat_request,
    estimate_tokens,
    reasoning_fields,
    structured_output,
    with_extra,
)
from tui_batch.backends.remote.endpoint_probes import EndpointProbes
from tui_batch.backends.remote.fleet import Fleet
from tui_batch.backends.remote.openai_api import Secret, make_client
from tui_batch.backends.remote.request_form import server_request_form
from tui_batch.core.backend import Backend, BackendStatus, Completion, Inbox, RequestForm, Task
from tui_batch.core.cache.key import reproducible, sampling_of
from tui_batch.core.errors import ServerError
from tui_batch.core.jobs import Attempt, BatchJob, GenerationSettings
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT, from_parts, incomplete
from tui_batch.core.servers import ServerSettings

T = TypeVar("T")
# How long `step` waits for a completion before handing control back to the engine.
STEP_WAIT = 0.05
STEP_GATHER = 0.02
MAX_BACKOFF = 120.0
# The loop publishes what a dashboard shows this often (it never waits for the loop).
STATUS_EVERY = 0.1
# The longest a call into the loop waits (abort, pause, resume, close): a loop that is
# wedged must not hang the engine or ctrl+q.
CALL_WAIT = 10.0


class RemoteBackend(Backend):
    """Runs prompts on the job's servers; see the module doc."""

    def __init__(
        self, server: ServerSettings, model: str, fleet: Fleet | None = None, priority: int = 1
    ) -> None:
        """`fleet`: servers other jobs run on at the same time, whose loop and limits
        this job shares (with `priority` its weight); None: the job's own."""
        self.server = server
        self.fleet = fleet
        self.priority = priority
        self.model = model
        self.secret = Secret(server.api_key_env)
        # What each endpoint takes (a schema's form, reasoning fields), asked once.
        self.probes = EndpointProbes(model, self.secret)
        self.schema_forms = self.probes.schema_forms
        # Room for more prompts than may be in flight, so a free slot never waits on the
        # engine (which wakes for a batch of results, not for each).
        self.capacity = server.concurrency * 4 + 16
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._inbox = Inbox()  # what the loop finished, for the engine's `step`
        self._submitted: deque[Task] = deque()
        self._wake_pending = False
        self._calls: dict[int, Call] = {}  # the request on its way for a prompt (loop side)
        self._aborting = False
        # Made again for each run, in `begin` (a fleet's is the fleet's); the job's part.
        self.admission = fleet.admission if fleet is not None else Admission(server)
        self._share: Share | None = None
        self._published: BackendStatus | None = None
        self._said_no_usage: set[str] = set()
        self.job: BatchJob | None = None
        self.settings = GenerationSettings()

    # -- the owner's pair ---------------------------------------------------------------

    def open(self, settings: GenerationSettings) -> None:
        self.settings = settings
        if self._loop is not None:
            return
        if self.fleet is not None:
            self._loop = self.fleet.loop()
        else:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="tui-batch-remote", daemon=True
            )
            self._thread.start()
        self._loop.call_soon_threadsafe(self._publish)
        if not self._call(self._make_clients()):
            raise ServerError("The client's event loop did not start: try again")

    def close(self) -> None:
        if self._loop is None:
            return
        self.abort()
        try:
            self._call(self._close_clients())
        finally:
            if self.fleet is None:  # else the loop is the fleet's, and goes on
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=CALL_WAIT)
                if not self._loop.is_running():
                    self._loop.close()
            self._published = self._snapshot()
            self._loop = self._thread = None

    # -- the engine's protocol ----------------------------------------------------------

    def begin(self, job: BatchJob, on_token: Any = None) -> None:
        super().begin(job, on_token)
        self.job = job
        self._aborting = False
        if self.fleet is None:
            self.admission = Admission(self.server)
        else:
            self._share = self._on_loop(lambda: self.admission.share(self.priority))
        if job.settings.schema is not None:
            self._find_schema_forms()
        if reasoning_fields(job.settings):
            self._find_reasoning_fields()

    def end(self) -> None:
        super().end()
        if self._share is not None and self._loop is not None:
            share, self._share = self._share, None
            self._on_loop(lambda: self.admission.leave(share))

    def set_priority(self, priority: int) -> None:
        self.priority = max(1, priority)
        share = self._share
        if share is not None:  # the loop reads it at its next pick
            share.weight = self.priority

    def _find_reasoning_fields(self) -> None:
        if self._loop is not None:
            urls = [e.url for e in self.server.endpoints]
            fields = reasoning_fields(self.settings)
            self.probes.find_reasoning_fields(
                self._loop, self._clients, urls, fields, self.admission.note
            )

    def _find_schema_forms(self) -> None:
        self.schema_mode = None
        if self._loop is not None:
            urls = [e.url for e in self.server.endpoints]
            self.schema_mode = self.probes.find_schema_forms(
                self._loop, self._clients, urls, self.admission.note
            )

    @property
    def in_flight(self) -> int:
        return len(self._inbox.pending)

    def submit(self, task: Task) -> None:
        assert self._loop is not None, "begin() first"
        self._inbox.pending.add(task.index)
        self._submitted.append(task)
        # One wake-up of the loop for a burst of submits, not one each.
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._start_submitted)

    def step(self) -> list[Completion]:
        # Let a few more finish after the first: the engine wakes (and takes the GIL
        # from the loop's thread) once for several, not once for each.
        return self._inbox.take(self.on_token, STEP_WAIT, STEP_GATHER)

    def abort(self) -> list[int]:
        """Cancel every request (their connections close, so servers stop generating);
        their prompts stay pending."""
        if self._loop is not None and (self._tasks or self._submitted):
            self._aborting = True
            try:
                self._call(self._cancel_all())
            finally:
                self._aborting = False  # every task has ended: new ones may run
        return self._inbox.forget()

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
        self.admission.hold(paused, self._share)
        if paused:
            for call in list(self._calls.values()):
                call.call_back()

    def request_form(self, job: BatchJob) -> RequestForm:
        return server_request_form(self.server, self.model, job.settings)

    def stop_reason(self) -> str | None:
        return self.admission.gave_up

    def status(self) -> BackendStatus | None:
        """The latest snapshot the loop published (a frozen value: reading it never
        waits for the loop); taken directly when no loop runs."""
        loop = self._loop
        if loop is None or not loop.is_running() or self._published is None:
            return self._snapshot()
        return self._published

    def _snapshot(self) -> BackendStatus:
        return replace(self.admission.status(), sending=frozenset(self._calls))

    def _publish(self) -> None:
        """On the loop: take a snapshot for readers on other threads, then again soon."""
        self._published = self._snapshot()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_later(STATUS_EVERY, self._publish)

    # -- the loop's side ----------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> bool:
        """Run `coroutine` on the loop and wait for it, at most CALL_WAIT: a wedged loop
        is given up on (False; the caller goes on) rather than waited for for ever."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(timeout=CALL_WAIT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            # Never started (the loop is wedged): closed here, so it is not left unawaited.
            if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                with contextlib.suppress(RuntimeError, ValueError):
                    coroutine.close()
            return False
        return True

    def _on_loop(self, work: Callable[[], T]) -> T:
        """`work()` run on the loop (where the admission lives), and its value."""
        done: list[T] = []

        async def run() -> None:
            done.append(work())

        if not self._call(run()):
            raise ServerError("The client's event loop did not answer: try again")
        return done[0]

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
        self._inbox.put(completion)

    async def _prompt(self, task: Task) -> Completion:
        """Send the prompt until it succeeds, fails for good, or runs out of retries."""
        assert self.job is not None
        request = chat_request(task.prompt, self.settings, self.model, self.server.stream)
        estimate = estimate_tokens(request)
        on_text = self._text_sink(task.index) if self.on_token is not None else None
        log: list[Attempt] = []
        failures = 0
        while True:
            state = await self.admission.acquire(estimate, self._share)
            call = self._calls[task.index] = Call(state.url, self.server, self.secret)
            form = self.schema_forms.get(state.url)
            sent = with_extra(request, structured_output(form, self.settings.schema))
            sent = with_extra(sent, self._reasoning_for(state.url))
            try:
                answer = await call.run(self._clients[state.url], sent, on_text)
            finally:
                del self._calls[task.index]
            log.append(answer.attempt)
            self.admission.release(
                state,
                answer.outcome,
                answer.attempt.retry_after,
                answer.attempt.error,
                self._share,
            )
            thought = from_parts(answer.text, answer.reasoning)
            if answer.outcome is Outcome.OK and incomplete(
                thought.reasoning, thought.answer, thought.closed
            ):
                # A thought with no answer: retried like other incomplete answers, but
                # where a rerun would think the same again (greedy, or a fixed seed).
                answer.outcome, answer.retryable = Outcome.FAILED, not self._reproducible(task)
                answer.attempt = log[-1] = replace(answer.attempt, error=INCOMPLETE_THOUGHT)
            if answer.outcome is Outcome.OK:
                usage = answer.attempt
                counted = usage.token_counts is None
                self.admission.correct_tokens(
                    estimate, usage.tokens_input + usage.tokens_output if counted else None
                )
                if not counted:
                    self._no_usage(state.url)
                return Completion(
                    task.index,
                    response_text=thought.answer,
                    reasoning=thought.reasoning,
                    reasoning_tokens=answer.reasoning_tokens,
                    tokens_input=usage.tokens_input,
                    tokens_output=usage.tokens_output,
                    finish_reason=answer.finish_reason,
                    endpoint=state.url,
                    attempt_log=log,
                    attempts=len(log),
                    retryable=False,
                    duration=usage.latency,
                    token_counts=usage.token_counts,
                )
            if self._aborting:
                raise asyncio.CancelledError
            if answer.outcome in (Outcome.DOWN, Outcome.CANCELLED):
                continue  # never reached a server, or called back: not the prompt's fault
            if not answer.retryable or failures >= self.job.retries:
                return Completion(
                    task.index,
                    error=answer.attempt.error,
                    finish_reason=answer.finish_reason,
                    reasoning=thought.reasoning,
                    reasoning_tokens=answer.reasoning_tokens,
                    endpoint=state.url,
                    attempt_log=log,
                    attempts=len(log),
                    retryable=False,
                    duration=answer.attempt.latency,
                )
            failures += 1
            ceiling = min(MAX_BACKOFF, self.job.retry_backoff * 2 ** (failures - 1))
            await asyncio.sleep(random.uniform(0, ceiling))

    def _reasoning_for(self, url: str) -> dict[str, Any]:
        """The job's reasoning fields that the server at `url` takes, as a request adds
        them (the client does not know them: they go in the body as they are)."""
        fields = reasoning_fields(self.settings)
        if not fields:
            return {}
        taken = self.probes.reasoning_for(url, fields)
        return {"extra_body": taken} if taken else {}

    def _reproducible(self, task: Task) -> bool:
        """Whether sending the prompt again gives the same answer (greedy, or a seed)."""
        return reproducible(sampling_of(task.prompt, self.settings))

    def _no_usage(self, url: str) -> None:
        """Say once per server that it sends no token counts, and what gets them."""
        if url in self._said_no_usage:
            return
        self._said_no_usage.add(url)
        if self.server.stream:
            self.admission.note(
                f"{url} sends no token counts when streaming: output tokens are counted one "
                "streamed chunk a token, input tokens are unknown (shown as -); whole answers "
                "(--no-stream, or stream = false in a job file) get them"
            )
        else:
            self.admission.note(f"{url} sends no token counts: they are unknown (shown as -)")

    def _text_sink(self, index: int) -> Callable[[str, bool], None]:
        """Where a prompt's streamed text (or thought) goes: to the engine, at its next
        `step`."""

        def sink(text: str, thought: bool = False) -> None:
            self._inbox.text(index, text, thought)

        return sink
