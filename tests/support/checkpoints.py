"""Checkpoints as older versions of tui-batch made them, for tests that damage one."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path

# A table's CHECK constraints as `checkpoint_file.SCHEMA` writes them: a named one on
# each result column, one on a prompt's data.
_NAMED = re.compile(r",\s*CONSTRAINT \w+_ok CHECK \(.*?\)(?=,\s*CONSTRAINT|\s*\)$)", re.S)
_DATA = re.compile(r"(data TEXT NOT NULL) CHECK \(.*\)(?=\))", re.S)


def made_before_checks(path: Path) -> Path:
    """The checkpoint at `path`, its tables made again without their CHECK constraints,
    as a file from before they were there (its rows can then be damaged with SQL)."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        for table, pattern, kept in (("results", _NAMED, ""), ("prompts", _DATA, r"\1")):
            (made,) = connection.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()
            plain = pattern.sub(kept, made)
            assert plain != made and "CHECK" not in plain, plain
            connection.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
            connection.execute(plain)
            connection.execute(f"INSERT INTO {table} SELECT * FROM old_{table}")
            connection.execute(f"DROP TABLE old_{table}")
        connection.commit()
    return path
