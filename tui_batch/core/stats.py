"""The figures of a job, computed with SQL over its checkpoint (never by loading every
result into Python), so they cost the same while a job runs as after, at any size.

Latency, time to first token and tokens/s per prompt are over the prompts that
succeeded, as nearest-rank percentiles (the value at rank ceil(p/100 * n); of an even
sample above 200,000 values, `spread`). The job's
tokens/s is over its active time: from the first start to the last finish, less the gaps
when nothing ran for more than a second (between a stop and a resume: the stamps are
whole seconds). Failures are grouped by their message with
numbers and ids taken out (`normalise_error`), so "Prompt is 2300 tokens" and "Prompt is
2410 tokens" are one group; HTTP status codes are kept.
"""

from __future__ import annotations

import math
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import connect_read_only, read_header, read_snapshot
from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.rows import check_rows, present_columns
from tui_batch.core.scoring.figures import Confusion, RepeatFigures, wilson
from tui_batch.core.scoring.job_scores import (
    confusions,
    label_text,
    repeat_figures,
    score_totals,
)
from tui_batch.core.settings import Prices
from tui_batch.core.spread import SUCCEEDED, Spread, spread
from tui_batch.core.structured.check import error_path
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.thought_stats import ThoughtFigures, thought_figures

# A failure group lists this many example prompts.
EXAMPLES = 3
# The throughput chart has at most this many buckets; the latency histogram this many bins.
BUCKETS = 60
HISTOGRAM_BINS = 12
# A finished job of this many results is read on two connections at once.
PARALLEL_ROWS = 200_000

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I)
_ID = re.compile(r"\b(?:req|chatcmpl|batch|call|run|msg)[-_][A-Za-z0-9_-]+")
_NUMBER = re.compile(r"(?<!HTTP )(?<![\w.])\d+(?:\.\d+)*")
_SPACES = re.compile(r"\s+")


