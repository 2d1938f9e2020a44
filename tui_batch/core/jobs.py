"""The data model: a job, its prompts, its settings and its results."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from tui_batch.core.errors import CheckpointError, SettingsError

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def utc_now() -> str:
    """An ISO 8601 timestamp in UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def validate_job_id(job_id: str) -> str:
    """Return `job_id` if it is safe to use in a file name, else raise CheckpointError."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise CheckpointError(
            f"Invalid job id {job_id!r}: use letters, digits, '-' and '_' only (at most 64)"
        )
    return job_id


class JobStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Prompt:
    """One prompt: its text plus what a file may say about it.

    `messages` holds a whole chat (OpenAI Batch API lines) when there is more than a
    single user turn; `options` holds per-request generation overrides (max_tokens, ...).
    """

    text: str
    custom_id: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text}
        for name in ("custom_id", "system", "messages", "line"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.options:
            data["options"] = self.options
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> Prompt:
        if isinstance(data, str):
            return cls(text=data)
        return cls(
            text=data["text"],
            custom_id=data.get("custom_id"),
            system=data.get("system"),
            messages=data.get("messages"),
            options=data.get("options") or {},
            line=data.get("line"),
        )


@dataclass(slots=True)
class GenerationSettings:
    """How the model generates. `None` means the backend's default."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    system_prompt: str | None = None
    n_ctx: int = 2048
    n_threads: int | None = None
    n_gpu_layers: int = 0
    parallel: int = 0  # prompts decoded together; 0: one at a time, streamed

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class ErrorStrategy:
    """What to do when a prompt fails: `continue`, `stop`, or `threshold:N`."""

    kind: str = "continue"
    threshold: int = 0

    @classmethod
    def parse(cls, text: str) -> ErrorStrategy:
        text = (text or "continue").strip().lower()
        if text in ("continue", "stop"):
            return cls(text)
        if text.startswith("threshold:"):
            count = text.partition(":")[2]
            if count.isdigit() and int(count) > 0:
                return cls("threshold", int(count))
        raise SettingsError(
            f"Invalid error strategy {text!r}: use continue, stop or threshold:N (N >= 1)"
        )

    def should_stop(self, failed: int) -> bool:
        if self.kind == "stop":
            return failed > 0
        if self.kind == "threshold":
            return failed >= self.threshold
        return False

    def __str__(self) -> str:
        return f"threshold:{self.threshold}" if self.kind == "threshold" else self.kind


@dataclass(slots=True)
class BatchResult:
    """The outcome of one prompt (the guide's fields, plus bookkeeping)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(slots=True)
class BatchJob:
    """A batch: the guide's fields, plus the settings needed to run and resume it."""

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

    def __post_init__(self) -> None:
        validate_job_id(self.job_id)
        self.status = JobStatus(self.status)
        self.total_prompts = len(self.prompts)
        ErrorStrategy.parse(self.error_strategy)
        if self.checkpoint_every < 1:
            raise SettingsError("checkpoint_every must be at least 1")
        if self.retries < 0:
            raise SettingsError("retries must be 0 or more")

    @property
    def done(self) -> int:
        return self.completed + self.failed

    def custom_id(self, index: int) -> str:
        return self.prompts[index].custom_id or f"request-{index}"

    def header(self) -> dict[str, Any]:
        """Everything but the prompts: what a checkpoint listing or an export shows."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prompts"}
        data["status"] = self.status.value
        data["settings"] = asdict(self.settings)
        return data

    @classmethod
    def from_header(cls, header: dict[str, Any], prompts: list[Prompt]) -> BatchJob:
        known = {f.name for f in fields(cls)} - {"prompts", "total_prompts"}
        values = {k: v for k, v in header.items() if k in known}
        values["settings"] = GenerationSettings.from_dict(header.get("settings") or {})
        return cls(prompts=prompts, **values)
