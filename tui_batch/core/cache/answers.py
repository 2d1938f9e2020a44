"""The answer cache: one SQLite file of answers keyed by `key.KeyMaker`, shared by every
job that turns it on (and, through `TUI_BATCH_CACHE`, by several people).

SQLite in WAL mode, as the checkpoints: every write is one transaction, so a `kill -9`
at any instant leaves the file readable, and jobs writing it at once wait their turn
(`busy_timeout`). What is read back is checked like a checkpoint's rows: an entry of the
wrong types is never served. Only `CacheError` leaves this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tui_batch.core.cache.figures import CacheFigures, ModelShare
from tui_batch.core.checkpoint_file import write_transaction
from tui_batch.core.errors import CacheError
from tui_batch.core.jobs import JOB_ID_PATTERN, TOKEN_COUNTS
from tui_batch.core.json_values import parse_json
from tui_batch.core.paths import data_dir, ensure_private_dir

# The file's own format (PRAGMA user_version); a newer one is refused, not guessed at.
# 2 added a thinking model's thought and its tokens; a file of 1 is upgraded on open.
FILE_FORMAT = 2
_UPGRADES = {
    1: (
        "ALTER TABLE answers ADD COLUMN reasoning TEXT",
        "ALTER TABLE answers ADD COLUMN reasoning_tokens INTEGER",
    )
}
# What marks the file as ours in its header (PRAGMA application_id, "tuib"), even when
# the rest of it is damaged: `cache clear` removes a damaged file only when it says so.
APPLICATION_ID = 0x74756962
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = f"""
CREATE TABLE answers (
    key BLOB PRIMARY KEY,
    model TEXT NOT NULL,
    job_id TEXT NOT NULL,
    response_text TEXT NOT NULL,
    output TEXT,
    finish_reason TEXT,
    tokens_input INTEGER NOT NULL,
    tokens_output INTEGER NOT NULL,
    token_counts TEXT,
    duration REAL NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    reasoning TEXT,
    reasoning_tokens INTEGER
) WITHOUT ROWID;
CREATE TABLE model_files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
PRAGMA user_version = {FILE_FORMAT};
PRAGMA application_id = {APPLICATION_ID};
"""
_COLUMNS = (
    "key, job_id, response_text, output, finish_reason, tokens_input, tokens_output, "
    "token_counts, duration, reasoning, reasoning_tokens"
)
# Keys looked up per query (SQLite allows 32,766 parameters; fewer keeps each query small).
_CHUNK = 500
_HASH_BLOCK = 1 << 20
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer as the cache keeps it: what the model said, its value under the job's
    schema, why it stopped, its tokens and time, and the job whose run gave it."""

    response_text: str
    output: Any
    finish_reason: str | None
    tokens_input: int
    tokens_output: int
    token_counts: str | None
    duration: float
    job_id: str
    reasoning: str | None = None
    reasoning_tokens: int | None = None


def file_size(path: Path) -> int:
    """The cache's bytes on disk: the file and its write-ahead log (0 when missing)."""
    total = 0
    for extra in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{extra}").st_size
    return total


