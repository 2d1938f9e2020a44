"""One request to one endpoint: sent by the client, read by `chat_wire`, timed by our own
timeouts, measured, and sorted out into an `Answer` (what it means for the endpoint and
for the prompt). `RemoteBackend` decides what to do next; this never retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tui_batch.backends.admission import Outcome
from tui_batch.backends.chat_wire import read_chunk, read_completion, sse_data
from tui_batch.backends.openai_api import Failure, Secret, classify
from tui_batch.core.jobs import Attempt, utc_now
from tui_batch.core.servers import ServerSettings

PAUSED = "paused"


@dataclass(slots=True)
class Answer:
    """How one attempt ended: `outcome` for the endpoint, `retryable` for the prompt."""

    outcome: Outcome
    attempt: Attempt
    text: str = ""
    finish_reason: str | None = None
    retryable: bool = True


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
        self.usage = (0, 0)
        self.expired: str | None = None
        self._task: asyncio.Task[tuple[str, str | None]] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    async def run(
        self, client: Any, request: dict[str, Any], on_text: Callable[[str], None] | None
    ) -> Answer:
        """Send `request` with `client`; never raises but when cancelled from outside."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._send(client, request, on_text))
        now = loop.time()
        self._deadline = now + self.server.request_timeout
        first = now + self.server.first_token_timeout if request.get("stream") else self._deadline
        self._handle = loop.call_at(min(first, self._deadline), self._check)
        try:
            text, finish = await self._task
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
        return Answer(Outcome.OK, self._record(None, None), text, finish)

    def call_back(self) -> None:
        """The job is paused: end this request now; it is sent again later."""
        self._expire(PAUSED)

    async def _send(
        self, client: Any, request: dict[str, Any], on_text: Callable[[str], None] | None
    ) -> tuple[str, str | None]:
        create = client.chat.completions.with_streaming_response.create
        async with create(**request) as response:
            if not request.get("stream"):
                whole = read_completion(await response.read())
                self._chunk_came(whole.usage)
                return whole.text, whole.finish_reason
            parts: list[str] = []
            finish: str | None = None
            async for payload in sse_data(response.iter_lines()):
                piece = read_chunk(payload)
                self._chunk_came(piece.usage)
                if piece.text:
                    if self.ttft is None:
                        self.ttft = time.monotonic() - self.start
                    parts.append(piece.text)
                    if on_text is not None:
                        on_text(piece.text)
                finish = piece.finish_reason or finish
        return "".join(parts), finish

    def _chunk_came(self, usage: tuple[int, int] | None) -> None:
        self.last = time.monotonic()
        if self.first is None:
            self.first = self.last
        if usage is not None:
            self.usage = usage

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

    def _failure(self, failure: Failure) -> Answer:
        attempt = self._record(failure.status, failure.error, failure.retry_after)
        return Answer(failure.outcome, attempt, retryable=failure.retryable)

    def _record(
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
