"""The records of a data file that fills a prompt template, read one at a time.

CSV (a header row; UTF-8 with or without a BOM; quoted fields may hold newlines), JSONL
(an object a line), a JSON array of objects, Parquet (when pyarrow is installed), or a
finished job's results (`job:ID`, see `job_records`).
Records are streamed: memory holds one record (or one Parquet batch), never the file.
Each comes with its number, 1-based, which is what messages about it say.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX
from tui_batch.core.errors import DataFileError, TuiBatchError, reading
from tui_batch.core.json_values import JsonValueError, clean_value, parse_json, raw_decode
from tui_batch.core.templates.job_records import JOB_PREFIX, job_data_file, job_records

DATA_FORMATS = (".csv", ".jsonl", ".json", ".parquet")
# A JSON array is read this many characters at a time.
_CHUNK = 1 << 16
# A CSV cell may be as long as the file (a long prompt or document); the csv module's
# default is 128 KiB. Set once here for prompts files (`csv_rows`) and data files alike.
csv.field_size_limit(2**31 - 1)

Record = dict[str, Any]


def data_format(path: Path) -> str:
    if str(path).startswith(JOB_PREFIX) or _is_checkpoint(path):
        return "job"
    suffix = path.suffix.lower()
    if suffix not in DATA_FORMATS:
        raise DataFileError(
            f"{path}: unknown data format {suffix or '(no extension)'!r}; "
            f"use {', '.join(DATA_FORMATS)}, or job:ID for a job's results"
        )
    return suffix


def data_file(path: str | Path) -> Path:
    """The file a data setting names: `job:ID` is that job's checkpoint."""
    return job_data_file(path) or Path(path)


def _is_checkpoint(path: Path) -> bool:
    return path.name.startswith(CHECKPOINT_PREFIX) and path.suffix == CHECKPOINT_SUFFIX


def iter_records(path: str | Path) -> Iterator[tuple[int, Record]]:
    """Each record of the data file at `path` with its number (1-based), in order; a
    DataFileError, naming the file and where, for anything malformed."""
    path = data_file(path)
    readers = {
        ".csv": _csv,
        ".jsonl": _jsonl,
        ".json": _json_array,
        ".parquet": _parquet,
        "job": job_records,
    }
    reader = readers[data_format(path)]
    with reading(path, "data file", DataFileError):
        try:
            yield from reader(path)
        except UnicodeDecodeError as exc:
            raise DataFileError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None


def _csv(path: Path) -> Iterator[tuple[int, Record]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFileError(f"{path}: empty, expected a header row") from None
        except csv.Error as exc:
            raise DataFileError(f"{path}, line 1: {exc}") from None
        names = [name.strip() for name in header]
        _check_header(path, names)
        number = 0
        try:
            for line, row in csv_rows(reader):
                number += 1
                if len(row) != len(names):
                    raise DataFileError(
                        f"{path}, line {line} (record {number}): {len(row)} fields, "
                        f"the header has {len(names)}"
                    )
                yield number, dict(zip(names, row, strict=True))
        except CsvRowError as exc:
            raise DataFileError(f"{path}, line {exc.line}: {exc.message}") from None


class CsvRowError(Exception):
    """A malformed CSV row, at the line it starts on (for callers to word)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def csv_rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """A csv reader's rows from where it stands, blank lines left out, each with the line
    it starts on (a quoted field may span lines); a csv.Error as a CsvRowError."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvRowError(start, str(exc)) from None
        if row:
            yield start, row


def _check_header(path: Path, names: list[str]) -> None:
    seen: set[str] = set()
    for column, name in enumerate(names, start=1):
        if not name:
            raise DataFileError(f"{path}, line 1: column {column} has no name")
        if name in seen:
            raise DataFileError(f"{path}, line 1: column {name!r} appears twice")
        seen.add(name)


def _jsonl(path: Path) -> Iterator[tuple[int, Record]]:
    with path.open(encoding="utf-8-sig") as handle:
        number = 0
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            number += 1
            try:
                value = parse_json(line)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}, line {line_number}: not JSON ({exc.msg})") from None
            except (JsonValueError, RecursionError) as exc:
                raise DataFileError(
                    f"{path}, line {line_number}: {_json_value_problem(exc)}"
                ) from None
            yield number, _record(path, f"line {line_number}", value)


