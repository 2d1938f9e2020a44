"""`tui-batch batches JOB`: a Batch API job's batches, with the provider's word now on
each one still in flight."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from tui_batch.cli.reports import checkpoint_path
from tui_batch.cli.terminal import print_table
from tui_batch.core.batch_records import BatchFile, BatchRecords
from tui_batch.core.errors import SettingsError
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.progress import format_duration
from tui_batch.core.text import one_line


def command_batches(args: argparse.Namespace) -> int:
    from tui_batch.backends.factory import batches_now

    processor = BatchProcessor()
    path = checkpoint_path(processor, args.job_id)
    job = processor.open_job(args.job_id)
    files = BatchRecords(path).files()
    if not files:
        how = "through a Batch API" if job.server and job.server.batch_api else "live"
        raise SettingsError(f"Job {args.job_id} has no batches: it runs {how}")
    assert job.server is not None  # a job with batches runs on a server
    unasked = None
    if not args.recorded:
        files, unasked = batches_now(job.server, files)
    if args.json:
        print(json.dumps([asdict(record) for record in files], indent=2))
    else:
        count = f"{len(files)} batch{'es' if len(files) != 1 else ''}"
        print(f"Job {args.job_id}: {count} at {one_line(job.server.endpoints[0].url)}")
        print_table([HEADER, *(_row(record, time.time()) for record in files)])
    if unasked:
        print(
            f"tui-batch: warning: the provider was not asked: {one_line(unasked)}; "
            "the statuses are as last recorded",
            file=sys.stderr,
        )
    return 0


HEADER = ("FILE", "BATCH", "STATUS", "LINES", "DONE", "FAILED", "WAITED", "RAN", "LEFT", "FILES")


def _row(record: BatchFile, now: float) -> tuple[str, ...]:
    """A file's row: its batch and status, its lines and the provider's counts, how long
    it waited to run and ran, the time left before it expires, and its files."""
    status = record.status or ("not created yet" if record.batch_id is None else "created")
    files = "deleted" if record.deleted else "kept" if record.file_id else "-"
    return (
        str(record.number),
        record.batch_id or "-",
        status,
        f"{record.lines:,}",
        f"{record.completed:,}",
        f"{record.failed:,}",
        format_duration(record.waited(now)),
        format_duration(record.ran(now)),
        format_duration(record.left(now)),
        files,
    )