def normalise_error(message: str | None) -> str:
    """A failure's message with what differs between prompts taken out: ids, hashes and
    numbers become `<id>` and `N` (an HTTP status code is kept); one line, at most 200
    characters."""
    text = _SPACES.sub(" ", message or "(no message)").strip()
    text = _UUID.sub("<id>", text)
    text = _ID.sub("<id>", text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("N", text)
    return text[:200]


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
        cost_in = tokens_in / 1e6 * self.prices.input
        cost_out = tokens_out / 1e6 * self.prices.output
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
        return self.reasoning.tokens / 1e6 * self.prices.output

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


def job_stats(path: str | Path, prices: Prices | None = None) -> JobStats:
    """The figures of the job in checkpoint `path`, read in one snapshot; a damaged
    file is a CheckpointError naming it. The cost is from `prices`, else the job's."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        with ExitStack() as stack:
            connection = stack.enter_context(closing(connect_read_only(path)))
            stack.enter_context(read_snapshot(connection))
            connection.create_function("normalise", 1, normalise_error, deterministic=True)
            connection.create_function("error_path", 1, error_path, deterministic=True)
            header = read_header(connection)
            job = BatchJob.from_header(header, [])
            check_rows(connection)
            # A large job that nothing writes to any more is read on two connections at
            # once (two cores: half the time); one still running on one, in one snapshot.
            helper = None
            if job.status is not JobStatus.RUNNING and _rows(connection) >= PARALLEL_ROWS:
                helper = stack.enter_context(closing(connect_read_only(path)))
                stack.enter_context(read_snapshot(helper))
            header_total = header.get("total_prompts")
            stats = JobStats(
                job.job_id,
                job.model_id,
                job.status.value,
                header_total if isinstance(header_total, int) else 0,
                prices=prices or job.prices,
                cache=job.cache,
                name=job.name,
                input_slice=job.input_slice.describe() if job.input_slice else None,
                merged_from=job.merged_from,
                reading=job.reading is not None,
            )
            _fill(connection, stats, job.settings.schema, helper)
            if job.scoring is not None:
                stats.scoring = job.scoring.describe()
                totals = score_totals(connection)
                if totals is not None:
                    stats.scored, stats.right, stats.mean_score = totals
                    stats.confusions = confusions(connection, job.scoring, job.settings.schema)
            if job.repeats > 1:
                stats.repeats = repeat_figures(connection, job)
    except (sqlite3.Error, ValueError, TypeError, CheckpointError) as exc:
        raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
    return stats


def _rows(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def _fill(
    connection: sqlite3.Connection,
    stats: JobStats,
    schema: AnswerSchema | None,
    helper: sqlite3.Connection | None = None,
) -> None:
    """`stats`' figures, read on `connection` and, where given, on `helper` (a second
    connection on the same unchanging file) at the same time."""
    columns = present_columns(connection)
    # Where a server sent no usage: input unknown; output too, unless counted as it streamed.
    input_known, output_known = "1", "1"
    if "token_counts" in columns:
        input_known = "token_counts IS NULL"
        output_known = "(token_counts IS NULL OR token_counts != 'unknown')"
    # Each pass over ten million rows costs seconds: this one also says which of the
    # others have anything to find (a local job has no servers, waits or first tokens).
    present = {
        name: f"COUNT({name})" if name in columns else "0"
        for name in ("token_counts", "cached_from", "ttft", "queue_wait", "endpoint", "reasoning")
    }
    row = connection.execute(
        # trim() only where the answer starts with a space or less (a blank one can).
        "SELECT COUNT(*), TOTAL(success), "
        "TOTAL(CASE WHEN response_text < '!' THEN success = 1 AND trim(response_text) = '' END), "
        "TOTAL(tokens_input), TOTAL(tokens_output), "
        "MIN(attempts), MAX(attempts), MIN(started_at), MAX(completed_at), "
        f"{', '.join(present.values())} FROM results"
    ).fetchone()
    count, succeeded, empty, tokens_in, tokens_out, fewest, most, first, last = row[:9]
    found = dict(zip(present, row[9:], strict=True))
    input_unknown = output_unknown = 0
    if found["token_counts"]:  # some results' tokens were not the server's count
        tokens_in, tokens_out, input_unknown, output_unknown = connection.execute(
            f"SELECT TOTAL(CASE WHEN {input_known} THEN tokens_input END), "
            f"TOTAL(CASE WHEN {output_known} THEN tokens_output END), "
            f"TOTAL(NOT {input_known}), TOTAL(NOT {output_known}) FROM results"
        ).fetchone()
    stats.completed, stats.failed, stats.empty = int(succeeded), count - int(succeeded), int(empty)
    stats.tokens_input, stats.tokens_output = int(tokens_in), int(tokens_out)
    stats.input_unknown, stats.output_unknown = int(input_unknown), int(output_unknown)
    # An answer served from the cache took no time here: not a latency.
    run_here = "1"
    if "cached_from" in columns:
        run_here = "cached_from IS NULL"
    if found["cached_from"]:
        cached = connection.execute(
            "SELECT COUNT(*), TOTAL(tokens_input), TOTAL(tokens_output) FROM results "
            "WHERE cached_from IS NOT NULL"
        ).fetchone()
        stats.cached, stats.cached_tokens_input, stats.cached_tokens_output = map(int, cached)

    def on_the_side(other: sqlite3.Connection) -> None:
        stats.prompt_tokens_per_second = spread(
            other,
            "tokens_output / duration",
            f"duration > 0 AND tokens_output > 0 AND {output_known}",
        )
        stats.active_seconds, stats.bucket_seconds, stats.throughput = _timing(other, first, last)

    with ThreadPoolExecutor(1) as pool:
        side = pool.submit(on_the_side, helper) if helper is not None else None
        stats.latency = spread(connection, "duration", run_here)
        if found["ttft"]:
            stats.ttft = spread(connection, "ttft")
        if found["queue_wait"]:
            stats.queue_wait = spread(connection, "queue_wait")
        _fill_rest(connection, stats, schema, columns, count, (fewest, most), found)
        if side is None:
            on_the_side(connection)
        else:
            side.result()


def _fill_rest(
    connection: sqlite3.Connection,
    stats: JobStats,
    schema: AnswerSchema | None,
    columns: set[str],
    count: int,
    attempts: tuple[Any, Any],
    found: dict[str, int],
) -> None:
    """The figures that read little: attempts, failures, thoughts, schema, servers,
    the latency histogram."""
    fewest, most = attempts
    if fewest == most:  # every result in as many attempts (or none)
        stats.attempts = {fewest: count} if count else {}
    else:
        stats.attempts = dict(
            connection.execute(
                "SELECT attempts, COUNT(*) FROM results GROUP BY attempts ORDER BY 1"
            )
        )
    stats.failures = _failures(connection, columns) if stats.failed else []
    stats.reasoning = thought_figures(connection, columns) if found["reasoning"] else None
    if schema is not None:
        _fill_structured(connection, stats, schema, columns)
    stats.endpoints = _endpoints(connection) if found["endpoint"] else []
    stats.latency_histogram = _histogram(connection, stats.latency)


def _fill_structured(
    connection: sqlite3.Connection, stats: JobStats, schema: AnswerSchema, columns: set[str]
) -> None:
    """The figures of a job with a schema: valid and invalid answers, the invalid by
    where they broke it, and each label field's values."""
    stats.schema = schema.describe()
    if "invalid" not in columns:
        return
    stats.valid, stats.invalid = (
        int(n)
        for n in connection.execute("SELECT TOTAL(success), TOTAL(invalid) FROM results").fetchone()
    )
    groups = {
        path: InvalidGroup(path, count, [], message)
        for path, count, message in connection.execute(
            "SELECT error_path(error_message) AS p, COUNT(*), MIN(error_message) FROM results "
            "WHERE invalid = 1 GROUP BY p ORDER BY 2 DESC, 1"
        )
    }
    for path, index in connection.execute(
        "SELECT p, prompt_index FROM (SELECT error_path(error_message) AS p, prompt_index, "
        "ROW_NUMBER() OVER (PARTITION BY error_path(error_message) ORDER BY prompt_index) "
        f"AS rn FROM results WHERE invalid = 1) WHERE rn <= {EXAMPLES} ORDER BY prompt_index"
    ):
        groups[path].examples.append(index)
    stats.invalid_groups = list(groups.values())
    for name, values in schema.label_fields().items():
        if '"' in name:
            continue
        path = "$" if schema.choices else f'$."{name}"'
        found = dict(
            connection.execute(
                "SELECT json_extract(output, ?) AS v, COUNT(*) FROM results "
                "WHERE success = 1 AND output IS NOT NULL GROUP BY v",
                (path,),
            )
        )
        counts = {label_text(value): found.pop(value, 0) for value in values}
        for value, count in sorted(found.items(), key=lambda item: -item[1]):
            counts[label_text(value)] = counts.get(label_text(value), 0) + count
        stats.labels[name] = counts


