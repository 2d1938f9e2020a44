"""The leaderboard of a group of jobs (the variants of a matrix, or any jobs over the same
prompts): each variant's figures, ranked, and each against the best on the same prompts.

A variant is right on a prompt when its answer scored right against the expected one;
a group without expected answers ranks by agreement with the majority of the variants
on each prompt (and says so). Each variant is paired with the best on the prompts both
answered: how many it got right where the best did not (improvements) and wrong where
the best was right (regressions), and McNemar's exact test of the two (a p-value;
"not distinguishable" at 5%). The answers are read with one cursor a checkpoint, in
prompt order, side by side: memory holds one prompt's answers at a time.
"""

from __future__ import annotations

import heapq
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import connect_read_only
from tui_batch.core.errors import CheckpointError
from tui_batch.core.job_figures import JobStats
from tui_batch.core.jobs import BatchJob
from tui_batch.core.scoring.figures import wilson
from tui_batch.core.scoring.methods import RIGHT, plain_text
from tui_batch.core.stats import job_stats

# A difference with a p-value at or above this is "not distinguishable".
ALPHA = 0.05
# Above this many discordant pairs the exact test sums its tail in floats (log space).
EXACT_LIMIT = 1000
BY_SCORE = "accuracy against the expected answers"
BY_MAJORITY = "agreement with the majority of the variants (no expected answers)"


def mcnemar_exact(improvements: int, regressions: int) -> float:
    """McNemar's exact two-sided p-value for paired right/wrong outcomes that differ
    `improvements` one way and `regressions` the other (a binomial test at 1/2)."""
    n = improvements + regressions
    if n == 0:
        return 1.0
    low = min(improvements, regressions)
    if n <= EXACT_LIMIT:
        tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    else:
        logs = [
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(low + 1)
        ]
        top = max(logs)
        tail = math.exp(top) * sum(math.exp(value - top) for value in logs)
    return min(1.0, 2 * tail)


@dataclass(slots=True)
class Variant:
    """One job of the group: its figures, and how it fares against the best."""

    job_id: str
    label: str
    stats: JobStats
    right: int = 0  # prompts right (scored right, or agreeing with the majority)
    judged: int = 0  # prompts judged (scored, or answered with a majority to agree with)
    # Against the best variant, on the prompts both were judged on.
    paired: int = 0
    improvements: int = 0
    regressions: int = 0
    p_value: float | None = None

    @property
    def accuracy(self) -> float | None:
        return 100.0 * self.right / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float] | None:
        found = wilson(self.right, self.judged)
        return None if found is None else (100.0 * found[0], 100.0 * found[1])

    @property
    def distinguishable(self) -> bool | None:
        return None if self.p_value is None else self.p_value < ALPHA

    @property
    def valid_share(self) -> float | None:
        """Answers that kept the schema, of those given (None: no schema)."""
        stats = self.stats
        if stats.schema is None or not stats.valid + stats.invalid:
            return None
        return 100.0 * stats.valid / (stats.valid + stats.invalid)

    def to_dict(self) -> dict[str, Any]:
        stats = self.stats
        interval = self.interval
        cost = stats.cost
        return {
            "job_id": self.job_id,
            "variant": self.label,
            "model_id": stats.model_id,
            "status": stats.status,
            "judged": self.judged,
            "right": self.right,
            "accuracy": self.accuracy,
            "accuracy_interval": list(interval) if interval else None,
            "mean_score": stats.mean_score,
            "valid_share": self.valid_share,
            "invalid": stats.invalid,
            "failed": stats.failed - stats.invalid,
            "tokens_input": stats.tokens_input,
            "tokens_output": stats.tokens_output,
            "tokens_per_second": stats.tokens_per_second,
            "latency_p50": stats.latency.p50,
            "latency_p90": stats.latency.p90,
            "cost": cost["total"] if cost else None,
            "against_best": {
                "paired": self.paired,
                "improvements": self.improvements,
                "regressions": self.regressions,
                "p_value": self.p_value,
                "distinguishable": self.distinguishable,
            },
        }


@dataclass(slots=True)
class Leaderboard:
    """The variants of a group, best first, and what they were ranked by."""

    group_id: str
    by: str
    variants: list[Variant] = field(default_factory=list)

    @property
    def best(self) -> Variant | None:
        return self.variants[0] if self.variants else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "ranked_by": self.by,
            "variants": [v.to_dict() for v in self.variants],
        }