def _json_array(path: Path) -> Iterator[tuple[int, Record]]:
    for number, value in iter_json_array(path):
        yield number, _record(path, f"record {number}", value)


def iter_json_array(
    path: Path,
    error: type[TuiBatchError] = DataFileError,
    decode: Callable[[str, int], tuple[Any, int]] = raw_decode,
    word: str = "record",
    expected: str = "a JSON array of objects",
    located: bool = False,
) -> Iterator[tuple[int, Any]]:
    """The items of the JSON array in `path`, numbered from 1, decoded one at a time from
    a sliding buffer (memory holds an item, never the file); `error` names the item, or
    (`located`) the line and column where the JSON went wrong."""
    lines_before = 0  # line breaks in the text already dropped from the buffer
    with path.open(encoding="utf-8-sig") as handle:
        buffer, position, number = handle.read(_CHUNK), 0, 0
        at_end = len(buffer) < _CHUNK

        def skip(chars: str) -> None:
            nonlocal buffer, position, at_end, lines_before
            while True:
                while position < len(buffer) and buffer[position] in chars:
                    position += 1
                if position < len(buffer) or at_end:
                    return
                lines_before += buffer.count("\n")
                buffer, position = handle.read(_CHUNK), 0
                at_end = len(buffer) < _CHUNK

        skip(" \t\r\n")
        if buffer[position : position + 1] != "[":
            got = _KINDS.get(buffer[position : position + 1], "a number")
            raise error(f"{path}: expected {expected}" + (f", got {got}" if located else ""))
        position += 1
        while True:
            skip(" \t\r\n")
            if buffer[position : position + 1] == "]":
                return
            if number:
                if buffer[position : position + 1] != ",":
                    raise error(f"{path}: after {word} {number}, expected ',' or ']'")
                position += 1
                skip(" \t\r\n")
            while True:
                try:
                    value, end = decode(buffer, position)
                    break
                except (JsonValueError, RecursionError) as exc:
                    where = f", {word} {number + 1}"
                    if located:
                        where = f":{lines_before + buffer.count(chr(10), 0, position) + 1}"
                    raise error(f"{path}{where}: {_json_value_problem(exc)}") from None
                except json.JSONDecodeError as exc:
                    if at_end:
                        if located:
                            line = lines_before + buffer.count("\n", 0, exc.pos) + 1
                            column = exc.pos - buffer.rfind("\n", 0, exc.pos)
                            raise error(
                                f"{path}:{line}:{column}: invalid JSON: {exc.msg}"
                            ) from None
                        raise error(f"{path}, {word} {number + 1}: not JSON ({exc.msg})") from None
                    more = handle.read(_CHUNK)
                    at_end = len(more) < _CHUNK
                    lines_before += buffer.count("\n", 0, position)
                    buffer, position = buffer[position:] + more, 0
                except ValueError as exc:  # a number too long to convert, say
                    if located:
                        line = lines_before + buffer.count("\n", 0, position) + 1
                        raise error(f"{path}:{line}: invalid JSON: {exc}") from None
                    raise error(f"{path}, {word} {number + 1}: not JSON ({exc})") from None
            number += 1
            position = end
            yield number, value
            if position > _CHUNK:
                lines_before += buffer.count("\n", 0, position)
                buffer, position = buffer[position:], 0


_KINDS = {"{": "dict", '"': "str", "t": "bool", "f": "bool", "n": "NoneType", "": "nothing"}


def _parquet(path: Path) -> Iterator[tuple[int, Record]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataFileError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
        ) from None
    try:
        table = parquet.ParquetFile(path)
        number = 0
        for batch in table.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: not a readable Parquet file ({exc})") from None


def _record(path: Path, where: str, value: Any) -> Record:
    if not isinstance(value, dict):
        raise DataFileError(f"{path}, {where}: expected an object, got {type(value).__name__}")
    try:
        return clean_value(value)
    except JsonValueError as exc:
        raise DataFileError(f"{path}, {where}: {exc}") from None


def _json_value_problem(exc: Exception) -> str:
    return "JSON nested too deeply" if isinstance(exc, RecursionError) else f"not JSON ({exc})"
