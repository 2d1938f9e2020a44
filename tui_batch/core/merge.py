"""Joining the shards of one job (`--shard I/N`, run apart, on one machine or many) into
one job that stats, compare, export and the dashboard treat as any other.

The shards are checked first, each refusal one line: they must be shards of one job
(the same input file by its SHA-256, settings, model, template, scoring, slice but the
shard), every shard of it present once and finished. The joined job holds their prompts
in the input's record order (every streamed prompt keeps its record's number) and their
results as they are, renumbered; it is written to a scratch file with SQL (a shard's
rows never pass through Python lists, so memory stays flat at any size) and linked into
place only when whole. The shards are read, never changed.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tui_batch.core.checkpoint_file import (
    CHECKPOINT_SUFFIX,
)
from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchJob, JobStatus, utc_now
from tui_batch.core.paths import is_file
from tui_batch.core.rows import RESULT_COLUMNS, present_columns
from tui_batch.core.slices import InputSlice
from tui_batch.core.store import CheckpointStore
from tui_batch.core.stored import StoredPrompts, result_counts

# What may differ between the shards of one job: what each run of it was, not what it is.
PER_SHARD = frozenset(
    {
        "job_id",
        "status",
        "completed",
        "failed",
        "total_prompts",
        "started_at",
        "completed_at",
        "created_at",
        "updated_at",
        "checkpoint_file",
        "reading",
        "output_file",
        "model_path",
        "server",
        "name",
        "input_slice",
        "merged_from",
    }
)
# Rows copied at a time into the joined job's prompt order.
ORDER_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard's checkpoint: its job (header only), shard I of N, and its results."""

    path: Path
    job: BatchJob
    index: int
    count: int
    results: int

    @property
    def name(self) -> str:
        return f"shard {self.index}/{self.count} (job {self.job.job_id})"


def merge_shards(
    store: CheckpointStore, sources: Sequence[str], job_id: str, name: str | None = None
) -> BatchJob:
    """The job `job_id` joined from the shards `sources` (job ids in `store`, or paths
    of checkpoint files); a CheckpointError of one line where they cannot be joined."""
    shards = sorted((read_shard(store, source) for source in sources), key=lambda s: s.index)
    check_shards(shards)
    first = shards[0].job
    chosen = _unsharded(first)
    job = BatchJob.from_header(
        {
            **first.header(),
            "job_id": job_id,
            "name": name or first.name,
            "status": JobStatus.COMPLETED.value,
            "created_at": utc_now(),
            "updated_at": utc_now(),
            "started_at": min((s.job.started_at for s in shards if s.job.started_at), default=None),
            "completed_at": max(
                (s.job.completed_at for s in shards if s.job.completed_at), default=None
            ),
            "completed": sum(s.job.completed for s in shards),
            "failed": sum(s.job.failed for s in shards),
            "output_file": None,
            "reading": None,
            "input_slice": chosen.to_dict() if chosen is not None and not chosen.whole else None,
            "merged_from": [s.job.job_id for s in shards],
        },
        [],
    )
    job.total_prompts = sum(s.job.total_prompts for s in shards)
    path = store.create(job, fill=lambda connection: _fill(connection, shards))
    job.prompts = StoredPrompts(path, job.total_prompts)
    return job


def read_shard(store: CheckpointStore, source: str) -> Shard:
    """The shard a job id or checkpoint path names, its rows checked."""
    if source.endswith(CHECKPOINT_SUFFIX) and is_file(source):
        job = store.open(Path(source))
    else:
        job = store.open_job(source)
    assert job.checkpoint_file is not None
    path = Path(job.checkpoint_file)
    shard = job.input_slice.shard if job.input_slice is not None else None
    if shard is None:
        raise CheckpointError(
            f"Job {job.job_id} ({path}) is not a shard: only jobs run with --shard I/N are merged"
        )
    return Shard(path, job, shard[0], shard[1], result_counts(path).results)


