"""One request to one endpoint: sent by the client, read by `chat_wire`, timed by our own
timeouts, measured, and sorted out into a `CallResult` (what it means for the endpoint
and for the prompt). `RemoteBackend` decides what to do next; this never retries.

An answer is whole only once the server says it is finished (a finish reason): a stream
that ends without one was dropped or interrupted, whatever its HTTP status, and is
retried like a dropped connection. Where a server sends no usage, the output tokens are
the streamed chunks with text (servers that stream tokens send one a token), marked as
counted so; the input tokens are then unknown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tui_batch.backends.remote.admission import Outcome
from tui_batch.backends.remote.chat_wire import (
    IncompleteAnswer,
    read_chunk,
    read_completion,
    sse_data,
)
from tui_batch.backends.remote.openai_api import Failure, Secret, classify
from tui_batch.core.jobs import STREAMED, UNKNOWN, Attempt, utc_now
from tui_batch.core.servers import ServerSettings

PAUSED = "paused"


@dataclass(slots=True)
class CallResult:
    """How one request ended: `outcome` for the endpoint, `retryable` for the prompt."""

    outcome: Outcome
    attempt: Attempt
    text: str = ""
    finish_reason: str | None = None
    retryable: bool = True
    # The thought the server sent apart from the answer (empty: none), and its tokens.
    reasoning: str = ""
    reasoning_tokens: int | None = None


class Call:
    """One attempt under our timeouts: the first byte (of a stream), a stall between
    chunks, and the whole-request deadline; one timer, re-armed only when it fires
    early. Expiring (or `call_back`, for a pause) cancels the request and names why."""

    def __init__(self, url: str, server: ServerSettings, secret: Secret) -> None:
        self.url, self.server, self.secret = url, server, secret
        self.start = time.monotonic()
        self.started_at = utc_now()
        self.first: float | None = None  # when the first chunk came
        self.last: float | None = None  # when the latest did
        self.ttft: float | None = None
        self.usage: tuple[int, int] | None = None  # what the server counted
        self.pieces = 0  # streamed chunks with text: one a token where a server streams tokens
        self.expired: str | None = None
        self._task: asyncio.Task[tuple[str, str | None, str]] | None = None
        self.reasoning_tokens: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    async def run(
        self, client: Any, request: dict[str, Any], on_text: Callable[[str, bool], None] | None
    ) -> CallResult:
        """Send `request` with `client`; never raises but when cancelled from outside."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._send(client, request, on_text))
        now = loop.time()
        self._deadline = now + self.server.request_timeout
        first = now + self.server.first_token_timeout if request.get("stream") else self._deadline
        self._handle = loop.call_at(min(first, self._deadline), self._check)
        try:
            text, finish, thought = await self._task
        except asyncio.CancelledError:
            if self.expired is None:
                raise
            if self.expired == PAUSED:
                return self._failure(Failure(Outcome.CANCELLED, "cancelled: the job was paused"))
            return self._failure(Failure(Outcome.FAILED, f"timeout: {self.expired}"))
        except Exception as exc:  # noqa: BLE001 - `classify` sorts out every kind
            return self._failure(classify(exc, self.url, self.secret, self.first is not None))
        finally:
            self._handle.cancel()
        attempt = self._record(None, None)
        return CallResult(
            Outcome.OK,
            attempt,
            text,
            finish,
            reasoning=thought,
            reasoning_tokens=self.reasoning_tokens,
        )

    def call_back(self) -> None:
        """The job is paused: end this request now; it is sent again later."""
        self._expire(PAUSED)

    async def _send(
        self, client: Any, request: dict[str, Any], on_text: Callable[[str, bool], None] | None
    ) -> tuple[str, str | None, str]:
        """The answer's text, finish reason and the thought sent apart from it."""
        create = client.chat.completions.with_streaming_response.create
        scrub = self.secret.scrub  # the key out of all a server sends, before it is read
        async with create(**request) as response:
            if not request.get("stream"):
                body = await response.read()
                whole = read_completion(scrub(body.decode("utf-8", "replace")))
                self._chunk_came(whole.usage, whole.reasoning_tokens)
                if whole.finish_reason is None:
                    raise IncompleteAnswer("the answer has no finish reason (cut off?)")
                return whole.text, whole.finish_reason, whole.reasoning
            parts: list[str] = []
            thought: list[str] = []
            finish: str | None = None
            events = 0
            async for payload in sse_data(response.iter_lines()):
                events += 1
                piece = read_chunk(scrub(payload))
                self._chunk_came(piece.usage, piece.reasoning_tokens)
                if piece.reasoning:
                    if self.ttft is None:
                        self.ttft = time.monotonic() - self.start
                    self.pieces += 1
                    thought.append(piece.reasoning)
                    if on_text is not None:
                        on_text(piece.reasoning, True)
                if piece.text:
                    if self.ttft is None:
                        self.ttft = time.monotonic() - self.start
                    self.pieces += 1
                    parts.append(piece.text)
                    if on_text is not None:
                        on_text(piece.text, False)
                finish = piece.finish_reason or finish
        if finish is None:  # a dropped answer, whatever the status said
            raise IncompleteAnswer(
                "the stream ended without a finish reason (cut off, or interrupted by the server)"
                if events
                else "the server answered a stream request with no events"
            )
        # A key split across chunks, joined again, is scrubbed again.
        return scrub("".join(parts)), finish, scrub("".join(thought))

    def _chunk_came(self, usage: tuple[int, int] | None, thought: int | None = None) -> None:
        self.last = time.monotonic()
        if self.first is None:
            self.first = self.last
        if usage is not None:
            self.usage = usage
        if thought is not None:
            self.reasoning_tokens = thought

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now, stall = loop.time(), self.server.stall_timeout
        if now >= self._deadline:
            self._expire("request deadline")
        elif self.last is None:
            self._expire("first byte")
        else:
            # `last` is on the monotonic clock, which the loop's clock also is.
            due = self.last + stall
            if now >= due:
                self._expire("stalled stream")
            else:
                self._handle = loop.call_at(min(due, self._deadline), self._check)

    def _expire(self, why: str) -> None:
        self.expired = why
        if self._task is not None:
            self._task.cancel()

    def _failure(self, failure: Failure) -> CallResult:
        attempt = self._record(failure.status, failure.error, failure.retry_after)
        return CallResult(failure.outcome, attempt, retryable=failure.retryable)

    def _record(
        self, status: int | None, error: str | None, retry_after: float | None = None
    ) -> Attempt:
        counts = None
        tokens = self.usage or (0, 0)
        if self.usage is None and error is None:  # an answer without usage: count what streamed
            counts = STREAMED if self.pieces else UNKNOWN
            tokens = (0, self.pieces)
        return Attempt(
            endpoint=self.url,
            status=status if status is not None else (200 if error is None else None),
            error=error,
            retry_after=retry_after,
            latency=round(time.monotonic() - self.start, 4),
            ttft=round(self.ttft, 4) if self.ttft is not None else None,
            tokens_input=tokens[0],
            tokens_output=tokens[1],
            started_at=self.started_at,
            token_counts=counts,
        )
