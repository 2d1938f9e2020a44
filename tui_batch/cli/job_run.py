"""One job run headless to its end or a stop: the job line, what it does before its
first answer, the progress line, what the engine says on the way (the schema's mode, the
cache, servers out), and the outcome with its exit status."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tui_batch.backends.job_checks import ServerChecks
from tui_batch.cli.arguments import EXIT_FAILED, EXIT_OK
from tui_batch.cli.terminal import ProgressPrinter, cancel_on_signals
from tui_batch.core import events
from tui_batch.core.backend import Backend
from tui_batch.core.batch_records import cancelled_batches
from tui_batch.core.budget_guard import BUDGET_REACHED
from tui_batch.core.errors import CheckpointError, ExportError
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.pending import INPUT_STOPPED
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.progress import format_duration
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.rows import ResultCounts
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.scoring.figures import accuracy_text
from tui_batch.core.servers import ServerCheck, ServerSettings
from tui_batch.core.store import JobLock
from tui_batch.core.stored import StoredResults, result_counts
from tui_batch.core.text import one_line


def run_job(
    processor: BatchProcessor,
    job: BatchJob,
    backend: Backend,
    signals: cancel_on_signals,
    retry_failed: bool,
    lock: JobLock | None = None,
    stream: PromptStream | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the job to its end or a stop (`signals`: the stop signals, handled); print
    the outcome; return the exit status. `lock`: the job's lock, held; `stream`: the
    rest of its input, read in as it runs; `err`: where it says how it goes (stderr, or
    its lines on a `ProgressBoard`). Nothing of the job is held in memory: its prompts
    and results are read from its checkpoint."""
    err = err or sys.stderr
    remaining = job.total_prompts - job.done
    where = job.model_id
    if job.server is not None:
        count = len(job.server.endpoints)
        where += f" via {job.server.endpoints[0].url}" if count == 1 else f" via {count} servers"
        if job.server.batch_api:
            where += "'s Batch API"
    runs = f"{job.total_prompts} prompts"
    if job.repeats > 1:
        runs = f"{job.total_prompts // job.repeats} prompts x {job.repeats} runs"
    if job.reading is not None:
        runs = f"{runs} so far, the rest read in as it runs"
    if job.input_slice is not None:
        runs += f" ({job.input_slice.describe()})"
    # With the cache read, how many really run is said once it has been asked.
    to_run = f"{remaining} to answer" if job.options.cache_reads else f"{remaining} to run"
    print(
        f"Job {job.job_id}: {runs} on {one_line(where)} "
        f"({to_run}; checkpoint {one_line(job.checkpoint_file)})",
        file=err,
    )
    if job.settings.schema is not None:
        print(f"Answers: {one_line(job.settings.schema.describe())}", file=err)
    if job.scoring is not None:
        print(f"Scored: {one_line(job.scoring.describe())}", file=err)
    printer = ProgressPrinter(err)
    start = time.monotonic()
    stopped_by: list[str] = []  # why the engine stopped the job itself (servers gone)
    started = 0  # prompts started (a first attempt each), until the first answer
    tokens = 0
    cache_said: list[bool] = []  # the cache's first news is said; the rest is counted

    def said(event: events.BatchEvent) -> None:
        nonlocal tokens, started
        if isinstance(event, (events.TokensStreamed, events.PromptStarted)):
            # Counted only until the first answer: nothing grows with the job after it.
            if printer.before_first_answer:
                if isinstance(event, events.TokensStreamed):
                    tokens += 1
                elif event.attempt == 1:
                    started += 1
                printer.activity(started, tokens)
        elif (
            isinstance(event, events.JobStateChanged)
            and event.status is JobStatus.CANCELLED
            and event.reason not in (None, "cancelled")
        ) or (
            isinstance(event, events.JobStateChanged)
            and event.status is JobStatus.FAILED
            and event.reason
        ):
            stopped_by.append(event.reason)
        elif isinstance(event, events.InputRead):
            printer.reading(event.records, event.done)
        elif isinstance(event, events.SchemaEnforced):
            printer.note(f"answers {event.how}")
        elif isinstance(event, events.CacheServed) and not cache_said:
            cache_said.append(True)
            printer.note(
                f"cache: {event.served:,} of {event.served + event.to_run:,} answers served "
                f"from {event.path}; {event.to_run:,} to run"
            )
        elif isinstance(event, events.CacheKept):
            left_out = ", ".join(f"{n:,} {why}" for why, n in event.left_out)
            left_out = f"; not kept (they run again next time): {left_out}" if left_out else ""
            printer.note(f"cache: {event.kept:,} new answers kept{left_out}")
        elif isinstance(event, events.CacheProblem):
            printer.note(f"warning: {event.message}")

    printer.started(job)
    try:
        with printer.watch(backend):
            processor.run_streamed(
                job,
                backend,
                stream=stream,
                progress_callback=printer,
                on_event=said,
                cancel_event=signals.cancel,
                retry_failed=retry_failed,
                lock=lock,
            )
    except KeyboardInterrupt:
        pass
    except CheckpointError as exc:
        printer.finish()
        print(
            f"tui-batch: error: {exc}. The job stopped; the last checkpoint is intact "
            f"({job.done}/{job.total_prompts} saved at most). When the disk is fixed: "
            f"tui-batch resume {job.job_id}",
            file=err,
        )
        return EXIT_FAILED
    printer.finish()
    if (
        job.status is JobStatus.CANCELLED
        and stopped_by
        and stopped_by[-1].startswith(BUDGET_REACHED)
    ):
        print(
            f"Stopped: {stopped_by[-1]}. {job.done}/{job.total_prompts} done and saved. "
            f"To go on, raise it: tui-batch resume {job.job_id} --max-total-tokens N "
            "(or --max-cost N)",
            file=err,
        )
        return EXIT_FAILED
    if job.status is JobStatus.CANCELLED and stopped_by and not signals.cancel.is_set():
        print(
            f"Stopped: {stopped_by[-1]}; {job.done}/{job.total_prompts} done and saved. "
            f"When a server answers again: tui-batch resume {job.job_id}",
            file=err,
        )
        return EXIT_FAILED
    if job.status is JobStatus.CANCELLED:
        cancelled = cancelled_batches(job.checkpoint_file) if job.checkpoint_file else 0
        batches = (
            f" {cancelled} batch{'es' if cancelled > 1 else ''} cancelled at the provider: "
            "resume reads what they finished and sends the rest."
            if cancelled
            else ""
        )
        print(
            f"Stopped: {job.done}/{job.total_prompts} done and saved.{batches} "
            f"Resume with: tui-batch resume {job.job_id}",
            file=err,
        )
        return signals.exit_status
    if job.status is JobStatus.FAILED and stopped_by and stopped_by[-1].startswith(INPUT_STOPPED):
        print(
            f"Stopped: {stopped_by[-1]}. {job.done:,}/{job.total_prompts:,} done and saved "
            f"(tui-batch export {job.job_id}); fix the input and run the job again",
            file=err,
        )
        return EXIT_FAILED
    assert job.checkpoint_file is not None
    try:
        out = processor.save_results(job, StoredResults(job.checkpoint_file, job.prompts))
    except ExportError as exc:
        raise ExportError(
            f"{exc}; the results are saved: tui-batch export {job.job_id} --out FILE"
        ) from None
    elapsed = time.monotonic() - start
    counts = result_counts(job.checkpoint_file)
    answered = f"{job.completed} succeeded" + (
        f" ({counts.empty} empty answers)" if counts.empty else ""
    )
    if counts.cached:
        answered += f" ({counts.cached:,} served from the cache)"
    invalid, cut = counts.invalid, counts.thought_cut
    failed = f"{job.failed - invalid - cut} failed" + (f", {invalid} invalid" if invalid else "")
    if cut:  # a thought that left no answer: not an error of the model or the server
        failed += f", {cut} thought with no answer (raise --max-tokens or set --reasoning-budget)"
    print(
        f"{job.status.value.capitalize()}: {answered}, {failed} of "
        f"{job.total_prompts} ({tokens_generated(counts)}); this run took "
        f"{format_duration(elapsed)}. Results: {one_line(str(out))}",
        file=err,
    )
    if job.scoring is not None:
        print(f"Scores: {accuracy_text(counts.right, counts.scored)}", file=err)
    if job.status is JobStatus.FAILED:
        print(
            f"The error strategy stopped the job. Resume with: tui-batch resume {job.job_id}",
            file=err,
        )
    return EXIT_OK if job.status is JobStatus.COMPLETED and job.failed == 0 else EXIT_FAILED


def tokens_generated(counts: ResultCounts) -> str:
    """`1,234 tokens generated`, with how many answers had no count (never counted 0);
    an answer served from the cache generated none."""
    text = f"{counts.tokens_output:,} tokens generated"
    if counts.uncounted:
        text += f", {counts.uncounted:,} answers without a count"
    return text


def checked_servers(spec: RunSpec) -> tuple[ServerSettings, str]:
    """The spec's servers as checked (each answers and serves the model; its warnings
    printed), and the model's name: the spec's, else the one model they serve."""
    return said_servers(ServerChecks(), spec)


def said_servers(checks: ServerChecks, spec: RunSpec) -> tuple[ServerSettings, str]:
    """`checks(spec)`, its warnings printed to stderr."""
    server, model, warnings = checks(spec)
    _warn(warnings)
    return server, model


def apply_check(check: ServerCheck, server: ServerSettings) -> ServerSettings:
    """The servers as the check found them: each one that interrupts requests gets one
    at a time (and a warning saying so, and how to start it for batches)."""
    _warn(check.warnings())
    return check.applied_to(server)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"tui-batch: warning: {one_line(warning)}", file=sys.stderr)