def _histogram(connection: sqlite3.Connection, spread: Spread) -> list[tuple[float, int]]:
    """Latency in HISTOGRAM_BINS equal bins from the fastest to the slowest."""
    if not spread.count or spread.max is None or spread.min is None:
        return []
    low = spread.min
    if spread.max <= low:  # every prompt took the same time: one bar
        return [(low, spread.count)]
    width = (spread.max - low) / HISTOGRAM_BINS
    counts = dict(
        connection.execute(
            f"SELECT MIN(CAST((duration - ?) / ? AS INTEGER), {HISTOGRAM_BINS - 1}) AS b, "
            f"COUNT(*) FROM results WHERE {SUCCEEDED} GROUP BY b",
            (low, width),
        )
    )
    return [(low + b * width, counts.get(b, 0)) for b in range(HISTOGRAM_BINS)]


def _failures(connection: sqlite3.Connection, columns: set[str]) -> list[FailureGroup]:
    """Failures with an error, grouped (answers that broke a schema are grouped apart)."""
    failed = "success = 0 AND invalid = 0" if "invalid" in columns else "success = 0"
    groups = [
        FailureGroup(reason, count, [], message)
        for reason, count, message in connection.execute(
            "SELECT normalise(error_message) AS reason, COUNT(*), MIN(error_message) "
            f"FROM results WHERE {failed} GROUP BY reason ORDER BY 2 DESC, 1"
        )
    ]
    by_reason = {group.reason: group for group in groups}
    for reason, index in connection.execute(
        "SELECT reason, prompt_index FROM (SELECT normalise(error_message) AS reason, "
        "prompt_index, ROW_NUMBER() OVER (PARTITION BY normalise(error_message) "
        f"ORDER BY prompt_index) AS rn FROM results WHERE {failed}) WHERE rn <= {EXAMPLES} "
        "ORDER BY prompt_index"
    ):
        by_reason[reason].examples.append(index)
    for group in groups:
        group.message = group.message or "(no message)"
    return groups


