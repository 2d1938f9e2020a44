"""Events the engine emits while a batch runs, for a UI or a CLI to show."""

from __future__ import annotations

from dataclasses import dataclass

from tui_batch.core.jobs import BatchResult, JobStatus
from tui_batch.core.progress import ProgressUpdate


@dataclass(frozen=True, slots=True)
class PromptStarted:
    index: int
    attempt: int


@dataclass(frozen=True, slots=True)
class TokensStreamed:
    """New text generated for a prompt still running (`thought`: of its thought)."""

    index: int
    text: str
    thought: bool = False


@dataclass(frozen=True, slots=True)
class PromptRetrying:
    index: int
    attempt: int
    error: str
    delay: float


@dataclass(frozen=True, slots=True)
class ResultReady:
    update: ProgressUpdate


@dataclass(frozen=True, slots=True)
class JobStateChanged:
    job_id: str
    status: JobStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SchemaEnforced:
    """A job with a schema began on its backend: how its answers are kept to it
    (enforced while decoding, by the servers, or checked only), in words."""

    how: str


@dataclass(frozen=True, slots=True)
class CacheServed:
    """The answer cache answered `served` of the prompts a run had left; `to_run`
    remain for the model or servers."""

    served: int
    to_run: int
    path: str
    # The results served, in prompt order (one event, not one each: 100,000 of them
    # arrive at once).
    results: tuple[BatchResult, ...] = ()


@dataclass(frozen=True, slots=True)
class InputRead:
    """A job read in from a large input took its next chunk: `records` of the file
    read so far, `prompts` in the job now, `done` when the input is all in."""

    records: int
    prompts: int
    done: bool


@dataclass(frozen=True, slots=True)
class CacheKept:
    """At a run's end: answers it kept in the cache, and those it did not, by why
    (`cut off by max tokens`, `errors`, ...: they run again next time)."""

    kept: int
    left_out: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CacheProblem:
    """The answer cache could not be used (damaged, locked, a full disk): said once; the
    job runs on without it."""

    message: str


BatchEvent = (
    PromptStarted
    | TokensStreamed
    | PromptRetrying
    | ResultReady
    | JobStateChanged
    | SchemaEnforced
    | CacheServed
    | InputRead
    | CacheKept
    | CacheProblem
)
