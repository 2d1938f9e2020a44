"""A prompt in flight in the parallel loop (`Slot`): what a chosen token does to its
answer (its thought, stop strings, schema, length), and the completion it ends as; and
the job it is decoded for (`JobRun`): its settings, schema and where its text streams."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui_batch.backends.llama.answer import GeneratedText
from tui_batch.backends.llama.thinking import THINKING, ThoughtTracker
from tui_batch.core.backend import Completion, Task, TokenSink
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

    def take(self, token: int, piece_of: Callable[[int], bytes | None]) -> str | None:
        """Add a chosen `token` (its text by `piece_of`) to the answer, streaming what is
        settled; why the answer ends with it ("stop", "length"), or None."""
        piece = piece_of(token)
        if piece is None:
            return "stop"
        self.generated += 1
        tracker, on_token = self.tracker, self.run.on_token
        if tracker is None:
            answer = [token]
        else:
            thought = len(tracker.thought)
            answer = tracker.take(token)
            if on_token is not None and len(tracker.thought) > thought:
                for new in tracker.thought[thought:]:
                    self.thinking.add(piece_of(new) or b"")
                if text := self.thinking.settled():
                    on_token(self.task.index, text, True)
        for token in answer:
            if self.answer.add(piece_of(token) or b""):
                return "stop"
            if self.matcher is not None and (
                not self.matcher.consume_token(token) or self.matcher.is_stopped()
            ):
                return "stop"  # the schema allows nothing more
        if self.generated >= self.max_tokens:
            return "length"
        self.pending = token
        if on_token is not None and (settled := self.answer.settled()):
            on_token(self.task.index, settled, False)
        return None

    def completion(self, reason: str, piece_of: Callable[[int], bytes | None]) -> Completion:
        """The answer ended for `reason`: what was not streamed yet goes out, and its
        completion (its thought apart, where it had one)."""
        if self.run.on_token is not None and (rest := self.answer.rest()):
            self.run.on_token(self.task.index, rest, False)
        completion = Completion(
            self.task.index,
            response_text=self.answer.final(),
            tokens_input=len(self.tokens),
            tokens_output=self.generated,
            finish_reason=reason,
        )
        tracker = self.tracker
        if tracker is not None and tracker.had_thought:
            thought = b"".join(piece_of(t) or b"" for t in tracker.thought)
            completion.reasoning = thought.decode("utf-8", errors="ignore").strip()
            completion.thought_closed = tracker.closed
            completion.reasoning_tokens = tracker.thought_tokens
            completion.response_text = completion.response_text.lstrip()
        return completion

    @property
    def under_schema(self) -> bool:
        """Its next token is chosen under its schema: one is enforced, and no thought is
        going on or being closed (the schema is the answer's)."""
        tracker = self.tracker
        return self.matcher is not None and (
            tracker is None or (tracker.answering and tracker.forced() is None)
        )

    @property
    def must_go_on(self) -> bool:
        """A thinking slot may not end here: inside its thought (only its close ends it),
        or after it with no answer yet (an answer follows every thought)."""
        tracker = self.tracker
        return tracker is not None and (
            tracker.phase == THINKING or (tracker.had_thought and not self.answer.text.strip())
        )