def leaderboard(group_id: str, jobs: Sequence[BatchJob]) -> Leaderboard:
    """The leaderboard of `jobs` (a group's): a CheckpointError for a job whose
    checkpoint cannot be read, a ValueError for jobs over different prompts."""
    if not jobs:
        raise ValueError(f"group {group_id} has no jobs")
    totals = {job.total_prompts for job in jobs}
    if len(totals) > 1:
        raise ValueError(
            f"the jobs of group {group_id} run different numbers of prompts "
            f"({', '.join(f'{job.job_id}: {job.total_prompts}' for job in jobs)}): "
            "a leaderboard pairs the same prompts"
        )
    read = {(job.input_sha256, job.input_slice) for job in jobs if job.input_sha256}
    if len(read) > 1:
        raise ValueError(
            f"the jobs of group {group_id} read different inputs: a leaderboard pairs "
            "the answers to the same records (each job's figures: tui-batch stats JOB)"
        )
    scored = all(job.scoring is not None for job in jobs)
    variants = [
        Variant(job.job_id, variant_label(job), job_stats(_path(job), job.prices)) for job in jobs
    ]
    board = Leaderboard(group_id, BY_SCORE if scored else BY_MAJORITY, variants)
    count = len(jobs)
    # beats[i][j]: prompts variant i got right and variant j wrong.
    beats = [[0] * count for _ in range(count)]
    for outcome in _outcomes(jobs, scored):
        judged = [i for i, right in enumerate(outcome) if right is not None]
        for i in judged:
            variants[i].judged += 1
            variants[i].right += bool(outcome[i])
            for j in judged:
                if outcome[i] and not outcome[j]:
                    beats[i][j] += 1
    position = {id(v): i for i, v in enumerate(variants)}
    variants.sort(key=lambda v: (-(v.accuracy or 0.0), -(v.stats.mean_score or 0.0), v.label))
    best = position[id(variants[0])]
    for variant in variants[1:]:
        mine = position[id(variant)]
        variant.improvements, variant.regressions = beats[mine][best], beats[best][mine]
        variant.paired = variant.improvements + variant.regressions
        variant.p_value = mcnemar_exact(variant.improvements, variant.regressions)
    return board


def variant_label(job: BatchJob) -> str:
    """What a variant is called: its values in its matrix, else its name."""
    return job.variant or job.name or f"{job.model_id} ({job.job_id})"


def _path(job: BatchJob) -> Path:
    if job.checkpoint_file is None:
        raise CheckpointError(f"Job {job.job_id} has no checkpoint")
    return Path(job.checkpoint_file)


def _outcomes(jobs: Sequence[BatchJob], scored: bool) -> Iterator[list[bool | None]]:
    """Each prompt's outcome in every variant, in prompt order: right, wrong, or None
    (no result, or not judged)."""
    count = len(jobs)
    for answers in _side_by_side(jobs, scored):
        if scored:
            yield [None if a is None else a >= RIGHT for a in answers]
            continue
        given = [a for a in answers if a is not None]
        majority, times = Counter(given).most_common(1)[0] if given else (None, 0)
        if times * 2 <= count:  # no majority of the variants: nothing to agree with
            yield [None] * count
        else:
            yield [None if a is None else a == majority for a in answers]


def _side_by_side(jobs: Sequence[BatchJob], scored: bool) -> Iterator[list[Any]]:
    """Each prompt's value in every job (its score, or its answer made comparable), one
    prompt at a time, through one cursor a checkpoint."""
    column = "score" if scored else "success, response_text, output"
    try:
        with ExitStack() as stack:
            streams = []
            for position, job in enumerate(jobs):
                connection = stack.enter_context(closing(connect_read_only(_path(job))))
                cursor = connection.execute(
                    f"SELECT prompt_index, {column} FROM results ORDER BY prompt_index"
                )
                streams.append(_keyed(cursor, position, scored))
            current: int | None = None
            row: list[Any] = [None] * len(jobs)
            for index, position, value in heapq.merge(*streams):
                if index != current:
                    if current is not None:
                        yield row
                    current, row = index, [None] * len(jobs)
                row[position] = value
            if current is not None:
                yield row
    except (sqlite3.Error, ValueError, TypeError) as exc:
        raise CheckpointError(f"Unreadable checkpoint: {exc}") from None


