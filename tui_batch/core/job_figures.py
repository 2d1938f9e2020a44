"""The figures of one job, as `stats` computes them and the stats line, screen and
`--json` show them: counts, tokens, spreads, failure groups, servers, timing, scores."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tui_batch.core.batch_records import BatchFile
from tui_batch.core.scoring.figures import Confusion, RepeatFigures, wilson
from tui_batch.core.settings import Prices
from tui_batch.core.spread import Spread
from tui_batch.core.thought_stats import ThoughtFigures


@dataclass(slots=True)
class FailureGroup:
    reason: str
    count: int
    examples: list[int]  # prompt indexes, the first few
    message: str  # one of the messages, whole


@dataclass(slots=True)
class InvalidGroup:
    """Answers that broke the schema at one place (`$.stars`, or `cut off`)."""

    path: str
    count: int
    examples: list[int]  # prompt indexes, the first few
    message: str  # one of the errors, whole


@dataclass(slots=True)
class EndpointStats:
    endpoint: str
    results: int = 0
    failed: int = 0
    tokens_output: int = 0
    mean_latency: float | None = None
    requests: int = 0
    request_errors: int = 0
    mean_ttft: float | None = None


@dataclass(slots=True)
class JobStats:
    """Every figure of one job; `to_dict` is the `stats --json` document."""

    job_id: str
    model_id: str
    status: str
    total: int
    completed: int = 0
    failed: int = 0
    # Answers with nothing in them (they count as answers: the model said nothing).
    empty: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    # Results whose server sent no usage: their input, or all, tokens are not counted
    # in the totals above (which never count them as 0).
    input_unknown: int = 0
    output_unknown: int = 0
    active_seconds: float = 0.0
    latency: Spread = field(default_factory=Spread)
    queue_wait: Spread = field(default_factory=Spread)
    ttft: Spread = field(default_factory=Spread)
    prompt_tokens_per_second: Spread = field(default_factory=Spread)
    attempts: dict[int, int] = field(default_factory=dict)
    failures: list[FailureGroup] = field(default_factory=list)
    endpoints: list[EndpointStats] = field(default_factory=list)
    bucket_seconds: int = 1
    throughput: list[tuple[int, int, int]] = field(default_factory=list)  # offset s, tok, n
    # Latency of the prompts that succeeded: (bin's lower bound in seconds, count).
    latency_histogram: list[tuple[float, int]] = field(default_factory=list)
    prices: Prices | None = None
    # With a schema: what it is (one line), the valid and invalid answers, the invalid
    # grouped by where they broke it, and for each choice or enum field how many valid
    # answers gave each value (every value the schema allows, in its order, then others).
    schema: str | None = None
    valid: int = 0
    invalid: int = 0
    invalid_groups: list[InvalidGroup] = field(default_factory=list)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    # With expected answers: how they are scored (one line), the results scored and
    # right, the mean score, and for each choice or enum field scored its confusion.
    scoring: str | None = None
    scored: int = 0
    right: int = 0
    mean_score: float | None = None
    confusions: list[Confusion] = field(default_factory=list)
    # A job of repeats: how alike each prompt's runs answered.
    repeats: RepeatFigures | None = None
    # The answer cache: how the job used it, the answers served from it (hits), and
    # the tokens those took when first run (not spent here, so not in the cost).
    cache: str = "off"
    cached: int = 0
    cached_tokens_input: int = 0
    cached_tokens_output: int = 0
    # The job's name (`--name`), if it has one.
    name: str | None = None
    # Which records of its input it took (`slices.InputSlice.describe`; None: all), the
    # shards it was joined from, and whether its input is still being read in.
    input_slice: str | None = None
    merged_from: list[str] | None = None
    reading: bool = False
    # A model that thought: its thoughts' figures (None: no answer came with a thought).
    reasoning: ThoughtFigures | None = None
    # A job through a Batch API: its batches, oldest first.
    batches: list[BatchFile] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.right / self.scored if self.scored else None

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done)

    @property
    def success_rate(self) -> float:
        return 100.0 * self.completed / self.done if self.done else 0.0

    @property
    def tokens_per_second(self) -> float:
        generated = self.tokens_output - self.cached_tokens_output
        return generated / self.active_seconds if self.active_seconds else 0.0

    @property
    def misses(self) -> int | None:
        """Answers a job reading the cache had to run (None: it does not read it)."""
        return self.done - self.cached if self.cache in ("read", "read-write") else None

    def _priced(self, tokens_in: int, tokens_out: int) -> dict[str, float] | None:
        if self.prices is None:
            return None
        cost_in = self.prices.cost(tokens_in, 0)
        cost_out = self.prices.cost(0, tokens_out)
        return {"input": cost_in, "output": cost_out, "total": cost_in + cost_out}

    @property
    def cost(self) -> dict[str, float] | None:
        """What the tokens run for this job cost (not those served from the cache)."""
        return self._priced(
            self.tokens_input - self.cached_tokens_input,
            self.tokens_output - self.cached_tokens_output,
        )

    @property
    def thinking_cost(self) -> float | None:
        """What the output tokens spent thinking cost (None: no prices, or no thought)."""
        if self.prices is None or self.reasoning is None:
            return None
        return self.prices.cost(0, self.reasoning.tokens)

    @property
    def cost_saved(self) -> float | None:
        """What the answers served from the cache would have cost."""
        saved = self._priced(self.cached_tokens_input, self.cached_tokens_output)
        return None if saved is None else saved["total"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attempts"] = {str(k): v for k, v in self.attempts.items()}
        data["throughput"] = [
            {"offset_seconds": t, "tokens_output": n, "results": r} for t, n, r in self.throughput
        ]
        data.update(
            pending=self.pending,
            success_rate=round(self.success_rate, 2),
            tokens_per_second=round(self.tokens_per_second, 3),
            cost=self.cost,
        )
        if self.prices is None:
            del data["prices"], data["cost"]
        else:
            data["prices"] = self.prices.to_dict()  # the discount only where there is one
        for key in ("cache", "cached", "cached_tokens_input", "cached_tokens_output"):
            del data[key]
        data["cache"] = None
        if self.cache != "off" or self.cached:
            data["cache"] = {
                "mode": self.cache,
                "hits": self.cached,
                "misses": self.misses,
                "tokens_saved": self.cached_tokens_input + self.cached_tokens_output,
                "cost_saved": self.cost_saved,
            }
        if self.schema is None:
            for key in ("schema", "valid", "invalid", "invalid_groups", "labels"):
                del data[key]
        del data["batches"]
        if self.batches:
            now = time.time()
            data["batches"] = [
                {**asdict(batch), "waited": batch.waited(now), "ran": batch.ran(now)}
                for batch in self.batches
            ]
        data["repeats"] = self.repeats.to_dict() if self.repeats else None
        data["reasoning"] = self.reasoning.to_dict() if self.reasoning else None
        if self.reasoning is not None and self.prices is not None:
            data["reasoning"]["cost"] = self.thinking_cost
        if self.scoring is None:
            for key in ("scoring", "scored", "right", "mean_score", "confusions"):
                del data[key]
        else:
            interval = wilson(self.right, self.scored)
            data.update(
                accuracy=self.accuracy,
                accuracy_interval=list(interval) if interval else None,
                confusions=[c.to_dict() for c in self.confusions],
            )
        return data