class AnswerCache:
    """One open connection to the cache file at `path` (made if missing). A file that
    is not a cache, or is damaged, is a CacheError naming it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            if not self.path.exists():
                # In the data dir: owner-only, like the checkpoints (answers hold the
                # prompts' data). A file named elsewhere ($TUI_BATCH_CACHE) is there to
                # be shared: its folder and the umask say with whom.
                private = self.path.parent.resolve() == data_dir().resolve()
                if private:
                    ensure_private_dir(self.path.parent)
                else:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                mode = 0o600 if private else 0o666
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, mode))
            problem = _header_problem(self.path)
            if problem is not None:
                raise CacheError(f"{self.path} is not a tui-batch answer cache ({problem})")
            self._connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot open", exc) from None
        try:
            connection = self._connection
            connection.execute("PRAGMA busy_timeout=10000")
            version = self._version()
            if version == 0:
                self._create()
            elif version != FILE_FORMAT:
                self._upgrade(version)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("SELECT key FROM answers LIMIT 1").fetchall()
            if connection.execute("PRAGMA application_id").fetchone()[0] == 0:
                # A cache made before the mark: marked now (a read-only one stays as it is).
                with contextlib.suppress(sqlite3.Error):
                    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except CacheError:
            self._connection.close()
            raise
        except sqlite3.Error as exc:
            self._connection.close()
            raise self._error("cannot read", exc) from None

    def _version(self) -> int:
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        if version > FILE_FORMAT:
            raise CacheError(
                f"Answer cache {self.path} was made by a newer tui-batch (format {version}); "
                "it is not used"
            )
        return version

    def _create(self) -> None:
        """Make the tables of a new file, once: two jobs starting at once take turns,
        and the second finds them made. Anything else in the file is not ours."""
        connection = self._connection
        # Another job makes the tables and the format number in one transaction: they
        # are seen together, or neither is.
        if connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            raise CacheError(f"{self.path} is not a tui-batch answer cache; it is not used")
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode=WAL")
        with write_transaction(connection):
            if self._version() == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)

    def _upgrade(self, version: int) -> None:
        """Bring a file of an older format up to this one, in one transaction (two jobs
        at once: the second finds it done)."""
        with write_transaction(self._connection) as connection:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            for step in range(version, FILE_FORMAT):
                for statement in _UPGRADES[step]:
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {FILE_FORMAT}")

    def _error(self, action: str, exc: BaseException) -> CacheError:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return CacheError(f"Answer cache {self.path}: {action} it ({cause})")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Answers ---------------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, CachedAnswer]:
        """The cached answers of these keys (a damaged entry is left out: a miss), and
        marks them used now."""
        found: dict[bytes, CachedAnswer] = {}
        keys = sorted(keys)  # neighbours on the same pages
        try:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                rows = self._connection.execute(
                    f"SELECT {_COLUMNS} FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for row in rows:
                    answer = _answer(row)
                    if answer is not None:
                        found[row[0]] = answer
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from None
        if found:
            # When each was last used, for `prune`: a nicety, so a file busy past the
            # timeout (another job writing a shared one) still serves.
            with contextlib.suppress(CacheError):
                self._write(lambda c: self._touch(c, sorted(found)))
        return found

    @staticmethod
    def _touch(connection: sqlite3.Connection, keys: list[bytes]) -> None:
        """Mark answers used now. In key order, each page is written once (100,000
        answers in 0.2 s; in a job's order, 1.2 s); `used` has no index for the same
        reason: `prune` reads the whole table instead, 10 ms a 100,000 answers."""
        now = time.time()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            connection.execute(
                "UPDATE answers SET used = ?, hits = hits + 1 "
                f"WHERE key IN ({','.join('?' * len(chunk))})",
                (now, *chunk),
            )

    def put_many(self, entries: Iterable[tuple[bytes, str, CachedAnswer]]) -> None:
        """Store answers, each `(key, model label, answer)`, in one transaction."""
        now = time.time()
        rows = [
            (
                key,
                model,
                a.job_id,
                a.response_text,
                None if a.output is None else json.dumps(a.output, ensure_ascii=False),
                a.finish_reason,
                a.tokens_input,
                a.tokens_output,
                a.token_counts,
                a.duration,
                now,
                now,
                a.reasoning,
                a.reasoning_tokens,
            )
            for key, model, a in entries
        ]
        if rows:
            self._write(
                lambda c: c.executemany(
                    "INSERT OR REPLACE INTO answers (key, model, job_id, response_text, output, "
                    "finish_reason, tokens_input, tokens_output, token_counts, duration, "
                    "created, used, reasoning, reasoning_tokens) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            )

    def _write(self, change: Callable[[sqlite3.Connection], _T]) -> _T:
        """`change` as one transaction; what it returns."""
        try:
            with write_transaction(self._connection) as connection:
                return change(connection)
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise self._error("cannot write", exc) from None

    # Models ----------------------------------------------------------------------------

    def file_digest(self, path: Path) -> str:
        """The SHA-256 of a model file's content, computed once per file and remembered
        by its path, size and modification time."""
        try:
            info = os.stat(path)
            resolved = str(Path(path).resolve())
        except OSError as exc:
            raise CacheError(f"Cannot read model {path}: {exc.strerror or exc}") from None
        try:
            row = self._connection.execute(
                "SELECT sha256 FROM model_files WHERE path = ? AND size = ? AND mtime_ns = ?",
                (resolved, info.st_size, info.st_mtime_ns),
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from None
        if row is not None and isinstance(row[0], str):
            return row[0]
        digest = hash_file(Path(path))
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO model_files VALUES (?, ?, ?, ?)",
                (resolved, info.st_size, info.st_mtime_ns, digest),
            )
        )
        return digest

    # Upkeep ----------------------------------------------------------------------------

    def figures(self) -> CacheFigures:
        try:
            total = self._connection.execute(
                "SELECT count(*), coalesce(sum(hits), 0), "
                "coalesce(sum(hits * (tokens_input + tokens_output)), 0), "
                "min(created), max(created), max(used) FROM answers"
            ).fetchone()
            models = tuple(
                ModelShare(*row)
                for row in self._connection.execute(
                    "SELECT model, count(*), sum(hits), sum(hits * (tokens_input + "
                    "tokens_output)) FROM answers GROUP BY model ORDER BY count(*) DESC"
                )
            )
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from None
        return CacheFigures(str(self.path), file_size(self.path), *total, models=models)

    def delete(self, model: str | None = None) -> int:
        """Delete every answer (or one model's); how many went."""
        where, values = ("WHERE model = ?", (model,)) if model is not None else ("", ())
        return self._write(lambda c: c.execute(f"DELETE FROM answers {where}", values).rowcount)

    def delete_unused_since(self, stamp: float) -> int:
        """Delete the answers last used (or stored) before `stamp`; how many went."""
        return self._write(
            lambda c: c.execute("DELETE FROM answers WHERE used < ?", (stamp,)).rowcount
        )

    def delete_least_used(self, count: int) -> int:
        """Delete the `count` answers used longest ago; how many went."""
        return self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM answers WHERE key IN (SELECT key FROM answers ORDER BY used LIMIT ?)",
                    (count,),
                ).rowcount
            )
        )

    def count(self) -> int:
        try:
            return self._connection.execute("SELECT count(*) FROM answers").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from None

    def compact(self) -> None:
        """Give the space of deleted answers back to the disk (waits for other jobs)."""
        try:
            self._connection.execute("VACUUM")
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise self._error("cannot compact", exc) from None


