"""Which request may go now, and to which endpoint: concurrency caps, rate limits, and
the limits each endpoint's answers teach us.

- At most `concurrency` requests in flight overall, and at most each endpoint's limit
  there; a request goes to the endpoint with the fewest in flight relative to its limit.
- `rpm` and `tpm` token buckets, refilled continuously; a request's token cost is an
  estimate (prompt + max_tokens), corrected from the real usage when it is known.
- A 429 or 503 halves that endpoint's limit and pauses it for the server's Retry-After
  (at most two minutes); five straight successes grow the limit by half, up to its cap.
- An endpoint that refuses connections is out; one request probes it again after 1 s,
  then 2, 4, ... 30 s. While every endpoint is out, requests wait; once they have all
  been out for the job's `give_up_after` seconds, `gave_up` says so and the job stops,
  resumable.

Several jobs on the same servers share one admission (`fleet.Fleet`), each through a
`Share`: the limits are the fleet's, and the next request to go is the first waiting of
the job with the fewest in flight for its weight (its priority). Work-conserving: a job
alone takes everything, and a job paused or with nothing waiting holds nothing back.
Within a job, first come, first served; nothing polls. Runs on the backend's event loop
and is not thread-safe, `status` included: the backend takes it there.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from tui_batch.core.backend import BackendStatus, EndpointStatus
from tui_batch.core.progress import format_duration
from tui_batch.core.servers import MAX_RETRY_AFTER, Endpoint, ServerSettings

# Five straight successes grow a halved limit by half again (as promptfoo's scheduler).
GROW_AFTER = 5
FIRST_PROBE = 1.0
LAST_PROBE = 30.0
# A 429 or 503 with no Retry-After pauses its endpoint this long.
DEFAULT_COOLDOWN = 1.0


class Outcome(Enum):
    """How a request ended, as far as its endpoint's limits care."""

    OK = "ok"
    THROTTLED = "throttled"  # 429, 503: too much; slow down
    DOWN = "down"  # the connection was refused: the server is not there
    FAILED = "failed"  # anything else
    UNSENT = "unsent"  # cancelled before it was sent
    CANCELLED = "cancelled"  # sent, then called back (a pause): nothing to learn


class TokenBucket:
    """`per_minute` spread evenly: refilled continuously, holding at most one second's
    worth (at least 1). A cost larger than the bucket waits for a full bucket and then
    leaves it in debt, so large requests still go and the rate still holds."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.updated = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds until `cost` may be taken (0: now)."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost

    def refund(self, amount: float) -> None:
        """Give back (or, negative, take more of) an estimate once the real cost is known."""
        self.level = min(self.capacity, self.level + amount)


@dataclass(slots=True)
class EndpointState:
    endpoint: Endpoint
    cap: int
    limit: int
    in_flight: int = 0
    cooling_until: float = 0.0
    out_until: float | None = None
    probe_interval: float = FIRST_PROBE
    streak: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str | None = None

    @property
    def url(self) -> str:
        return self.endpoint.url

    def room(self, now: float) -> tuple[bool, float]:
        """Whether a request may go here now; else how long until it may (inf: when one
        in flight here finishes)."""
        if self.out_until is not None:
            if self.in_flight:  # a probe is on its way
                return False, math.inf
            return (True, 0.0) if now >= self.out_until else (False, self.out_until - now)
        if now < self.cooling_until:
            return False, self.cooling_until - now
        return self.in_flight < self.limit, math.inf


@dataclass(eq=False, slots=True)
class Share:
    """One job's part of an admission: its waiters, its requests in flight, its weight."""

    weight: int = 1
    in_flight: int = 0
    held: bool = False  # the job is paused: none of its requests go
    queue: deque[tuple[float, asyncio.Future[EndpointState]]] = field(default_factory=deque)