def _keyed(cursor: sqlite3.Cursor, position: int, scored: bool) -> Iterator[tuple[int, int, Any]]:
    for row in cursor:
        if scored:
            yield row[0], position, row[1]
        elif row[1]:  # a failed prompt has no answer to agree with
            output = row[3]
            yield (
                row[0],
                position,
                (
                    json.dumps(json.loads(output), sort_keys=True)
                    if output is not None
                    else plain_text(row[2])
                ),
            )


def leaderboard_rows(board: Leaderboard) -> list[tuple[str, ...]]:
    """The leaderboard as a table: a header row, then a row a variant, best first."""
    rows: list[tuple[str, ...]] = [
        (
            "#",
            "VARIANT",
            "RIGHT",
            "95% CI",
            "VALID",
            "INVALID",
            "FAILED",
            "TOKENS",
            "TOK/S",
            "P50",
            "P90",
            "COST",
            "AGAINST THE BEST",
        ),
    ]
    for rank, variant in enumerate(board.variants, start=1):
        stats, interval, cost = variant.stats, variant.interval, variant.stats.cost
        accuracy = variant.accuracy
        rows.append(
            (
                str(rank),
                variant.label,
                "-" if accuracy is None else f"{accuracy:.1f}% of {variant.judged:,}",
                f"{interval[0]:.1f}-{interval[1]:.1f}" if interval else "-",
                "-" if variant.valid_share is None else f"{variant.valid_share:.1f}%",
                f"{stats.invalid:,}",
                f"{stats.failed - stats.invalid:,}",
                f"{stats.tokens_input + stats.tokens_output:,}",
                f"{stats.tokens_per_second:.1f}",
                _seconds(stats.latency.p50),
                _seconds(stats.latency.p90),
                "-" if cost is None else f"${cost['total']:.4f}",
                against_best(variant) if rank > 1 else "best",
            )
        )
    return rows


def against_best(variant: Variant) -> str:
    """How a variant fares against the best on the same prompts, in words."""
    if variant.p_value is None:
        return "-"
    verdict = "differs" if variant.distinguishable else "not distinguishable"
    return (
        f"{variant.improvements:,} better, {variant.regressions:,} worse; "
        f"p={variant.p_value:.3g}, {verdict}"
    )


def accuracy_bars(board: Leaderboard, width: int = 40) -> list[str]:
    """A bar a variant: filled to the lower end of its 95% interval, shaded to its
    accuracy, lighter to the upper end; then the figures."""
    labels = [v.label for v in board.variants]
    room = min(max((len(label) for label in labels), default=0), 32)
    lines = []
    for variant in board.variants:
        accuracy, interval = variant.accuracy, variant.interval
        label = variant.label if len(variant.label) <= room else variant.label[: room - 1] + "…"
        if accuracy is None or interval is None:
            lines.append(f"{label:<{room}}  (nothing judged)")
            continue
        low, mid, high = (
            round(width * value / 100) for value in (interval[0], accuracy, interval[1])
        )
        bar = "█" * low + "▓" * (mid - low) + "░" * (high - mid)
        lines.append(
            f"{label:<{room}}  |{bar:<{width}}| {accuracy:5.1f}%  "
            f"[{interval[0]:.1f}, {interval[1]:.1f}]"
        )
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


CSV_COLUMNS = (
    "rank",
    "variant",
    "job_id",
    "model_id",
    "judged",
    "right",
    "accuracy",
    "ci_low",
    "ci_high",
    "mean_score",
    "valid_share",
    "invalid",
    "failed",
    "tokens_input",
    "tokens_output",
    "tokens_per_second",
    "latency_p50",
    "latency_p90",
    "cost",
    "improvements",
    "regressions",
    "p_value",
    "distinguishable",
)


def leaderboard_records(board: Leaderboard) -> list[list[Any]]:
    """The leaderboard as CSV records, figures as numbers (blank: none): the header,
    then a record a variant, best first."""
    records: list[list[Any]] = [list(CSV_COLUMNS)]
    for rank, variant in enumerate(board.variants, start=1):
        data = variant.to_dict()
        against = data.pop("against_best")
        interval = data.pop("accuracy_interval") or [None, None]
        data.update(rank=rank, ci_low=interval[0], ci_high=interval[1], **against)
        records.append(["" if data[key] is None else data[key] for key in CSV_COLUMNS])
    return records
