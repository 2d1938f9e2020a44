"""A figure over a job's prompts, read from its checkpoint with SQL: how many, the mean,
nearest-rank percentiles and the largest.

Count, mean, least and largest are over every value. The percentiles need the values in
order, and SQLite sorts a million of them in about 1.5 s on disk: above `SAMPLE` values
they are read from an even sample of about that many, chosen by a hash of the prompt's
index (the same sample every time, whatever order the prompts ran in); a sample of
200,000 puts a percentile within about a tenth of a percentile of the whole's, and
`Spread.sampled` says how many it took.
"""

from __future__ import annotations

import math
import sqlite3
from array import array
from dataclasses import dataclass

PERCENTILES = (50, 90, 99)
SUCCEEDED = "success = 1"
SAMPLE = 200_000
# A sample smaller than this (a hash that fell badly) is not used: all values are ranked.
MIN_SAMPLE = 20_000
# Knuth's multiplicative hash of the index, over 2**32: spread evenly whatever the
# input's period (a template over 97 topics, say), which taking every Nth would not be.
_HASH = "((prompt_index * 2654435761) % 4294967296)"


@dataclass(slots=True)
class Spread:
    """A figure over prompts: how many, mean, nearest-rank percentiles and max (None
    when there is no value); `sampled`: how many values the percentiles were read from
    when not all of them (None: all)."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    min: float | None = None
    sampled: int | None = None


def spread(connection: sqlite3.Connection, value: str, where: str = "1") -> Spread:
    """The figure `value` (SQL over a result) over the succeeded results where
    `where` holds."""
    condition = f"{SUCCEEDED} AND ({value}) IS NOT NULL AND {where}"
    count, mean, smallest, largest = connection.execute(
        f"SELECT COUNT(*), AVG({value}), MIN({value}), MAX({value}) FROM results WHERE {condition}"
    ).fetchone()
    if not count:
        return Spread()
    figure = Spread(count=count, mean=mean, max=largest, min=smallest)
    if count > SAMPLE:
        # The hash is as likely below a bound for any row: about SAMPLE of count below
        # this one. The sample's values in order (8 bytes each), the ranks read off.
        below = math.ceil(SAMPLE / count * 2**32)
        ordered = array(
            "d",
            (
                v
                for (v,) in connection.execute(
                    f"SELECT {value} FROM results WHERE {condition} AND {_HASH} < {below} "
                    "ORDER BY 1"
                )
            ),
        )
        if len(ordered) >= MIN_SAMPLE:
            for p in PERCENTILES:
                setattr(figure, f"p{p}", ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1])
            figure.sampled = len(ordered)
            return figure
    ranks = {p: max(1, math.ceil(p / 100 * count)) for p in PERCENTILES}
    at = dict(
        connection.execute(
            f"SELECT rn, v FROM (SELECT {value} AS v, ROW_NUMBER() OVER (ORDER BY {value}) AS rn "
            f"FROM results WHERE {condition}) WHERE rn IN ({','.join('?' * len(ranks))})",
            tuple(ranks.values()),
        )
    )
    for p, rank in ranks.items():
        setattr(figure, f"p{p}", at[rank])
    return figure