def check_shards(shards: list[Shard]) -> None:
    """Shards of one job, each present once, all finished; else one line saying why."""
    if len(shards) < 2:
        raise CheckpointError("give the shards of a job to merge: two or more")
    first = shards[0]
    for shard in shards[1:]:
        if shard.count != first.count:
            raise CheckpointError(
                f"{first.name} and {shard.name} are shards of different splits "
                f"({first.count} and {shard.count} shards)"
            )
        differ = _differences(first.job, shard.job)
        if differ:
            raise CheckpointError(
                f"{first.name} and {shard.name} are not shards of one job: they differ in "
                + ", ".join(differ)
            )
    seen: dict[int, Shard] = {}
    for shard in shards:
        if shard.index in seen:
            raise CheckpointError(
                f"shard {shard.index}/{shard.count} is given twice: jobs "
                f"{seen[shard.index].job.job_id} and {shard.job.job_id}"
            )
        seen[shard.index] = shard
    missing = [i for i in range(1, first.count + 1) if i not in seen]
    if missing:
        shown = ", ".join(f"{i}/{first.count}" for i in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        are = "shard {} is" if len(missing) == 1 else "shards {} are"
        raise CheckpointError(f"{are.format(shown + more)} missing: give every shard of the job")
    for shard in shards:
        if shard.job.reading is not None or shard.results < shard.job.total_prompts:
            raise CheckpointError(
                f"{shard.name} is not finished: {shard.results:,} of "
                f"{shard.job.total_prompts:,}{'+' if shard.job.reading else ''} answered; "
                f"resume it first (tui-batch resume {shard.job.job_id})"
            )


def _differences(a: BatchJob, b: BatchJob) -> list[str]:
    """What two jobs' records say differently, but what differs from shard to shard."""
    left, right = a.header(), b.header()
    names = [key for key in sorted(set(left) - PER_SHARD) if left.get(key) != right.get(key)]
    if _unsharded(a) != _unsharded(b):
        names.append("input_slice")
    if (a.server is None) != (b.server is None):
        names.append("server")
    return names


def _unsharded(job: BatchJob) -> InputSlice | None:
    chosen = job.input_slice
    return None if chosen is None else replace(chosen, shard=None, auto=False)


def _fill(connection: sqlite3.Connection, shards: list[Shard]) -> None:
    """The joined job's prompts and results, from the shards attached one by one."""
    for number, shard in enumerate(shards):
        connection.execute(f"ATTACH DATABASE ? AS s{number}", (str(shard.path),))
    try:
        connection.execute("CREATE TEMP TABLE place (shard INTEGER, old INTEGER, new INTEGER)")
        connection.execute("BEGIN")
        order = heapq.merge(*(_records(connection, n, s) for n, s in enumerate(shards)))
        new = 0
        while True:
            rows = []
            for _record, _repeat, shard, old in order:
                rows.append((shard, old, new))
                new += 1
                if len(rows) >= ORDER_CHUNK:
                    break
            if not rows:
                break
            connection.executemany("INSERT INTO place VALUES (?, ?, ?)", rows)
        connection.execute("CREATE INDEX temp.place_at ON place (shard, old)")
        for number in range(len(shards)):
            columns = present_columns(connection, f"s{number}")
            chosen = ", ".join(
                c if c in columns else ("0" if c == "invalid" else "NULL")
                for c in RESULT_COLUMNS[1:]
            )
            connection.execute(
                f"INSERT INTO prompts (idx, data) SELECT place.new, p.data FROM place "
                f"JOIN s{number}.prompts AS p ON p.idx = place.old WHERE place.shard = ?",
                (number,),
            )
            connection.execute(
                f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) "
                f"SELECT place.new, {chosen} FROM place JOIN s{number}.results AS r "
                f"ON r.prompt_index = place.old WHERE place.shard = ?",
                (number,),
            )
        _check_ids(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        for number in range(len(shards)):
            connection.execute(f"DETACH DATABASE s{number}")


def _records(
    connection: sqlite3.Connection, number: int, shard: Shard
) -> Iterator[tuple[int, int, int, int]]:
    """A shard's prompts as (record, repeat, shard, index), in order; each must know its
    record's number (a job read in from a stream does)."""
    cursor = connection.execute(
        f"SELECT idx, json_extract(data, '$.record'), json_extract(data, '$.repeat') "
        f"FROM s{number}.prompts ORDER BY idx"
    )
    for index, record, repeat in cursor:
        if not isinstance(record, int):
            raise CheckpointError(
                f"{shard.name}: its prompts do not say which record they are (a job made "
                "before tui-batch read inputs as streams): run the shards again"
            )
        yield record, repeat or 0, number, index


def _check_ids(connection: sqlite3.Connection) -> None:
    """Ids unique across the shards too (each shard checked only its own)."""
    found = connection.execute(
        "SELECT json_extract(data, '$.custom_id') AS id, MIN(idx), MAX(idx) FROM prompts "
        "WHERE id IS NOT NULL AND COALESCE(json_extract(data, '$.repeat'), 0) = 0 "
        "GROUP BY id HAVING COUNT(*) > 1 LIMIT 1"
    ).fetchone()
    if found is not None:
        raise CheckpointError(
            f"the shards hold one id twice: {str(found[0])!r:.60} (prompts {found[1]} and "
            f"{found[2]} of the joined job); the input has a duplicate id"
        )
