"""Exports: JSON (detailed), CSV (the guide's columns) and JSONL (OpenAI batch output).

Every export is written to a temporary file beside the target and renamed over it, so a
crash never leaves a half-written file where a finished one was expected. Like the
checkpoints they come from, exports are created readable by their owner only.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from tui_batch.core.errors import ExportError
from tui_batch.core.jobs import BatchJob, BatchResult

EXPORT_FORMATS = ("json", "csv", "jsonl")
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
# A cell starting with one of these runs as a formula in Excel, LibreOffice and Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def format_for_path(path: str | Path, default: str = "json") -> str:
    """The export format a file name implies (`.csv` -> csv), else `default`."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in EXPORT_FORMATS else default


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
) -> Path:
    """Write `results` to `output_file` atomically and return its path."""
    format = format.lower()
    writers: dict[str, Callable[[IO[str]], None]] = {
        "json": lambda out: _write_json(out, job, results),
        "csv": lambda out: _write_csv(out, results, neutralise_formulas),
        "jsonl": lambda out: _write_jsonl(out, job, results),
    }
    if format not in writers:
        raise ExportError(f"Unknown export format {format!r} (use {', '.join(EXPORT_FORMATS)})")
    path = Path(output_file).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"Cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            writers[format](out)
        os.replace(temp_name, path)
    except BaseException as exc:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ExportError(f"Cannot write {path}: {exc.strerror}") from None
        raise
    return path


def _write_json(out: IO[str], job: BatchJob, results: Sequence[BatchResult]) -> None:
    document = {
        "job": job.header(),
        "results": [r.to_dict() for r in results],
        "summary": summary(job, results),
    }
    json.dump(document, out, ensure_ascii=False, indent=2)
    out.write("\n")


def _guard(value: str, neutralise: bool) -> str:
    if neutralise and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _write_csv(out: IO[str], results: Iterable[BatchResult], neutralise: bool) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        writer.writerow(
            (
                r.prompt_index,
                _guard(r.prompt, neutralise),
                _guard(r.response_text, neutralise),
                r.success,
                r.tokens_input,
                r.tokens_output,
                f"{r.duration:.2f}",
                _guard(r.error_message or "", neutralise),
            )
        )


def openai_output_line(job: BatchJob, result: BatchResult) -> dict[str, Any]:
    """One line in the shape of an OpenAI Batch API output file."""
    request_id = f"{job.job_id}-{result.prompt_index}"
    line: dict[str, Any] = {
        "id": f"batch_req_{request_id}",
        "custom_id": result.custom_id or f"request-{result.prompt_index}",
        "response": None,
        "error": None,
    }
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
                    "message": {"role": "assistant", "content": result.response_text},
                    "finish_reason": result.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": result.tokens_input,
                "completion_tokens": result.tokens_output,
                "total_tokens": result.tokens_input + result.tokens_output,
            },
        },
    }
    return line


def _write_jsonl(out: IO[str], job: BatchJob, results: Iterable[BatchResult]) -> None:
    for result in results:
        out.write(json.dumps(openai_output_line(job, result), ensure_ascii=False))
        out.write("\n")
