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
import json
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from tui_batch.backends.admission import Admission, EndpointState, Outcome
from tui_batch.core.backend import Backend, BackendStatus, Completion, Task
from tui_batch.core.errors import ServerError
from tui_batch.core.jobs import (
    Attempt,
    BatchJob,
    GenerationSettings,
    Prompt,
    build_messages,
    utc_now,
)
from tui_batch.core.servers import MAX_RETRY_AFTER, Endpoint, ServerSettings

T = TypeVar("T")
# How long `step` waits for a completion before handing control back to the engine.
STEP_WAIT = 0.05
STEP_GATHER = 0.02
MAX_BACKOFF = 120.0
RETRYABLE_STATUS = {408, 409, 429}
THROTTLE_STATUS = {429, 503}
# Chars per token, for the tpm estimate of a prompt before its usage is known.
CHARS_PER_TOKEN = 4


def import_openai() -> Any:
    try:
        import openai
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ServerError("The openai package is missing: pip install openai") from None
    return openai


class Secret:
    """The API key, read from its variable when needed, and scrubbed from any text we keep."""

    def __init__(self, variable: str) -> None:
        self.variable = variable
        self.value = os.environ.get(variable) or None

    def scrub(self, text: str) -> str:
        if self.value and len(self.value) >= 4:
            text = text.replace(self.value, f"${self.variable}")
        return text

    def refused(self, url: str, status: int) -> str:
        if self.value is None:
            return (
                f"HTTP {status} from {url}: no API key was sent (${self.variable} is not set); "
                f"set it, or name another variable with --api-key-env"
            )
        return f"HTTP {status} from {url}: the key in ${self.variable} was refused"


def make_client(endpoint: Endpoint, server: ServerSettings, secret: Secret) -> Any:
    """An AsyncOpenAI for one endpoint: no SDK retries, every timeout bounded."""
    openai = import_openai()
    timeout = openai.Timeout(
        connect=server.connect_timeout,
        # A stream's stall and first byte are timed by us; this is the backstop.
        read=max(server.first_token_timeout, server.stall_timeout, 1.0)
        if server.stream
        else server.request_timeout,
        write=max(server.connect_timeout, 30.0),
        pool=server.request_timeout,
    )
    return openai.AsyncOpenAI(
        base_url=endpoint.url,
        api_key=secret.value or "none",
        max_retries=0,
        timeout=timeout,
    )


@dataclass(slots=True)
class _Answer:
    """One attempt's end: the outcome for the endpoint, and for the prompt."""

    outcome: Outcome
    attempt: Attempt
    text: str = ""
    finish_reason: str | None = None
    retryable: bool = True


