"""Which prompts of two or more jobs are the same prompt, for `compare`: matched on their
custom ids when every prompt of every job has one, else on their text with the system
prompt, the n-th occurrence of a key in one job with the n-th in another. The result is
the temporary table `matched` (a row per prompt, each job's index), made in SQL over the
attached checkpoints (`j0`, `j1`, ...)."""

from __future__ import annotations

import sqlite3


def match_prompts(connection: sqlite3.Connection, count: int) -> str:
    """Fill the temporary table `matched`: one row per prompt, each job's index, in
    the order the prompts first appear (the first job's, then the others' own). All
    in SQL: 100,000 prompts a job are never rows in Python."""
    jobs = range(count)
    by_id = not any(
        connection.execute(
            f"SELECT 1 FROM j{n}.prompts WHERE json_extract(data, '$.custom_id') IS NULL LIMIT 1"
        ).fetchone()
        for n in jobs
    )
    if by_id:
        key = shown = "CAST(json_extract(data, '$.custom_id') AS TEXT)"
    else:
        shown = "COALESCE(json_extract(data, '$.text'), '')"
        key = f"COALESCE(json_extract(data, '$.system'), '') || char(0) || {shown}"
    columns = ", ".join(f"i{n} INTEGER" for n in jobs)
    connection.execute(f"CREATE TEMP TABLE matched (row INTEGER PRIMARY KEY, key TEXT, {columns})")
    if _aligned(connection, count, key):  # the same prompts in the same order (a job run again)
        connection.execute(
            f"INSERT INTO matched (key, {', '.join(f'i{n}' for n in jobs)}) "
            f"SELECT {shown}, {', '.join('idx' for _ in jobs)} FROM j0.prompts ORDER BY idx"
        )
        return "custom id" if by_id else "prompt text"
    keys = " UNION ALL ".join(
        f"SELECT {n} AS n, idx, {key} AS key, {shown} AS shown FROM j{n}.prompts" for n in jobs
    )
    connection.execute(
        "CREATE TEMP TABLE keyed AS SELECT n, idx, key, shown, "
        f"ROW_NUMBER() OVER (PARTITION BY n, key ORDER BY idx) AS occurrence FROM ({keys})"
    )
    indices = ", ".join(f"MAX(CASE WHEN n = {n} THEN idx END)" for n in jobs)
    connection.execute(
        f"INSERT INTO matched (key, {', '.join(f'i{n}' for n in jobs)}) "
        f"SELECT MIN(shown), {indices} FROM keyed GROUP BY key, occurrence "
        f"ORDER BY MIN(n * {1 << 40} + idx)"
    )
    connection.execute("DROP TABLE keyed")
    return "custom id" if by_id else "prompt text"


def _aligned(connection: sqlite3.Connection, count: int, key: str) -> bool:
    """Whether every job holds the same prompts, by `key`, at the same indices (then
    the n-th occurrence of a key is at the same index in each: matched by index)."""
    counts = {
        connection.execute(f"SELECT COUNT(*), MIN(idx), MAX(idx) FROM j{n}.prompts").fetchone()
        for n in range(count)
    }
    if len(counts) != 1:
        return False
    prompts, low, high = counts.pop()
    if prompts and (low, high) != (0, prompts - 1):
        return False
    first = key.replace("data", "a.data")
    return not any(
        connection.execute(
            f"SELECT 1 FROM j0.prompts a JOIN j{n}.prompts b ON b.idx = a.idx "
            f"WHERE {first} IS NOT {key.replace('data', 'b.data')} LIMIT 1"
        ).fetchone()
        for n in range(1, count)
    )
