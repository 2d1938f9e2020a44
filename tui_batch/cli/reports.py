"""The commands that report on checkpoints: `checkpoints` (the jobs), `export` (one
job's results as a file), `score` (a job's answers scored again), `stats` (a job's
figures) and `compare` (jobs side by side)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from tui_batch.cli.arguments import prices
from tui_batch.cli.terminal import print_table, terminal_width
from tui_batch.core.compare import CompareRow, CompareSummary, Comparison
from tui_batch.core.errors import CheckpointError, SettingsError
from tui_batch.core.export import STATS_FORMAT, format_for_path, guard_cell, write_file
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.scoring.figures import accuracy_text
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.stats import job_stats
from tui_batch.core.stats_text import compare_lines, stats_lines
from tui_batch.core.stored import StoredResults
from tui_batch.core.text import escape_json, one_line


def checkpoint_path(processor: BatchProcessor, job_id: str) -> Path:
    path = processor.store.path_for(job_id)
    if not path.exists():
        raise CheckpointError(f"No checkpoint for job {job_id} in {processor.checkpoint_dir}")
    return path


def command_stats(args: argparse.Namespace) -> int:
    from tui_batch.cli.group_run import group_named, group_stats

    processor = BatchProcessor()
    if group := group_named(processor, args.job_id):
        form = "json" if args.json else "csv" if args.csv else None
        return group_stats(args.job_id, group, form)
    if args.csv:
        raise SettingsError(
            f"--csv is a group's leaderboard; job {args.job_id}'s figures: --json, or "
            f"tui-batch export {args.job_id} --format stats"
        )
    figures = job_stats(checkpoint_path(processor, args.job_id), prices(args))
    if args.json:
        print(escape_json(json.dumps(figures.to_dict(), indent=2, ensure_ascii=False)))
    else:
        print("\n".join(stats_lines(figures)))
    return 0


def command_score(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    checkpoint_path(processor, args.job_id)
    summary = processor.job_summary(args.job_id)
    known = summary.scoring
    expect = args.expect or (known.expect if known else None)
    if expect is None:
        raise SettingsError(
            f"Job {args.job_id} was not scored: name the column of expected answers (--expect)"
        )
    method = args.score or (known.method_text if known and not args.expect else None)
    tolerance = args.tolerance
    if tolerance is None and known and not args.expect and not args.score:
        tolerance = known.tolerance
    done = processor.score_job(args.job_id, Scoring.from_text(expect, method, tolerance))
    if args.json:
        print(escape_json(json.dumps(asdict(done) | {"accuracy": done.accuracy}, indent=2)))
        return 0
    print(f"Scored job {done.job_id}: {one_line(done.scoring.describe())}")
    unscored = f"; {done.unscored:,} unscored" if done.unscored else ""
    print(f"  {accuracy_text(done.right, done.scored)}{unscored}")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    paths = [checkpoint_path(processor, job_id) for job_id in args.job_ids]
    with Comparison(paths) as comparison:
        summary = comparison.summary()
        changed = args.regressions
        rows = comparison.iter_rows(
            args.sort, args.state, args.search, differs=args.field, changed=changed
        )
        if args.json or args.csv:

            def write(out: IO[str]) -> None:
                if args.json:
                    _write_json(out, summary, rows)
                else:
                    _write_csv(out, summary, rows)

            if args.out:
                write_file(args.out, write, protected=[processor.checkpoint_dir])
                print(f"Wrote the comparison to {args.out}", file=sys.stderr)
            elif args.json or sys.stdout.isatty():
                write(_EscapedStream(sys.stdout))
            else:  # CSV into a pipe or a file: the answers exactly as they are
                write(sys.stdout)
            return _regression_status(args, summary)
        shown = comparison.rows(
            args.sort,
            args.state,
            args.search,
            limit=args.limit,
            differs=args.field,
            changed=changed,
        )
        total = comparison.count(args.state, args.search, args.field, changed)
        print("\n".join(compare_lines(summary, shown, total, terminal_width())))
    return _regression_status(args, summary)


def _regression_status(args: argparse.Namespace, summary: CompareSummary) -> int:
    """1 with --fail-on-regression when a later job is wrong where the first was right."""
    if not args.fail_on_regression:
        return 0
    if not any(side.scoring for side in summary.jobs):
        raise SettingsError(
            "--fail-on-regression: the jobs have no scores (run them with --expect COLUMN, "
            "or tui-batch score JOB --expect COLUMN)"
        )
    if summary.regressions:
        print(
            f"tui-batch: {summary.regressions:,} regressions: right in "
            f"{summary.jobs[0].job_id}, and wrong, failed or missing in a later job",
            file=sys.stderr,
        )
        return 1
    return 0


class _EscapedStream:
    """stdout that may reach a terminal: answers and model names are data, so their
    control characters are written escaped (as JSON escapes: JSON stays the same JSON)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(escape_json(text))


