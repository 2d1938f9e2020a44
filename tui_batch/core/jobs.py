"""The data model: a job, its settings and its results (a prompt: `core.prompt`)."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from tui_batch.core.budget import Budget
from tui_batch.core.errors import CheckpointError, SettingsError
from tui_batch.core.prompt import Prompt, build_messages, messages_for, repeated
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT
from tui_batch.core.scoring.methods import RIGHT, Scoring
from tui_batch.core.servers import ServerSettings
from tui_batch.core.settings import (
    ErrorStrategy,
    GenerationSettings,
    JobOptions,
    Prices,
)
from tui_batch.core.slices import InputSlice, Reading
from tui_batch.core.templates.source import TemplateSource

__all__ = [
    "Attempt",
    "BatchJob",
    "BatchResult",
    "ErrorStrategy",
    "GenerationSettings",
    "JobOptions",
    "JobStatus",
    "Prompt",
    "build_messages",
    "messages_for",
    "repeated",
    "utc_now",
    "validate_job_id",
]

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# How a result's token counts were made, where not by the model or the server itself
# (`token_counts` None): its output counted one streamed chunk a token and its input
# unknown, or neither known. Shown as "-", never as 0.
STREAMED = "streamed"
UNKNOWN = "unknown"
TOKEN_COUNTS = (STREAMED, UNKNOWN)


def utc_now() -> str:
    """An ISO 8601 timestamp in UTC, to the second (made once a second: a run asks for
    two a prompt)."""
    second = int(time.time())
    if second != _LAST_NOW[0]:
        _LAST_NOW[:] = [second, datetime.fromtimestamp(second, timezone.utc).isoformat()]
    return _LAST_NOW[1]


_LAST_NOW: list[Any] = [None, ""]


def validate_job_id(job_id: str) -> str:
    """Return `job_id` if it is safe to use in a file name, else raise CheckpointError."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise CheckpointError(
            f"Invalid job id {job_id!r}: use letters, digits, '-' and '_' only (at most 64)"
        )
    return job_id


def validate_group_id(group_id: str) -> str:
    """Return `group_id` if it is an id as job ids are, else raise CheckpointError."""
    if not isinstance(group_id, str) or not JOB_ID_PATTERN.fullmatch(group_id):
        raise CheckpointError(f"Invalid group id {group_id!r:.80}")
    return group_id


class JobStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request sent for a prompt to a server: where, what came back, how long.

    `status` is the HTTP status (None when no response came); `error` names what went
    wrong (`HTTP 429`, `timeout: first token`, `connection refused`, ...), None on success.
    """

    endpoint: str
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    latency: float = 0.0
    ttft: float | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    started_at: str | None = None
    # None: counted by the server; STREAMED or UNKNOWN where it sent no usage.
    token_counts: str | None = None
    # An answer that broke the job's schema (`error` says how), kept when it is run again.
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Spelled out: `asdict` is slow, and this runs for every request of a remote job.
        data = {
            "endpoint": self.endpoint,
            "status": self.status,
            "error": self.error,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "ttft": self.ttft,
            "tokens_input": self.tokens_input,
            "tokens_output": self.tokens_output,
            "started_at": self.started_at,
        }
        if self.token_counts is not None:
            data["token_counts"] = self.token_counts
        if self.answer is not None:
            data["answer"] = self.answer
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Attempt:
        """An attempt as `to_dict` wrote it; anything else is a CheckpointError."""
        if not isinstance(data, dict) or not isinstance(data.get("endpoint"), str):
            raise CheckpointError("an attempt record has no endpoint")
        for key, kinds in _ATTEMPT_TYPES.items():
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise CheckpointError(f"an attempt record has a wrong {key}: {value!r:.40}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})


_ATTEMPT_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": int,
    "error": str,
    "retry_after": (int, float),
    "latency": (int, float),
    "ttft": (int, float),
    "tokens_input": int,
    "tokens_output": int,
    "started_at": str,
    "token_counts": str,
    "answer": str,
}


@dataclass(slots=True)
class BatchResult:
    """The outcome of one prompt: its text and answer, success or error, tokens and
    time, and the bookkeeping of retries and requests.

    Remote jobs also record the `endpoint` that answered and every request sent
    (`attempt_log`); `attempts` counts those requests. `ttft` is the time to the first
    streamed text of the attempt that produced the result.

    `duration` is the answer's own time: on a local model from its admission to a slot to
    its end, pauses left out; on servers the request that answered, first byte sent to
    last received. `queue_wait` is what came before that answering request on servers
    (waiting for a slot, earlier attempts and their backoff), None where there is none.
    `token_counts` says how the counts were made where neither the model nor the server
    counted them (`STREAMED`, `UNKNOWN`); then the unknown counts are 0 here and "-" on
    screens and in exports.
    """

    prompt_index: int
    prompt: str
    response_text: str = ""
    tokens_input: int = 0
    tokens_output: int = 0
    duration: float = 0.0
    success: bool = True
    error_message: str | None = None
    custom_id: str | None = None
    attempts: int = 1
    finish_reason: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    endpoint: str | None = None
    attempt_log: list[Attempt] = field(default_factory=list)
    # Seconds from the start to the first streamed text (None: nothing was streamed).
    ttft: float | None = None
    queue_wait: float | None = None
    token_counts: str | None = None
    # With a schema: the answer's value (its parsed JSON, or its label) when it is valid;
    # `invalid` when it is not (then `success` is False and `error_message` says why).
    output: Any = None
    invalid: bool = False
    # With expected answers: the score in [0, 1] (1 is right; None: unscored, as an error
    # or a record without an expected value is) and the expected value it was scored against.
    score: float | None = None
    expected: Any = None
    # Served from the answer cache: the job whose run gave the answer (None: run here).
    cached_from: str | None = None
    # A model that thinks: its thought, kept apart from the answer (None: no thought),
    # and the tokens it took (None: not counted apart; they are in `tokens_output`).
    reasoning: str | None = None
    reasoning_tokens: int | None = None

    @property
    def right(self) -> bool | None:
        """Right (score 1), wrong, or None when unscored."""
        return None if self.score is None else self.score >= RIGHT

    @property
    def input_known(self) -> bool:
        return self.token_counts is None

    @property
    def output_known(self) -> bool:
        return self.token_counts != UNKNOWN

    @property
    def errored(self) -> bool:
        """Failed with an error (not an answer that broke the schema)."""
        return not self.success and not self.invalid

    @property
    def thought_cut(self) -> bool:
        """Failed as a thought with no answer after it (`reasoning.INCOMPLETE_THOUGHT`)."""
        return not self.success and (self.error_message or "").startswith(INCOMPLETE_THOUGHT)

    @property
    def empty(self) -> bool:
        """An answer with nothing in it (which still counts as an answer)."""
        return self.success and not self.response_text.strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchResult:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["attempt_log"] = [
            a if isinstance(a, Attempt) else Attempt.from_dict(a)
            for a in values.get("attempt_log") or []
        ]
        return cls(**values)


@dataclass(slots=True)
class BatchJob:
    """A batch: its prompts, counts, status and dates, plus everything needed to run and
    resume it (model, settings, servers, template, output, prices)."""

    job_id: str
    model_id: str
    prompts: list[Prompt]
    total_prompts: int = 0
    completed: int = 0
    failed: int = 0
    status: JobStatus = JobStatus.PENDING
    started_at: str | None = None
    completed_at: str | None = None
    checkpoint_file: str | None = None
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    model_path: str | None = None
    source_file: str | None = None
    output_file: str | None = None
    output_format: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    error_strategy: str = "continue"
    retries: int = 0
    retry_backoff: float = 1.0
    checkpoint_every: int = 5
    invalid_retries: int = 2
    # Runs of each prompt: its results are `repeats` in a row, each with a seed of its own
    # (the prompts list holds each prompt once per run, `Prompt.repeat` its number).
    repeats: int = 1
    # How the job uses the answer cache: off, read, write or read-write.
    cache: str = "off"
    # Set for a job run on OpenAI-compatible servers; then `model_id` is the served name.
    server: ServerSettings | None = None
    # Set for a job whose prompts were rendered from a template and a data file.
    template: TemplateSource | None = None
    # What a million tokens cost, for the stats' cost estimate (None: not given).
    prices: Prices | None = None
    # Set for a job whose answers are scored against a column of expected answers.
    scoring: Scoring | None = None
    # What listings call it (`--name`; by default its job file's or input file's name).
    name: str | None = None
    # Which records of its input it takes (None: all of them).
    input_slice: InputSlice | None = None
    # Set while its input is still being read in (a job streamed from a large file).
    reading: Reading | None = None
    # Its input file's SHA-256 when it was read (a job streamed in): shards of one job
    # are joined only when they read the same file.
    input_sha256: str | None = None
    # A job joined from shards (`tui-batch merge`): their job ids, in shard order.
    merged_from: list[str] | None = None
    # What it may spend before it stops (None: no limit).
    budget: Budget | None = None
    # The group it belongs to (the jobs of one matrix, made and run together), and the
    # values that make it the variant it is (`temperature=0.7 model=...`).
    group_id: str | None = None
    variant: str | None = None

    def __post_init__(self) -> None:
        validate_job_id(self.job_id)
        if self.group_id is not None:
            validate_group_id(self.group_id)
        self.name = check_job_name(self.name)
        self.status = JobStatus(self.status)
        self.total_prompts = len(self.prompts)
        if not isinstance(self.settings, GenerationSettings):
            raise TypeError("settings must be GenerationSettings")
        if self.server is not None and not isinstance(self.server, ServerSettings):
            raise TypeError("server must be ServerSettings")
        if self.template is not None and not isinstance(self.template, TemplateSource):
            raise TypeError("template must be TemplateSource")
        if self.scoring is not None and not isinstance(self.scoring, Scoring):
            raise TypeError("scoring must be Scoring")
        if self.input_slice is not None and self.input_slice.whole:
            self.input_slice = None
        options = self.options  # checked when made
        self.error_strategy = options.error_strategy
        self.retry_backoff = options.retry_backoff
        self.cache = options.cache

    @property
    def options(self) -> JobOptions:
        return JobOptions(
            self.error_strategy,
            self.retries,
            self.retry_backoff,
            self.checkpoint_every,
            self.invalid_retries,
            self.repeats,
            self.cache,
        )

    @property
    def done(self) -> int:
        return self.completed + self.failed

    def custom_id(self, index: int) -> str:
        return self.prompts[index].custom_id or f"request-{index}"

    def work_left(self, retry_failed: bool = False) -> bool:
        """Whether resuming the job runs anything: prompts (or input) left, or, with
        `retry_failed`, failed prompts to run again."""
        if self.reading is not None or self.status is not JobStatus.COMPLETED:
            return True
        return self.done < self.total_prompts or (retry_failed and self.failed > 0)

    def header(self) -> dict[str, Any]:
        """Everything but the prompts: what a checkpoint listing or an export shows."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prompts"}
        data["status"] = self.status.value
        data["settings"] = self.settings.to_dict()
        data["server"] = self.server.to_dict() if self.server else None
        data["template"] = self.template.to_dict() if self.template else None
        data["prices"] = self.prices.to_dict() if self.prices else None
        data["scoring"] = self.scoring.to_dict() if self.scoring else None
        data["input_slice"] = self.input_slice.to_dict() if self.input_slice else None
        data["reading"] = self.reading.to_dict() if self.reading else None
        data["budget"] = self.budget.to_dict() if self.budget else None
        return data

    @property
    def is_remote(self) -> bool:
        return self.server is not None

    @classmethod
    def from_header(cls, header: Any, prompts: list[Prompt]) -> BatchJob:
        """A job from a checkpoint's header; a damaged header is a CheckpointError."""
        if not isinstance(header, dict):
            raise CheckpointError(f"job record is not an object but {type(header).__name__}")
        for key in ("job_id", "model_id", "status"):
            if key not in header:
                raise CheckpointError(f"job record has no {key!r}")
        for key, kinds in _HEADER_TYPES.items():
            value = header.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise CheckpointError(f"job record: {key!r} has a wrong value {value!r:.60}")
        for key in _HEADER_DATES:
            value = header.get(key)
            if value is not None:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise CheckpointError(
                        f"job record: {key!r} is not a date: {value!r:.60}"
                    ) from None
        merged = header.get("merged_from")
        if merged is not None and not all(isinstance(m, str) for m in merged):
            raise CheckpointError("job record: merged_from is not a list of job ids")
        if header["status"] not in {s.value for s in JobStatus}:
            raise CheckpointError(f"job record: unknown status {header['status']!r:.60}")
        known = {f.name for f in fields(cls)} - {"prompts", "total_prompts"}
        values = {k: v for k, v in header.items() if k in known and v is not None}
        try:
            values["settings"] = GenerationSettings.from_dict(header.get("settings") or {})
            if header.get("server") is not None:
                values["server"] = ServerSettings.from_dict(header["server"])
            if header.get("template") is not None:
                values["template"] = TemplateSource.from_dict(header["template"])
            if header.get("prices") is not None:
                prices = header["prices"]
                if not isinstance(prices, dict):
                    raise CheckpointError("job record: prices are not an object")
                values["prices"] = Prices(prices.get("input"), prices.get("output"))
            if header.get("scoring") is not None:
                values["scoring"] = Scoring.from_dict(header["scoring"])
            if header.get("input_slice") is not None:
                values["input_slice"] = InputSlice.from_dict(header["input_slice"])
            if header.get("budget") is not None:
                values["budget"] = Budget.from_dict(header["budget"])
            if header.get("reading") is not None:
                values["reading"] = Reading.from_dict(header["reading"])
            return cls(prompts=prompts, **values)
        except SettingsError as exc:
            raise CheckpointError(f"job record: {exc}") from None


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "job_id": str,
    "model_id": str,
    "status": str,
    "completed": int,
    "failed": int,
    "total_prompts": int,
    "model_path": str,
    "source_file": str,
    "output_file": str,
    "output_format": str,
    "checkpoint_file": str,
    "error_strategy": str,
    "retries": int,
    "retry_backoff": (int, float),
    "checkpoint_every": int,
    "invalid_retries": int,
    "repeats": int,
    "cache": str,
    "name": str,
    "input_sha256": str,
    "merged_from": list,
    "group_id": str,
    "variant": str,
}
_HEADER_DATES = ("started_at", "completed_at", "created_at", "updated_at")
_HEADER_TYPES.update(dict.fromkeys(_HEADER_DATES, str))


MAX_JOB_NAME = 80


def check_job_name(name: str | None) -> str | None:
    """A job's name, trimmed (None or blank: none); a SettingsError of one line for one
    too long or holding control characters."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise SettingsError(f"Job name (--name): expected text, got {name!r:.40}")
    name = " ".join(name.split())
    if len(name) > MAX_JOB_NAME:
        raise SettingsError(f"Job name (--name): at most {MAX_JOB_NAME} characters")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in name):
        raise SettingsError("Job name (--name): holds a control character or bytes not UTF-8")
    return name or None


def default_job_name(source_file: str | Path | None) -> str | None:
    """The name of a job given none: its input file's name, without the extension."""
    if not source_file:
        return None
    return check_job_name(Path(source_file).stem[:MAX_JOB_NAME] or None)