def _endpoints(connection: sqlite3.Connection) -> list[EndpointStats]:
    found: dict[str, EndpointStats] = {}
    for endpoint, results, succeeded, tokens, latency in connection.execute(
        "SELECT endpoint, COUNT(*), TOTAL(success), TOTAL(tokens_output), "
        f"AVG(CASE WHEN {SUCCEEDED} THEN duration END) FROM results "
        "WHERE endpoint IS NOT NULL GROUP BY endpoint ORDER BY endpoint"
    ):
        found[endpoint] = EndpointStats(
            endpoint, results, results - int(succeeded), int(tokens), latency
        )
    for endpoint, requests, errors, ttft in connection.execute(
        "SELECT json_extract(a.value, '$.endpoint') AS ep, COUNT(*), "
        # A request called back by a pause is no error of its server, nor is an answer
        # that broke the job's schema (a local model's are kept in the log too).
        "TOTAL(json_extract(a.value, '$.error') IS NOT NULL "
        "AND json_extract(a.value, '$.error') NOT LIKE 'cancelled:%' "
        "AND json_extract(a.value, '$.error') NOT LIKE 'invalid:%'), "
        "AVG(json_extract(a.value, '$.ttft')) "
        "FROM results, json_each(results.attempt_log) AS a "
        "WHERE results.attempt_log IS NOT NULL AND json_valid(results.attempt_log) "
        "AND results.endpoint IS NOT NULL "
        "GROUP BY ep ORDER BY ep"
    ):
        if not isinstance(endpoint, str):
            continue
        entry = found.setdefault(endpoint, EndpointStats(endpoint))
        entry.requests, entry.request_errors, entry.mean_ttft = requests, int(errors), ttft
    return list(found.values())


def _timing(
    connection: sqlite3.Connection, first_start: Any, last_finish: Any
) -> tuple[float, int, list[tuple[int, int, int]]]:
    """The job's active seconds (from the first start to the last finish, less the
    gaps of more than a second when nothing ran), and the tokens generated and results finished per bucket of
    time from the first start (its width, the buckets). Timestamps are whole seconds in
    one ISO form, so they order as text: one sort over the results' distinct (start,
    finish) pairs, read in start order, instead of one a figure."""
    seconds: dict[str, int | None] = {}
    first, last = _second(first_start, seconds), _second(last_finish, seconds)
    width = 1
    if first is not None and last is not None:
        width = max(1, math.ceil((last - first + 1) / BUCKETS))
    buckets: dict[int, list[float]] = {}
    active, span = 0, None  # seconds of the runs of overlapping spans before `span`
    for started, completed, tokens, count in connection.execute(
        "SELECT started_at, completed_at, TOTAL(tokens_output), COUNT(*) FROM results "
        "WHERE completed_at IS NOT NULL GROUP BY started_at, completed_at"
    ):
        start, end = _second(started, seconds), _second(completed, seconds)
        if end is None:
            continue
        if start is not None:
            # Stamps are whole seconds: a start a second after an end is no pause.
            if span is not None and start <= span[1] + 1:
                span = (span[0], max(span[1], end))
            else:
                active += 0 if span is None else span[1] - span[0]
                span = (start, max(end, start))
        if first is not None:
            bucket = buckets.setdefault((end - first) // width, [0.0, 0])
            bucket[0] += tokens
            bucket[1] += count
    if span is not None:
        active += span[1] - span[0]
    throughput = [(b * width, int(tokens), int(n)) for b, (tokens, n) in sorted(buckets.items())]
    # A run shorter than a second still took some time.
    return (0.0 if span is None else max(1.0, float(active))), width, throughput


def _second(stamp: Any, seen: dict[str, int | None]) -> int | None:
    """An ISO timestamp as Unix seconds (none for anything else), as SQLite's
    unixepoch() reads it: a time without a zone is UTC."""
    if not isinstance(stamp, str):
        return None
    if stamp not in seen:
        if len(seen) > 4096:
            seen.clear()
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            seen[stamp] = None
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seen[stamp] = math.floor(moment.timestamp())
    return seen[stamp]