def _sqlite_header(path: Path) -> tuple[int, int] | None:
    """An SQLite file's format number and application id (PRAGMA user_version and
    application_id), from its first 100 bytes; None for anything else. OSError for a
    file that cannot be read."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise IsADirectoryError(f"not a regular file: {path}")
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return None
    return int.from_bytes(header[60:64], "big"), int.from_bytes(header[68:72], "big")


def _header_problem(path: Path) -> str | None:
    """Why the file at `path` is surely not an answer cache, from its first 100 bytes
    alone (None: it may be one): so a checkpoint or a file of other bytes is never opened
    as a database, let alone changed."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return "not a regular file"
    if os.stat(path).st_size == 0:
        return None  # new: made here, or by another job a moment ago
    found = _sqlite_header(path)
    if found is None:
        return "not an SQLite file"
    version, mark = found
    if mark == APPLICATION_ID or (mark == 0 and version in (0, FILE_FORMAT)):
        return None  # ours, or one being made, or one made before the mark
    return "another program's SQLite file, or a job's checkpoint"


def damaged_cache(path: Path) -> bool:
    """Whether `path` is a tui-batch answer cache that cannot be used as one: its header
    says it is ours (an SQLite file with our application id, of a format this version
    makes), and SQLite cannot read it whole. Anything else (another program's database,
    a checkpoint, a folder, a newer cache, a cache that was only busy) is not."""
    try:
        found = _sqlite_header(path)
    except OSError:
        return False
    if found is None or found[1] != APPLICATION_ID or found[0] > FILE_FORMAT:
        return False
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as connection:
            connection.execute("PRAGMA busy_timeout=2000")
            (state,) = connection.execute("PRAGMA quick_check(1)").fetchone()
            connection.execute("SELECT key FROM answers LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        return "locked" not in str(exc) and "busy" not in str(exc)
    except sqlite3.Error:
        return True
    return state != "ok"


def hash_file(path: Path) -> str:
    """The SHA-256 of a file's content, read a megabyte at a time."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(_HASH_BLOCK), b""):
                digest.update(block)
    except OSError as exc:
        raise CacheError(f"Cannot read model {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _answer(row: Sequence[Any]) -> CachedAnswer | None:
    """An entry as stored, if its values have the types they must (else None: a miss)."""
    _, job_id, text, output, finish, tokens_in, tokens_out, counts, duration, thought, thought_n = (
        row
    )
    if not (
        isinstance(text, str)
        and isinstance(job_id, str)
        and JOB_ID_PATTERN.fullmatch(job_id)
        and (finish is None or isinstance(finish, str))
        and type(tokens_in) is int
        and type(tokens_out) is int
        and tokens_in >= 0
        and tokens_out >= 0
        and (counts is None or counts in TOKEN_COUNTS)
        and isinstance(duration, (int, float))
        and 0 <= duration <= 1e12
        and (thought is None or isinstance(thought, str))
        and (thought_n is None or (type(thought_n) is int and thought_n >= 0))
    ):
        return None
    if output is not None:
        try:
            output = parse_json(output)
        except (TypeError, ValueError, RecursionError):  # JSONDecodeError, JsonValueError
            return None
    return CachedAnswer(
        text,
        output,
        finish,
        tokens_in,
        tokens_out,
        counts,
        float(duration),
        job_id,
        thought,
        thought_n,
    )
