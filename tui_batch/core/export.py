"""Exports: JSON (detailed), CSV (one row per result) and JSONL (OpenAI batch output).

Every export is written to a scratch file beside the target and renamed over it, so a
crash never leaves a half-written file where a finished one was expected (and the next
export there removes the scratch file a killed one left). Like the checkpoints they come
from, exports are created readable by their owner only. An export never replaces what
is not a regular file (a device, a FIFO, a folder), nor a file it must not destroy: the
prompts it came from, or a checkpoint (`check_output_path`).
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from tui_batch.core.errors import ExportError
from tui_batch.core.jobs import Attempt, BatchJob, BatchResult
from tui_batch.core.scratch import check_folder_writable, write_atomically
from tui_batch.core.structured.schema import value_at

EXPORT_FORMATS = ("json", "csv", "jsonl")
# `export` also writes a job's figures (`tui-batch stats --json`) as a file.
STATS_FORMAT = "stats-json"
CSV_COLUMNS = (
    "index",
    "prompt",
    "response",
    "success",
    "tokens_in",
    "tokens_out",
    "duration",
    "error",
)
# A template job's record fields are exported as columns named with this prefix.
VARIABLE_PREFIX = "var_"
# A cell starting with one of these runs as a formula in Excel, LibreOffice or Sheets
# (OWASP's list: = + - @, tab and carriage return), or with their full-width forms,
# which some spreadsheets fold to them. Leading spaces and control characters are
# skipped by some spreadsheets before they look, so they are skipped here too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_SKIPPED_BEFORE_FORMULA = "".join(chr(c) for c in range(0x20)) + " \u00a0\u3000"


def format_for_path(path: str | Path, default: str = "json") -> str:
    """The export format a file name implies (`.csv` -> csv); `default` for a name
    without an extension; an ExportError for one that names another format (`.xlsx`
    would otherwise hold JSON)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix or suffix in EXPORT_FORMATS:
        return suffix or default
    known = ", ".join(f".{name}" for name in EXPORT_FORMATS)
    raise ExportError(
        f"Cannot write {Path(path).name!r:.80} as .{suffix[:20]}: results are written as "
        f"{known} (name the file so, or give --format)"
    )


def summary(job: BatchJob, results: Sequence[BatchResult]) -> dict[str, Any]:
    completed = sum(1 for r in results if r.success)
    failed = len(results) - completed
    return {
        "total": job.total_prompts,
        "completed": completed,
        "failed": failed,
        "success_rate": round(100.0 * completed / len(results), 1) if results else 0.0,
    }


def export_results(
    job: BatchJob,
    results: Sequence[BatchResult],
    output_file: str | Path,
    format: str = "json",
    *,
    neutralise_formulas: bool = True,
    protected: Sequence[str | Path] = (),
) -> Path:
    """Write `results` to `output_file` atomically and return its path; never over
    `protected` files or folders (see `check_output_path`)."""
    format = format.lower()
    writers: dict[str, Callable[[IO[str]], None]] = {
        "json": lambda out: _write_json(out, job, results),
        "csv": lambda out: _write_csv(out, job, results, neutralise_formulas, _thoughts(results)),
        "jsonl": lambda out: _write_jsonl(out, job, results),
        STATS_FORMAT: lambda out: _write_stats(out, job),
    }
    if format not in writers:
        raise ExportError(f"Unknown export format {format!r} (use {', '.join(writers)})")
    return write_file(output_file, writers[format], protected)


def write_file(
    output_file: str | Path, write: Callable[[IO[str]], None], protected: Sequence[str | Path] = ()
) -> Path:
    """Write a file through `write` into a scratch file, then rename it into place (an
    ExportError, and nothing left behind, if that fails)."""
    path = check_output_path(output_file, protected)
    try:
        write_atomically(path, write)
    except OSError as exc:
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}") from None
    except UnicodeEncodeError:
        raise ExportError(f"Cannot write {path}: text that is not valid Unicode") from None
    return path


def check_results_folder(output_file: Path) -> None:
    """An ExportError now, before a batch runs, if results cannot be written where
    `output_file` goes."""
    try:
        check_folder_writable(output_file.parent)
    except OSError as exc:
        raise ExportError(f"Cannot write results to {output_file}: {exc.strerror}") from None


