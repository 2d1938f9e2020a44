"""What a run would do, without doing it (`tui-batch run --dry-run`): how many prompts
(the whole input read, a chunk at a time, nothing kept), how many the answer cache would
serve, their input tokens (counted with the model's tokenizer where there is one, else
estimated and said so), their output tokens (at most max tokens each, and the mean of a
sample of real answers), what that costs at the job's prices, and how long it takes,
timed on that sample. The sample runs as a job of its own in a scratch folder that is
removed after: no checkpoint, result or cache entry is left."""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tui_batch.core.backend import Backend
from tui_batch.core.cache.job_cache import JobCache
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchJob
from tui_batch.core.progress import format_duration
from tui_batch.core.prompt import Prompt
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.servers import paid
from tui_batch.core.settings import Prices

# Bytes a token, for servers' input when nobody here can count it (English-like text).
BYTES_A_TOKEN = 4
# Prompts a dry run answers for real to time the job, unless told otherwise.
DEFAULT_SAMPLE = 8
# Input tokens a chat's framing adds, where they are estimated.
FRAMING_TOKENS = 12


@dataclass(slots=True)
class DryRun:
    """The figures of a run not made."""

    prompts: int = 0
    records: int = 0
    cached: int = 0
    input_tokens: int = 0  # of the prompts to run (not those the cache serves)
    input_counted: bool = True  # by the model's tokenizer; else estimated
    max_tokens: int | None = None  # each answer's ceiling (None: none set)
    sampled: int = 0
    sample_seconds: float = 0.0
    sample_output: float | None = None  # the sample's mean output tokens
    prices: Prices | None = None
    untimed: str = "--dry-run-sample 0"  # why no time is given, where none is

    @property
    def to_run(self) -> int:
        return self.prompts - self.cached

    @property
    def output_ceiling(self) -> int | None:
        return None if self.max_tokens is None else self.max_tokens * self.to_run

    @property
    def output_expected(self) -> float | None:
        """Output tokens expected: the sample's mean each, else the ceiling."""
        if self.sample_output is not None:
            return self.sample_output * self.to_run
        return self.output_ceiling

    @property
    def seconds(self) -> float | None:
        if not self.sampled or self.sample_seconds <= 0:
            return None
        return self.sample_seconds / self.sampled * self.to_run

    def lines(self) -> list[str]:
        """The figures as `run --dry-run` prints them."""
        counted = (
            "counted with the model's tokenizer"
            if self.input_counted
            else (f"estimated at {BYTES_A_TOKEN} bytes a token: the servers count their own")
        )
        lines = [
            f"Prompts    {self.prompts:,} (from {self.records:,} records)",
            f"Cache      {self.cached:,} would be served, {self.to_run:,} to run",
            f"Input      {self.input_tokens:,} tokens ({counted})",
        ]
        output = (
            "no max tokens set"
            if self.max_tokens is None
            else (f"at most {self.output_ceiling:,} tokens ({self.max_tokens:,} an answer)")
        )
        if self.sample_output is not None and self.output_expected is not None:
            output += (
                f"; about {math.ceil(self.output_expected):,} at the sample's "
                f"{self.sample_output:.1f} an answer"
            )
        lines.append(f"Output     {output}")
        if self.prices is not None:
            discount = (
                f" (Batch API x{self.prices.discount:g})" if self.prices.discount != 1 else ""
            )
            expected = self.output_expected
            if expected is not None:
                cost = self.prices.cost(self.input_tokens, expected)
                lines.append(f"Cost       about {cost:.4g} at the job's prices{discount}")
            if self.output_ceiling is not None:
                ceiling = self.prices.cost(self.input_tokens, self.output_ceiling)
                lines.append(f"           at most {ceiling:.4g}")
        if self.seconds is not None:
            lines.append(
                f"Time       about {format_duration(self.seconds)} (a sample of "
                f"{self.sampled} prompts took {self.sample_seconds:.1f}s)"
            )
        else:
            lines.append(f"Time       not measured ({self.untimed})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "records": self.records,
            "cached": self.cached,
            "to_run": self.to_run,
            "input_tokens": self.input_tokens,
            "input_counted": self.input_counted,
            "output_ceiling": self.output_ceiling,
            "output_expected": self.output_expected,
            "sampled": self.sampled,
            "seconds": self.seconds,
            "cost": (
                self.prices.cost(self.input_tokens, self.output_expected)
                if self.prices is not None and self.output_expected is not None
                else None
            ),
        }