class Admission:
    """Hands out endpoints to requests under the job's limits (see the module doc)."""

    def __init__(self, server: ServerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self.concurrency = server.concurrency
        self.endpoints = [EndpointState(e, server.cap(e), server.cap(e)) for e in server.endpoints]
        self.rpm = TokenBucket(server.rpm, now) if server.rpm else None
        self.tpm = TokenBucket(server.tpm, now) if server.tpm else None
        self.rpm_limit, self.tpm_limit = server.rpm, server.tpm
        self.in_flight = 0
        # Each change of a limit or a server's state, newest last; `changes` counts them
        # all, so a reader can tell which it has not seen.
        self.notes: deque[str] = deque(maxlen=50)
        self.changes = 0
        # The jobs' shares; the first is the one a job alone uses.
        self.shares: list[Share] = [Share()]
        self._timer: asyncio.TimerHandle | None = None
        self.paused = False  # while set, nothing is sent
        self.give_up_after = server.give_up_after
        # Since when every endpoint has been out (None: one is not), and why the job
        # should stop (set once they have been out for `give_up_after`).
        self.all_out_since: float | None = None
        self.gave_up: str | None = None

    def share(self, weight: int = 1) -> Share:
        """A part of this admission for one more job on the same servers."""
        share = Share(max(1, weight))
        self.shares.append(share)
        return share

    def leave(self, share: Share) -> None:
        """The job is over: its waiters go (cancelled), and the others get its part."""
        for _, future in share.queue:
            future.cancel()
        share.queue.clear()
        if share in self.shares[1:]:
            self.shares.remove(share)
        self._dispatch()

    async def acquire(self, cost: float, share: Share | None = None) -> EndpointState:
        """Wait for a slot; `cost` is the request's estimated tokens (for `tpm`)."""
        share = share or self.shares[0]
        future: asyncio.Future[EndpointState] = asyncio.get_running_loop().create_future()
        share.queue.append((cost, future))
        self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result(), Outcome.UNSENT, share=share)
            raise

    def release(
        self,
        state: EndpointState,
        outcome: Outcome,
        retry_after: float | None = None,
        error: str | None = None,
        share: Share | None = None,
    ) -> None:
        """A request to `state` ended; learn from how, then serve the next waiters."""
        now = self.clock()
        self.in_flight -= 1
        (share or self.shares[0]).in_flight -= 1
        state.in_flight -= 1
        if outcome is Outcome.UNSENT:
            state.requests -= 1
        elif outcome is Outcome.CANCELLED:
            pass
        elif outcome is Outcome.OK:
            self._succeeded(state)
        else:
            state.errors += 1
            state.last_error = error
            state.streak = 0
            if outcome is Outcome.THROTTLED:
                self._throttled(state, now, retry_after)
            elif outcome is Outcome.DOWN:
                self._down(state, now, error)
        self._dispatch()

    def correct_tokens(self, estimate: float, actual: int | None) -> None:
        """The real usage of a request is known: settle the `tpm` estimate."""
        if self.tpm is not None and actual is not None:
            self.tpm.refund(estimate - actual)

    @property
    def waiting(self) -> int:
        return sum(1 for s in self.shares for _, future in s.queue if not future.done())

    def status(self) -> BackendStatus:
        now = self.clock()
        endpoints = []
        for s in list(self.endpoints):
            if s.out_until is not None:
                state, until = "out", max(0.0, s.out_until - now)
            elif now < s.cooling_until:
                state, until = "cooling", s.cooling_until - now
            else:
                state, until = "ok", None
            endpoints.append(
                EndpointStatus(
                    s.url,
                    state,
                    s.in_flight,
                    s.limit,
                    s.cap,
                    until,
                    s.requests,
                    s.errors,
                    s.last_error,
                )
            )
        note = "paused: nothing is sent" if self.paused else None
        out_for = next_try = None
        if endpoints and all(e.state == "out" for e in endpoints):
            next_try = min(e.until or 0.0 for e in endpoints)
            out_for = now - (self.all_out_since if self.all_out_since is not None else now)
            note = (
                f"every server is unreachable for {format_duration(out_for)}: waiting, "
                f"next try in {format_duration(next_try)}"
            )
        return BackendStatus(
            self.in_flight,
            self.waiting,
            self.concurrency,
            tuple(endpoints),
            self.rpm_limit,
            self.tpm_limit,
            note,
            tuple(self.notes),
            self.changes,
            out_for=out_for,
            next_try=next_try,
        )

    def note(self, text: str) -> None:
        """A change worth telling a person (a server out, a limit changed, no usage)."""
        self.notes.append(text)
        self.changes += 1

    def _succeeded(self, state: EndpointState) -> None:
        if state.out_until is not None:
            self.all_out_since = None
            state.out_until = None
            state.probe_interval = FIRST_PROBE
            self.note(f"{state.url} is back")
        state.streak += 1
        if state.streak >= GROW_AFTER and state.limit < state.cap:
            state.limit = min(state.cap, max(state.limit + 1, math.ceil(state.limit * 1.5)))
            state.streak = 0
            self.note(f"{state.url}: limit grows to {state.limit}")

    def _throttled(self, state: EndpointState, now: float, retry_after: float | None) -> None:
        pause = min(MAX_RETRY_AFTER, DEFAULT_COOLDOWN if retry_after is None else retry_after)
        state.cooling_until = max(state.cooling_until, now + pause)
        if state.limit > 1:
            state.limit = max(1, state.limit // 2)
        self.note(
            f"{state.url}: {state.last_error or 'throttled'}; limit {state.limit}, "
            f"paused {pause:.1f}s"
        )

    def _down(self, state: EndpointState, now: float, error: str | None) -> None:
        if state.out_until is None:
            self.note(f"{state.url} is out: {error or 'unreachable'}")
        else:
            state.probe_interval = min(LAST_PROBE, state.probe_interval * 2)
        state.out_until = now + state.probe_interval
        if all(s.out_until is not None for s in self.endpoints):
            if self.all_out_since is None:
                self.all_out_since = now
            out_for = now - self.all_out_since
            if self.give_up_after and out_for >= self.give_up_after and self.gave_up is None:
                self.gave_up = (
                    f"every server has been unreachable for {format_duration(out_for)} "
                    f"(--give-up-after {self.give_up_after:g})"
                )

    def hold(self, paused: bool, share: Share | None = None) -> None:
        """Send nothing while `paused` (of one job's `share`: nothing of its); when it
        ends, serve the waiters again."""
        if share is None:
            self.paused = paused
        else:
            share.held = paused
        if not paused:
            self._dispatch()

    def _next(self) -> Share | None:
        """The share whose first waiter goes next: the fewest in flight for its weight."""
        best = None
        for share in self.shares:
            while share.queue and share.queue[0][1].done():
                share.queue.popleft()
            if share.queue and not share.held and (best is None or _fewer(share, best)):
                best = share
        return best

    def _pick(self, cost: float, now: float) -> tuple[EndpointState | None, float]:
        """An endpoint for a request now, or how long until one may be free."""
        if self.paused or self.in_flight >= self.concurrency:
            return None, math.inf
        best, wait = None, math.inf
        for state in self.endpoints:
            ok, until = state.room(now)
            if not ok:
                wait = min(wait, until)
            elif best is None or state.in_flight * best.limit < best.in_flight * state.limit:
                best = state
        if best is None:
            return None, wait
        rate_wait = max(
            self.rpm.wait(1, now) if self.rpm else 0.0,
            self.tpm.wait(cost, now) if self.tpm else 0.0,
        )
        if rate_wait > 0:
            return None, rate_wait
        if self.rpm:
            self.rpm.take(1)
        if self.tpm:
            self.tpm.take(cost)
        self.in_flight += 1
        best.in_flight += 1
        best.requests += 1
        return best, 0.0

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.clock()
        while (share := self._next()) is not None:
            cost, future = share.queue[0]
            state, wait = self._pick(cost, now)
            if state is None:
                if wait != math.inf:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(max(wait, 0.001), self._dispatch)
                return
            share.queue.popleft()
            share.in_flight += 1
            future.set_result(state)


def _fewer(share: Share, other: Share) -> bool:
    """Whether `share` has fewer requests in flight than `other` for its weight."""
    return (share.in_flight + 1) * other.weight < (other.in_flight + 1) * share.weight