def check_output_path(output_file: str | Path, protected: Sequence[str | Path] = ()) -> Path:
    """The output path, if results may be written there; else an ExportError.

    Refused: a path that exists and is not a regular file (a folder, `/dev/null`, a
    FIFO), a path that is one of `protected` (the prompts file, say) or lies in a
    protected folder (the checkpoints), and a SQLite database anywhere (a checkpoint).
    """
    path = Path(output_file).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ExportError(f"Cannot write results to {path}: {exc.strerror}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ExportError(f"Output path is a folder: {path}")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ExportError(f"Output path is not a regular file (a device or a pipe?): {path}")
    resolved = path.resolve()
    for guarded in protected:
        guarded = Path(guarded).resolve()
        if resolved == guarded:
            raise ExportError(f"Output path {path} is a file this run reads: choose another")
        if guarded.is_dir() and guarded in resolved.parents:
            raise ExportError(f"Output path {path} is inside {guarded}: choose another")
        if info is not None and guarded.exists() and os.path.samefile(resolved, guarded):
            raise ExportError(f"Output path {path} is the same file as {guarded}: choose another")
    if info is not None and _is_database(path):
        raise ExportError(f"Output path is a database (a checkpoint?): {path}; choose another")
    return path


def _is_database(path: Path) -> bool:
    """A SQLite file, a checkpoint or another: results never replace one."""
    try:
        with open(path, "rb") as stream:
            return stream.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _thoughts(results: Sequence[BatchResult]) -> bool:
    """Whether any result holds a thought (asked of the checkpoint where it is one)."""
    known = getattr(results, "has_reasoning", None)
    return known if known is not None else any(r.reasoning is not None for r in results)


def variable_names(job: BatchJob) -> list[str]:
    """The fields of a template job's records, in the order first seen (empty for a
    job from a prompts file), but the id column: it is the `id` column already."""
    names: dict[str, None] = {}
    stored = getattr(job.prompts, "variable_names", None)  # one SQL pass, not a read of all
    if stored is not None:
        names.update(dict.fromkeys(stored()))
    for prompt in () if stored is not None else job.prompts:
        if prompt.variables:
            names.update(dict.fromkeys(prompt.variables))
    if job.template is not None and job.template.id_field is not None:
        names.pop(job.template.id_field, None)
    return list(names)


def _counts(result: BatchResult) -> tuple[int | None, int | None]:
    """A result's input and output tokens; None where nobody counted them (never 0)."""
    return (
        result.tokens_input if result.input_known else None,
        result.tokens_output if result.output_known else None,
    )


def _variable_cells(job: BatchJob, result: BatchResult, names: list[str]) -> dict[str, Any]:
    """`var_<name>` -> the record's value (None where a record lacks the field)."""
    variables = job.prompts[result.prompt_index].variables or {}
    return {f"{VARIABLE_PREFIX}{name}": variables.get(name) for name in names}


_RESULT_FIELDS = tuple(f.name for f in fields(BatchResult))
_ATTEMPT_FIELDS = tuple(f.name for f in fields(Attempt))


def _result_dict(result: BatchResult) -> dict[str, Any]:
    """`result.to_dict()`, without its deep copy of every value (which was half the
    time of writing 100,000 results): the row is only written out."""
    row = {name: getattr(result, name) for name in _RESULT_FIELDS}
    row["attempt_log"] = [
        {name: getattr(attempt, name) for name in _ATTEMPT_FIELDS} for attempt in result.attempt_log
    ]
    return row


def _write_json(out: IO[str], job: BatchJob, results: Sequence[BatchResult]) -> None:
    """`{"job": ..., "results": [...], "summary": ...}`, indented, a result a line
    (each written by the C encoder, which `indent` would turn off: 100,000 results in
    a second or two, not ten)."""
    names = variable_names(job)
    out.write('{\n  "job": ')
    out.write(json.dumps(job.header(), ensure_ascii=False, indent=2).replace("\n", "\n  "))
    out.write(',\n  "results": [')
    for number, result in enumerate(results):
        row = _result_dict(result)
        row["tokens_input"], row["tokens_output"] = _counts(result)
        if job.repeats > 1:
            row["repeat"] = _repeat(job, result)
        if names or job.template is not None:
            # The record's id and fields next to the response, to join back to the data.
            row = {
                "id": job.custom_id(result.prompt_index),
                **{k: row.pop(k) for k in ("prompt_index", "prompt", "response_text")},
                **_variable_cells(job, result, names),
                **row,
            }
        out.write(",\n    " if number else "\n    ")
        out.write(json.dumps(row, ensure_ascii=False))
    out.write("\n  ]" if results else "]")
    out.write(',\n  "summary": ')
    out.write(json.dumps(summary(job, results), ensure_ascii=False, indent=2).replace("\n", "\n  "))
    out.write("\n}\n")


def _cell(value: Any) -> str:
    """A record's value in a CSV cell: text as it is, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _guard(value: str, neutralise: bool) -> str:
    if neutralise and value.lstrip(_SKIPPED_BEFORE_FORMULA).startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def guard_cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return _guard(value, True)


def _write_stats(out: IO[str], job: BatchJob) -> None:
    from tui_batch.core.stats import job_stats

    if not job.checkpoint_file:
        raise ExportError(f"Job {job.job_id} has no checkpoint to compute its figures from")
    json.dump(job_stats(job.checkpoint_file).to_dict(), out, ensure_ascii=False, indent=2)
    out.write("\n")


def answer_columns(job: BatchJob, taken: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """A job with a schema: its answers' columns (`AnswerSchema.columns`), each named
    `output.NAME` where NAME is a column already (`taken`)."""
    schema = job.settings.schema
    if schema is None:
        return []
    return [(f"output.{name}" if name in taken else name, path) for name, path in schema.columns()]


def _write_csv(
    out: IO[str],
    job: BatchJob,
    results: Iterable[BatchResult],
    neutralise: bool,
    thoughts: bool = False,
) -> None:
    """A row per result in CSV_COLUMNS; a template job's adds the record's `id` after
    `index` and its fields (`var_<name>`) after `response`; a job with a schema adds
    `invalid` and a column for each field of its answers (`answer_columns`) at the end;
    a job whose model thought (`thoughts`) adds `reasoning` and `reasoning_tokens`."""
    writer = csv.writer(out, lineterminator="\r\n")
    names = variable_names(job)
    template = bool(names) or job.template is not None
    columns = list(CSV_COLUMNS)
    if template:
        columns[1:1] = ["id"]
        columns[4:4] = [f"{VARIABLE_PREFIX}{name}" for name in names]
    structured = job.settings.schema is not None
    fields = answer_columns(job, [*columns, "invalid", *SCORE_COLUMNS, "repeat", "cached_from"])
    if structured:
        columns += ["invalid", *(name for name, _ in fields)]
    scored, repeated = job.scoring is not None, job.repeats > 1
    if scored:
        columns += SCORE_COLUMNS
    if repeated:
        columns.append("repeat")
    cached = job.cache != "off"  # the job an answer served from the cache came from
    if cached:
        columns.append("cached_from")
    if thoughts:
        columns += THOUGHT_COLUMNS
    # A schema's field names are the user's (or a shared job file's): guarded as cells are.
    writer.writerow([_guard(name, neutralise) for name in columns])
    for r in results:
        record: list[Any] = []
        if template:
            record.append(_guard(job.custom_id(r.prompt_index), neutralise))
        values = [_cell(v) for v in _variable_cells(job, r, names).values()] if template else []
        writer.writerow(
            (
                r.prompt_index,
                *record,
                _guard(r.prompt, neutralise),
                _guard(r.response_text, neutralise),
                *(_guard(v, neutralise) for v in values),
                r.success,
                *("" if n is None else n for n in _counts(r)),
                f"{r.duration:.2f}",
                _guard(r.error_message or "", neutralise),
                *((r.invalid,) if structured else ()),
                *(_guard(_cell(value_at(r.output, path)), neutralise) for _, path in fields),
                *(_score_cells(r, neutralise) if scored else ()),
                *((_repeat(job, r),) if repeated else ()),
                *((r.cached_from or "",) if cached else ()),
                *(_thought_cells(r, neutralise) if thoughts else ()),
            )
        )


# A thinking model's columns: its thought, and the tokens the thought took (blank: none).
THOUGHT_COLUMNS = ["reasoning", "reasoning_tokens"]


def _thought_cells(result: BatchResult, neutralise: bool) -> tuple[Any, ...]:
    tokens = result.reasoning_tokens
    return (_guard(result.reasoning or "", neutralise), "" if tokens is None else tokens)


# A scored job's columns: the expected answer, the score in [0, 1], right or not (blank:
# unscored).
SCORE_COLUMNS = ["expected", "score", "right"]


def _score_cells(result: BatchResult, neutralise: bool) -> tuple[Any, ...]:
    right = result.right
    return (
        _guard(_cell(result.expected), neutralise),
        "" if result.score is None else f"{result.score:g}",
        "" if right is None else right,
    )


def _repeat(job: BatchJob, result: BatchResult) -> int | None:
    """Which run of its prompt a result is, in a job of repeats."""
    return job.prompts[result.prompt_index].repeat


def openai_output_line(job: BatchJob, result: BatchResult) -> dict[str, Any]:
    """One line in the shape of an OpenAI Batch API output file."""
    request_id = f"{job.job_id}-{result.prompt_index}"
    line: dict[str, Any] = {
        "id": f"batch_req_{request_id}",
        "custom_id": result.custom_id or f"request-{result.prompt_index}",
        "response": None,
        "error": None,
    }
    if job.repeats > 1:
        line["repeat"] = _repeat(job, result)
    if result.cached_from is not None:
        line["cached_from"] = result.cached_from
    if not result.success:
        line["error"] = {"code": "generation_failed", "message": result.error_message or ""}
        return line
    line["response"] = {
        "status_code": 200,
        "request_id": request_id,
        "body": {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "model": job.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": _message(result),
                    "finish_reason": result.finish_reason or "stop",
                }
            ],
            "usage": _usage(result),
        },
    }
    return line


def _message(result: BatchResult) -> dict[str, Any]:
    """The answer as the API's message: its thought in `reasoning_content`, as
    llama-server, DeepSeek and LiteLLM send it."""
    message: dict[str, Any] = {"role": "assistant", "content": result.response_text}
    if result.reasoning is not None:
        message["reasoning_content"] = result.reasoning
    return message


def _usage(result: BatchResult) -> dict[str, Any]:
    tokens_in, tokens_out = _counts(result)
    total = None if tokens_in is None or tokens_out is None else tokens_in + tokens_out
    usage: dict[str, Any] = {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": total,
    }
    if result.reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": result.reasoning_tokens}
    return usage


def _write_jsonl(out: IO[str], job: BatchJob, results: Iterable[BatchResult]) -> None:
    for result in results:
        out.write(json.dumps(openai_output_line(job, result), ensure_ascii=False))
        out.write("\n")
