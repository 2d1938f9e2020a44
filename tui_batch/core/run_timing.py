"""When a job ran, from its results' start and finish times: its active seconds (the
time its tokens/s is over) and what finished in each span of time (the throughput
chart), both from one sort of the checkpoint's rows."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime, timezone
from typing import Any


def run_timing(
    connection: sqlite3.Connection, first_start: Any, last_finish: Any, buckets: int
) -> tuple[float, int, list[tuple[int, int, int]]]:
    """The job's active seconds (from `first_start` to `last_finish`, less the gaps of
    more than a second when nothing ran), and the tokens generated and results finished
    in each of at most `buckets` spans of time from the first start (their width, the
    spans). Timestamps are whole seconds in one ISO form, so they order as text: one
    sort over the results' distinct (start, finish) pairs, read in start order."""
    seconds: dict[str, int | None] = {}
    first, last = _second(first_start, seconds), _second(last_finish, seconds)
    width = 1
    if first is not None and last is not None:
        width = max(1, math.ceil((last - first + 1) / buckets))
    spans: dict[int, list[float]] = {}
    active, span = 0, None  # the seconds of the runs of work before `span`, the run now
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
            bucket = spans.setdefault((end - first) // width, [0.0, 0])
            bucket[0] += tokens
            bucket[1] += count
    if span is not None:
        active += span[1] - span[0]
    throughput = [(b * width, int(tokens), int(n)) for b, (tokens, n) in sorted(spans.items())]
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
