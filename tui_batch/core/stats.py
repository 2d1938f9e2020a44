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

import re
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_batch.core.batch_records import BatchRecords
from tui_batch.core.checkpoint_file import connect_read_only, read_header, read_snapshot
from tui_batch.core.errors import CheckpointError
from tui_batch.core.job_figures import EndpointStats, FailureGroup, InvalidGroup, JobStats
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.rows import check_rows, present_columns
from tui_batch.core.run_timing import run_timing
from tui_batch.core.scoring.job_scores import (
    confusions,
    label_text,
    repeat_figures,
    score_totals,
)
from tui_batch.core.servers import paid
from tui_batch.core.settings import Prices
from tui_batch.core.spread import SUCCEEDED, Spread, spread
from tui_batch.core.stored import request_tallies
from tui_batch.core.structured.check import error_path
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.thought_stats import thought_figures

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
                prices=paid(prices or job.prices, job.server),
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
            stats.batches = BatchRecords(path).files()
    except (sqlite3.Error, ValueError, TypeError, CheckpointError) as exc:
        raise CheckpointError(f"Unreadable checkpoint {path}: {exc}") from None
    return stats


def _rows(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]


@dataclass(slots=True)
class _FirstPass:
    """What the first pass over the results found besides the counts it filled in."""

    first: Any  # the first start and last finish, as stored
    last: Any
    attempts: tuple[Any, Any]  # fewest, most
    present: dict[str, int]  # how many results have each optional column


def _fill(
    connection: sqlite3.Connection,
    stats: JobStats,
    schema: AnswerSchema | None,
    helper: sqlite3.Connection | None = None,
) -> None:
    """`stats`' figures, read on `connection` and, where given, on `helper` (a second
    connection on the same unchanging file) at the same time: a pass over ten million
    rows costs seconds, so there are few, and the timing and the histogram (a sort and a
    grouping) go to the helper while the counts and spreads are read."""
    columns = present_columns(connection)
    # Where a server sent no usage: input unknown; output too, unless counted as it streamed.
    input_known, output_known = "1", "1"
    if "token_counts" in columns:
        input_known = "token_counts IS NULL"
        output_known = "(token_counts IS NULL OR token_counts != 'unknown')"
    # An answer served from the cache took no time here: not a latency.
    run_here = "cached_from IS NULL" if "cached_from" in columns else "1"
    counted: Future[_FirstPass] = Future()
    timed: Future[Spread] = Future()  # the latency: the histogram's range

    def on_the_side(other: sqlite3.Connection) -> None:
        first, last = (
            # On a helper at once, with its own first start and last finish.
            other.execute("SELECT MIN(started_at), MAX(completed_at) FROM results").fetchone()
            if other is helper
            else (counted.result().first, counted.result().last)
        )
        stats.active_seconds, stats.bucket_seconds, stats.throughput = run_timing(
            other, first, last, BUCKETS
        )
        stats.latency_histogram = _histogram(other, timed.result())

    with ThreadPoolExecutor(1) as pool:
        side = pool.submit(on_the_side, helper) if helper is not None else None
        try:
            found = _first_pass(connection, stats, columns, (input_known, output_known))
            counted.set_result(found)
            stats.latency = spread(connection, "duration", run_here)
            timed.set_result(stats.latency)
        except BaseException as exc:  # the helper waits on these: it is told
            for future in (counted, timed):
                if not future.done():
                    future.set_exception(exc)
            raise
        if found.present["ttft"]:
            stats.ttft = spread(connection, "ttft")
        if found.present["queue_wait"]:
            stats.queue_wait = spread(connection, "queue_wait")
        stats.prompt_tokens_per_second = spread(
            connection,
            "tokens_output / duration",
            f"duration > 0 AND tokens_output > 0 AND {output_known}",
        )
        _fill_rest(connection, stats, schema, columns, found)
        if side is None:
            on_the_side(connection)
        else:
            side.result()


def _first_pass(
    connection: sqlite3.Connection, stats: JobStats, columns: set[str], known: tuple[str, str]
) -> _FirstPass:
    """One pass for the counts and tokens, and which of the other passes have anything
    to find (a local job has no servers, waits or first tokens)."""
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
    count, succeeded, empty, tokens_in, tokens_out = row[:5]
    found = _FirstPass(
        first=row[7],
        last=row[8],
        attempts=(row[5], row[6]),
        present=dict(zip(present, row[9:], strict=True)),
    )
    input_unknown = output_unknown = 0
    if found.present["token_counts"]:  # some results' tokens were not the server's count
        input_known, output_known = known
        tokens_in, tokens_out, input_unknown, output_unknown = connection.execute(
            f"SELECT TOTAL(CASE WHEN {input_known} THEN tokens_input END), "
            f"TOTAL(CASE WHEN {output_known} THEN tokens_output END), "
            f"TOTAL(NOT {input_known}), TOTAL(NOT {output_known}) FROM results"
        ).fetchone()
    stats.completed, stats.failed, stats.empty = int(succeeded), count - int(succeeded), int(empty)
    stats.tokens_input, stats.tokens_output = int(tokens_in), int(tokens_out)
    stats.input_unknown, stats.output_unknown = int(input_unknown), int(output_unknown)
    if found.present["cached_from"]:
        cached = connection.execute(
            "SELECT COUNT(*), TOTAL(tokens_input), TOTAL(tokens_output) FROM results "
            "WHERE cached_from IS NOT NULL"
        ).fetchone()
        stats.cached, stats.cached_tokens_input, stats.cached_tokens_output = map(int, cached)
    return found


def _fill_rest(
    connection: sqlite3.Connection,
    stats: JobStats,
    schema: AnswerSchema | None,
    columns: set[str],
    found: _FirstPass,
) -> None:
    """The figures that read little: attempts, failures, thoughts, schema, servers."""
    fewest, most = found.attempts
    if fewest == most:  # every result in as many attempts (or none)
        stats.attempts = {fewest: stats.completed + stats.failed} if fewest is not None else {}
    else:
        stats.attempts = dict(
            connection.execute(
                "SELECT attempts, COUNT(*) FROM results GROUP BY attempts ORDER BY 1"
            )
        )
    stats.failures = _failures(connection, columns) if stats.failed else []
    stats.reasoning = thought_figures(connection, columns) if found.present["reasoning"] else None
    if schema is not None:
        _fill_structured(connection, stats, schema, columns)
    stats.endpoints = _endpoints(connection) if found.present["endpoint"] else []


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
    for endpoint, requests, errors, ttft in request_tallies(connection):
        entry = found.setdefault(endpoint, EndpointStats(endpoint))
        entry.requests, entry.request_errors, entry.mean_ttft = requests, int(errors), ttft
    return list(found.values())