def dry_run(
    stream: PromptStream,
    first: list[Prompt],
    spec: RunSpec,
    model_id: str,
    backend: Backend,
    count: Callable[[Sequence[Prompt]], list[int]] | None,
    sample: int = DEFAULT_SAMPLE,
    warn: Callable[[str], None] = lambda text: None,
    cancel: threading.Event | None = None,
) -> DryRun:
    """The figures of `spec`'s run over `first` (the chunk read already) and the rest of
    `stream`, on `backend`, its input tokens counted by `count` (None: estimated), timed
    on `sample` of its prompts. `cancel`, once set, stops it (a TuiBatchError) between
    chunks, and the sample's run as a job's."""
    prices = paid(spec.prices, spec.server)
    figures = DryRun(max_tokens=spec.generation.max_tokens, prices=prices)
    figures.input_counted = count is not None
    if spec.server is not None and spec.server.batch_api:
        sample = 0  # a sample's batch would take as long as the job's
        figures.untimed = "a Batch API answers within its window, up to 24 hours"
    probe = BatchJob(job_id="dry-run", model_id=model_id, prompts=[], **spec.job_fields())
    cache = JobCache.open(probe, backend, warn) if spec.options.cache_reads else None
    sampled = first[:sample]
    chunk = first
    try:
        while chunk:
            if cancel is not None and cancel.is_set():
                raise TuiBatchError("Dry run stopped")
            left = list(range(len(chunk)))
            if cache is not None:
                probe.prompts = chunk
                cache.keys.clear()
                served = cache.serve(left)
                figures.cached += len(served)
                left = [i for i in left if i not in served]
            running = [chunk[i] for i in left]
            figures.prompts += len(chunk)
            figures.input_tokens += sum(count(running) if count else map(_estimate, running))
            chunk = stream.chunk() if not stream.done else []
    finally:
        if cache is not None:
            cache.close()
    figures.records = stream.records
    if sampled:
        _time_sample(figures, sampled, spec, model_id, backend, cancel)
        if cancel is not None and cancel.is_set():
            raise TuiBatchError("Dry run stopped")
    return figures


def _estimate(prompt: Prompt) -> int:
    text = prompt.text + (prompt.system or "")
    text += "".join(str(m.get("content", "")) for m in prompt.messages or [])
    return len(text.encode("utf-8")) // BYTES_A_TOKEN + FRAMING_TOKENS


def _time_sample(
    figures: DryRun,
    prompts: list[Prompt],
    spec: RunSpec,
    model_id: str,
    backend: Backend,
    cancel: threading.Event | None,
) -> None:
    """Answer `prompts` for real, as a job in a scratch folder (no cache), and time it."""
    from tui_batch.core.processor import BatchProcessor

    folder = Path(tempfile.mkdtemp(prefix="tui-batch-dry-run-"))
    try:
        processor = BatchProcessor(folder)
        alone = replace(spec, options=replace(spec.options, cache="off", repeats=1))
        job = processor.create_job(model_id, prompts, spec=alone)
        started = time.perf_counter()
        results = processor.process_batch(job, backend, cancel_event=cancel)
        figures.sample_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    answered = [r for r in results if r.success and r.output_known]
    figures.sampled = len(results)
    if answered:
        figures.sample_output = sum(r.tokens_output for r in answered) / len(answered)
