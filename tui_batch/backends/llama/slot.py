"""A prompt in flight in the parallel loop (`Slot`), and the job it is decoded for
(`JobRun`): its settings, schema and where its text streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui_batch.backends.llama.answer import GeneratedText
from tui_batch.backends.llama.thinking import ThoughtTracker
from tui_batch.core.backend import Task, TokenSink
from tui_batch.core.jobs import GenerationSettings


@dataclass(slots=True)
class JobRun:
    """What one job's prompts are decoded with: its settings, its schema's constraint
    (None: not enforced here) and how, and where its text streams."""

    settings: GenerationSettings
    constraint: Any = None
    schema_mode: str | None = None
    on_token: TokenSink | None = None


@dataclass(slots=True)
class Slot:
    seq_id: int
    task: Task
    tokens: list[int]
    max_tokens: int
    answer: GeneratedText
    sampler: Any  # llama.cpp's sampler chain; None for greedy, chosen by argmax
    run: JobRun  # the job the prompt is of
    matcher: Any = None  # the job's schema, enforced (see `constraint`)
    n_past: int = 0  # tokens of this sequence already in the KV cache
    pending: int = -1  # sampled token still to be decoded
    generated: int = 0
    batch_index: int = -1  # this slot's token with logits in the current batch
    output_row: int = -1  # its row in the current decode's logits
    # A slot of the same prompt admitted with this one (a repeat): this one waits for
    # its prefill and copies its cells (`_take_twins`), rather than prefill it again.
    twin: int | None = None
    # A model that thinks: its output followed as thought and answer (None: no thought),
    # and the thought's text as it streams.
    tracker: ThoughtTracker | None = None
    thinking: GeneratedText = field(default_factory=lambda: GeneratedText([]))
