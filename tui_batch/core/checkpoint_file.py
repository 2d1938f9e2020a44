"""The checkpoint file itself: its tables and format versions, the connections the
store and its readers open on it, and the rows every writer puts in it (the job record,
prompts and their ids).

`store` makes, appends to and lists checkpoints through these; the readers that work
with SQL (`stored`, stats, compare, the results view) open them through these too, so
there is one definition of the format and of how a file is opened safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchJob, Prompt
from tui_batch.core.rows import PROMPT_CHECK, RESULT_CHECKS, RESULT_COLUMNS

# 2 added the results' endpoint and attempt_log, 3 their time to first token, 4 their
# queue wait and how their tokens were counted, 5 a structured answer's value and
# whether it broke the schema, 6 its score and the expected answer it was scored
# against, 7 the job an answer served from the answer cache came from, 8 a thinking
# model's thought and its tokens, apart from the answer; an older file is
# upgraded in place when a run writes to it, and read as it is.
SCHEMA_VERSION = 8
UPGRADES = {
    1: (
        "ALTER TABLE results ADD COLUMN endpoint TEXT",
        "ALTER TABLE results ADD COLUMN attempt_log TEXT",
    ),
    2: ("ALTER TABLE results ADD COLUMN ttft REAL",),
    3: (
        "ALTER TABLE results ADD COLUMN queue_wait REAL",
        "ALTER TABLE results ADD COLUMN token_counts TEXT",
    ),
    4: (
        "ALTER TABLE results ADD COLUMN output TEXT",
        "ALTER TABLE results ADD COLUMN invalid INTEGER NOT NULL DEFAULT 0",
    ),
    5: (
        "ALTER TABLE results ADD COLUMN score REAL",
        "ALTER TABLE results ADD COLUMN expected TEXT",
    ),
    6: ("ALTER TABLE results ADD COLUMN cached_from TEXT",),
    7: (
        "ALTER TABLE results ADD COLUMN reasoning TEXT",
        "ALTER TABLE results ADD COLUMN reasoning_tokens INTEGER",
    ),
}
# The result columns each older format lacks (read as NULL, or 0 for `invalid`).
_THOUGHT = ("reasoning", "reasoning_tokens")
_SCORED = ("score", "expected", "cached_from", *_THOUGHT)
_STRUCTURED = ("output", "invalid", *_SCORED)
_NEWER = ("queue_wait", "token_counts", *_STRUCTURED)
_MISSING = {
    1: ("endpoint", "attempt_log", "ttft", *_NEWER),
    2: ("ttft", *_NEWER),
    3: _NEWER,
    4: _STRUCTURED,
    5: _SCORED,
    6: ("cached_from", *_THOUGHT),
    7: _THOUGHT,
    SCHEMA_VERSION: (),
}
# Each column's rule (`rows.RESULT_CHECKS`) enforced as the rows are written.
_CONSTRAINTS = ",\n    ".join(
    f"CONSTRAINT {column}_ok CHECK ({rule})" for column, rule in RESULT_CHECKS.items()
)
CHECKPOINT_PREFIX = "batch_"
CHECKPOINT_SUFFIX = ".db"
SCHEMA = f"""
CREATE TABLE job (id INTEGER PRIMARY KEY CHECK (id = 1), header TEXT NOT NULL);
CREATE TABLE prompts (idx INTEGER PRIMARY KEY, data TEXT NOT NULL CHECK ({PROMPT_CHECK}));
CREATE TABLE results (
    prompt_index INTEGER PRIMARY KEY,
    response_text TEXT NOT NULL,
    tokens_input INTEGER NOT NULL,
    tokens_output INTEGER NOT NULL,
    duration REAL NOT NULL,
    success INTEGER NOT NULL,
    error_message TEXT,
    attempts INTEGER NOT NULL,
    finish_reason TEXT,
    started_at TEXT,
    completed_at TEXT,
    endpoint TEXT,
    attempt_log TEXT,
    ttft REAL,
    queue_wait REAL,
    token_counts TEXT,
    output TEXT,
    invalid INTEGER NOT NULL DEFAULT 0,
    score REAL,
    expected TEXT,
    cached_from TEXT,
    reasoning TEXT,
    reasoning_tokens INTEGER,
    {_CONSTRAINTS}
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
INSERT_RESULT = (
    f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; safe beside a writer (WAL readers never block it).

    In a folder this process may not write (a backup, a read-only mount) SQLite cannot
    make the WAL index a reader needs; the file is then opened as immutable, which is
    right there: nobody can be writing it.
    """
    uri = path.resolve().as_uri()
    try:
        connection = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
        connection = sqlite3.connect(
            f"{uri}?immutable=1", uri=True, check_same_thread=False, isolation_level=None
        )
    return connection


@contextmanager
def read_snapshot(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Every read inside sees one state of the file, however a writer moves on."""
    connection.execute("BEGIN")
    try:
        yield connection
    finally:
        connection.execute("COMMIT")


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (a second writer waits its busy timeout at
    the start, never halfway): committed when the block ends, rolled back if it raises.
    The checkpoints and the answer cache write through it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def connect_writable(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def storage_error(action: str, path: Path, exc: BaseException) -> CheckpointError:
    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return CheckpointError(f"Cannot {action} {path}: {cause}")


class DuplicateId(CheckpointError):
    """Two prompts of a job with one id: the `index` being added and the `first`."""

    def __init__(self, custom_id: str, first: int, index: int) -> None:
        super().__init__(f"duplicate id {custom_id!r:.60} (prompts {first} and {index})")
        self.custom_id, self.first, self.index = custom_id, first, index


_IDS = "CREATE TABLE IF NOT EXISTS ids (custom_id TEXT PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID"


def insert_prompts(
    connection: sqlite3.Connection, start: int, prompts: Sequence[Prompt], check_ids: bool
) -> None:
    """Insert `prompts` from index `start`; with `check_ids`, their ids too (a table of
    them, so a duplicate is found at any size without holding every id in memory)."""
    connection.executemany(
        "INSERT INTO prompts (idx, data) VALUES (?, ?)",
        ((start + i, json.dumps(p.to_dict(), ensure_ascii=False)) for i, p in enumerate(prompts)),
    )
    if not check_ids:
        return
    connection.execute(_IDS)
    for offset, prompt in enumerate(prompts):
        if prompt.custom_id is None or prompt.repeat not in (None, 0):
            continue
        try:
            connection.execute(
                "INSERT INTO ids (custom_id, idx) VALUES (?, ?)", (prompt.custom_id, start + offset)
            )
        except sqlite3.IntegrityError:
            (first,) = connection.execute(
                "SELECT idx FROM ids WHERE custom_id = ?", (prompt.custom_id,)
            ).fetchone()
            raise DuplicateId(prompt.custom_id, first, start + offset) from None


def header_json(job: BatchJob) -> str:
    return json.dumps(job.header(), ensure_ascii=False)


def result_columns(connection: sqlite3.Connection, prefix: str = "") -> str:
    """The SELECT list for RESULT_COLUMNS; an older file lacks the newer ones."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    old = _MISSING.get(version, ())
    return ", ".join("NULL" if c in old else f"{prefix}{c}" for c in RESULT_COLUMNS)


def read_header(connection: sqlite3.Connection, schema: str = "main") -> Any:
    """The job record of the checkpoint open as `schema` (an attached one, say), as
    JSON; a CheckpointError for a file that is not one of ours."""
    (version,) = connection.execute(f"PRAGMA {schema}.user_version").fetchone()
    if version not in _MISSING:
        raise CheckpointError(f"not a tui-batch checkpoint (format version {version})")
    row = connection.execute(f"SELECT header FROM {schema}.job WHERE id = 1").fetchone()
    if row is None:
        raise CheckpointError("checkpoint has no job record")
    if not isinstance(row[0], str):
        raise CheckpointError("the job record is not text")
    return json.loads(row[0])