def _write_json(out: IO[str], summary: CompareSummary, rows: Any) -> None:
    """The summary, then every row, written as they are read (not held in memory)."""
    out.write('{"summary": ')
    json.dump(summary.to_dict(), out, ensure_ascii=False)
    out.write(', "rows": [')
    for n, row in enumerate(rows):
        out.write(",\n" if n else "\n")
        json.dump(row.to_dict(), out, ensure_ascii=False)
    out.write("\n]}\n")


def _write_csv(out: IO[str], summary: CompareSummary, rows: Any) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    header = ["key", "prompt", "state"]
    for side in summary.jobs:
        header += [f"{side.job_id}_{name}" for name in CSV_ANSWER]
    writer.writerow(header)
    for row in rows:
        writer.writerow(_csv_cells(row))


CSV_ANSWER = ("response", "success", "tokens_out", "duration", "error", "score")


def _csv_cells(row: CompareRow) -> list[Any]:
    cells: list[Any] = [guard_cell(row.key), guard_cell(row.prompt), row.state]
    for answer in row.answers:
        cells += [
            guard_cell(answer.text or ""),
            "" if answer.success is None else answer.success,
            "" if answer.tokens_output is None else answer.tokens_output,
            "" if answer.duration is None else f"{answer.duration:.2f}",
            guard_cell(answer.error or ""),
            "" if answer.score is None else answer.score,
        ]
    return cells


def command_checkpoints(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    scan = processor.scan_checkpoints()
    entries, unreadable = scan.readable, scan.unreadable
    if args.json:
        print(
            json.dumps(
                {
                    "checkpoints": [e.to_dict() for e in entries],
                    "unreadable": [
                        {"path": u.checkpoint_file, "reason": u.unreadable} for u in unreadable
                    ],
                },
                indent=2,
            )
        )
        return 0
    if not entries:
        print(f"No checkpoints in {processor.checkpoint_dir}")
    else:
        rows = [("JOB ID", "NAME", "MODEL", "STATUS", "DONE", "FAILED", "UPDATED")] + [
            (
                e.job_id,
                e.name or "-",
                e.model_id,
                e.state,
                f"{e.done}/{e.total_prompts}",
                str(e.failed),
                e.updated_at or "",
            )
            for e in entries
        ]
        print_table(rows)
        for entry in (e for e in entries if e.interrupted):
            print(
                f"Job {entry.job_id} was interrupted (its process is gone): "
                f"tui-batch resume {entry.job_id}"
            )
    if unreadable:
        print(f"{len(unreadable)} unreadable checkpoint(s) skipped:", file=sys.stderr)
        for entry in unreadable:
            print(f"  {one_line(f'{entry.checkpoint_file}: {entry.unreadable}')}", file=sys.stderr)
    return 0


def command_merge(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    job = processor.merge_shards(args.shards, args.name)
    named = f" ({one_line(job.name)})" if job.name else ""
    print(
        f"Merged {len(job.merged_from or [])} shards into job {job.job_id}{named}: "
        f"{job.total_prompts:,} prompts, {job.completed:,} succeeded, {job.failed:,} failed. "
        f"Its figures: tui-batch stats {job.job_id}; its results: tui-batch export "
        f"{job.job_id} --out FILE",
        file=sys.stderr,
    )
    return 0


def command_export(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    job = processor.open_job(args.job_id)  # read as written: flat in memory at any size
    assert job.checkpoint_file is not None
    results = StoredResults(job.checkpoint_file, job.prompts)
    output_format = args.format or format_for_path(args.out)
    path = processor.export_results(
        job, results, args.out, output_format, neutralise_formulas=not args.allow_formulas
    )
    what = "the figures" if output_format == STATS_FORMAT else f"{len(results)} results"
    print(
        f"Exported {what} of job {job.job_id} to {one_line(str(path))} ({output_format})",
        file=sys.stderr,
    )
    return 0