class _Expired(Exception):
    """One of our timers ended an attempt."""


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
        self._pending: set[int] = set()  # submitted, not yet returned by step (engine side)
        self._aborting = False
        self.admission: Admission | None = None
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
        self.admission = self._call(self._make_admission())

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
        if self._loop is not None and self._tasks:
            self._aborting = True
            self._call(self._cancel_all())
        dropped = sorted(self._pending)
        self._pending.clear()
        while not self._done.empty():
            self._done.get_nowait()
        self._tokens.clear()
        return dropped

    def status(self) -> BackendStatus | None:
        return self.admission.status() if self.admission is not None else None

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

    async def _make_admission(self) -> Admission:
        return Admission(self.server)

    async def _cancel_all(self) -> None:
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
        assert self.admission is not None and self.job is not None
        request = self._request(task.prompt)
        estimate = _estimate_tokens(request)
        log: list[Attempt] = []
        failures = 0
        while True:
            state = await self.admission.acquire(estimate)
            answer = await self._attempt(state, request, task.index)
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
            if answer.outcome is Outcome.DOWN:
                continue  # never reached a server: not the prompt's fault
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
        try:
            text, finish = await inner
        except asyncio.CancelledError:
            if timers.expired is None or self._aborting:
                raise
            return self._failure(attempt, "timeout: " + timers.expired, None, Outcome.FAILED)
        except Exception as exc:  # noqa: BLE001 - each kind is sorted out below
            return self._sort_out(attempt, exc)
        finally:
            timers.cancel()
        return _Answer(Outcome.OK, attempt.record(None, None), text, finish)

    async def _send(
        self, state: EndpointState, request: dict[str, Any], index: int, times: _AttemptTimes
    ) -> tuple[str, str | None]:
        client = self._clients[state.url]
        if not request.get("stream"):
            response = await client.chat.completions.create(**request)
            times.first_chunk()
            usage = response.usage
            if usage is not None:
                times.tokens(usage.prompt_tokens, usage.completion_tokens)
            choice = response.choices[0]
            return choice.message.content or "", choice.finish_reason
        parts: list[str] = []
        finish: str | None = None
        stream = await client.chat.completions.create(**request)
        async with stream:
            async for chunk in stream:
                times.first_chunk()
                if chunk.usage is not None:
                    times.tokens(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    delta = choice.delta.content if choice.delta is not None else None
                    if delta:
                        times.first_token()
                        parts.append(delta)
                        if self.on_token is not None:
                            self._tokens.append((index, delta))
                    if choice.finish_reason:
                        finish = choice.finish_reason
        return "".join(parts), finish

    def _sort_out(self, times: _AttemptTimes, exc: Exception) -> _Answer:
        """What a failed request means for its endpoint and its prompt."""
        openai = import_openai()
        url = times.url
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retry_after = _retry_after(exc.response.headers)
            message = self.secret.scrub(_server_message(exc))
            if status == 401:
                return self._failure(
                    times, self.secret.refused(url, status), status, Outcome.FAILED, False
                )
            # A spent quota (OpenAI's insufficient_quota) is a 429 that waiting won't fix.
            if status == 429 and "insufficient_quota" in f"{exc.body} {message}":
                return self._failure(
                    times,
                    f"HTTP 429 from {url}: quota exhausted: {message}",
                    status,
                    Outcome.FAILED,
                    False,
                )
            if status in THROTTLE_STATUS:
                return self._failure(
                    times, f"HTTP {status}", status, Outcome.THROTTLED, True, retry_after
                )
            if status in RETRYABLE_STATUS or status >= 500:
                return self._failure(times, f"HTTP {status}: {message}", status, Outcome.FAILED)
            return self._failure(
                times, f"HTTP {status} from {url}: {message}", status, Outcome.FAILED, False
            )
        if isinstance(exc, openai.APIConnectionError):
            if _refused(exc):
                return self._failure(
                    times, f"connection refused: {_cause(exc)}", None, Outcome.DOWN
                )
            if isinstance(exc, openai.APITimeoutError):
                phase = "stalled stream" if times.first is not None else "no answer"
                return self._failure(times, f"timeout: {phase}", None, Outcome.FAILED)
            return self._failure(times, f"connection dropped: {_cause(exc)}", None, Outcome.FAILED)
        if isinstance(exc, openai.APIError):
            # An error the server sent inside a stream.
            message = self.secret.scrub(str(exc))
            return self._failure(times, f"server error: {message}", None, Outcome.FAILED)
        return self._failure(
            times,
            self.secret.scrub(f"malformed response: {type(exc).__name__}: {exc}")[:300],
            None,
            Outcome.FAILED,
        )

    def _failure(
        self,
        times: _AttemptTimes,
        error: str,
        status: int | None,
        outcome: Outcome,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> _Answer:
        return _Answer(outcome, times.record(status, error, retry_after), retryable=retryable)

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
            self._expire("request deadline")
        elif self.last is None:
            self._expire("first byte")
        elif now >= self.last + self.server.stall_timeout:
            self._expire("stalled stream")
        else:
            due = min(self.last + self.server.stall_timeout, self.deadline)
            self.handle = self.loop.call_at(due, self._check)

    def _expire(self, phase: str) -> None:
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

    def tokens(self, prompt: int | None, completion: int | None) -> None:
        self.usage = (int(prompt or 0), int(completion or 0))

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


def _retry_after(headers: Any) -> float | None:
    """Seconds a server asked us to wait: `retry-after-ms`, or `retry-after` in seconds
    or as an HTTP date; capped at MAX_RETRY_AFTER."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return min(MAX_RETRY_AFTER, max(0.0, float(ms) / 1000))
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        return min(MAX_RETRY_AFTER, max(0.0, seconds))
    except (TypeError, ValueError, OverflowError):
        return None


def _server_message(exc: Any) -> str:
    """The server's own words about an error status, one line, bounded."""
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        message = message or body.get("detail") or body.get("message")
    if not message:
        try:
            message = exc.response.text
        except Exception:  # noqa: BLE001 - a body we cannot read is no message
            message = None
    if not isinstance(message, str):
        message = json.dumps(message) if message is not None else exc.message
    return " ".join(str(message).split())[:300]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _refused(exc: BaseException) -> bool:
    """The request never reached a server: the connection failed or was refused."""
    return any(type(e).__name__ in ("ConnectError", "ConnectTimeout") for e in _chain(exc))


def _cause(exc: BaseException) -> str:
    chain = _chain(exc)
    root = chain[-1]
    text = str(root).strip() or type(root).__name__
    return " ".join(text.split())[:200]


def probe_servers(server: ServerSettings, model: str | None = None) -> dict[str, list[str]]:
    """Ask every endpoint for its models (`GET /models`) before a job is made.

    Returns each endpoint's model names (empty where a server does not list them).
    Raises a one-line ServerError when an endpoint is unreachable, refuses the key,
    answers something that is not the API, or (with `model`) does not serve the model.
    """
    return asyncio.run(_probe_all(server, model))


async def _probe_all(server: ServerSettings, model: str | None) -> dict[str, list[str]]:
    secret = Secret(server.api_key_env)
    found: dict[str, list[str]] = {}
    for endpoint in server.endpoints:
        client = make_client(endpoint, server, secret)
        try:
            found[endpoint.url] = await _probe(client, endpoint.url, server, secret)
        finally:
            await client.close()
        names = found[endpoint.url]
        if model is not None and names and model not in names:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise ServerError(
                f"Model {model!r} is not served by {endpoint.url}; it serves: {shown}"
            )
    return found


async def _probe(client: Any, url: str, server: ServerSettings, secret: Secret) -> list[str]:
    openai = import_openai()
    try:
        page = await asyncio.wait_for(client.models.list(), timeout=server.connect_timeout + 20)
        return [str(m.id) for m in page.data][:1000]
    except (asyncio.TimeoutError, openai.APITimeoutError):
        raise ServerError(f"{url} did not answer (timed out); is it the right address?") from None
    except openai.APIConnectionError as exc:
        raise ServerError(f"Cannot reach {url}: {_cause(exc)} (is the server running?)") from None
    except openai.APIStatusError as exc:
        if exc.status_code == 401:
            raise ServerError(secret.refused(url, 401)) from None
        if exc.status_code in (404, 405):
            return []  # a server that does not list its models can still serve them
        message = secret.scrub(_server_message(exc))
        raise ServerError(f"{url}/models answered HTTP {exc.status_code}: {message}") from None
    except (openai.APIError, ValueError, TypeError, AttributeError) as exc:
        raise ServerError(
            f"{url} does not answer like an OpenAI-compatible server: "
            f"{secret.scrub(str(exc))[:200]}"
        ) from None
