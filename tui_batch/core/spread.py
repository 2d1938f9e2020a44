"""A figure over a job's prompts, read from its checkpoint with SQL: how many, the mean,
nearest-rank percentiles and the largest."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

PERCENTILES = (50, 90, 99)
SUCCEEDED = "success = 1"


@dataclass(slots=True)
class Spread:
    """A figure over prompts: how many, mean, nearest-rank percentiles and max (None
    when there is no value)."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


def spread(connection: sqlite3.Connection, value: str, where: str = "1") -> Spread:
    """The figure `value` (SQL over a result) over the succeeded results where
    `where` holds."""
    condition = f"{SUCCEEDED} AND ({value}) IS NOT NULL AND {where}"
    count, mean, largest = connection.execute(
        f"SELECT COUNT(*), AVG({value}), MAX({value}) FROM results WHERE {condition}"
    ).fetchone()
    if not count:
        return Spread()
    ranks = {p: max(1, math.ceil(p / 100 * count)) for p in PERCENTILES}
    found = dict(
        connection.execute(
            f"SELECT rn, v FROM (SELECT {value} AS v, ROW_NUMBER() OVER (ORDER BY {value}) AS rn "
            f"FROM results WHERE {condition}) WHERE rn IN ({','.join('?' * len(ranks))})",
            tuple(ranks.values()),
        )
    )
    values = {f"p{p}": found[rank] for p, rank in ranks.items()}
    return Spread(count=count, mean=mean, max=largest, **values)
