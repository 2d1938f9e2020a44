"""Groups of jobs headless: a matrix run in one process (`tui-batch run` with `[matrix]` or
`--matrix`), resumed (`tui-batch resume GROUP`) and ranked (`tui-batch stats GROUP`).

Every job of a group is made before the first runs, so a group stopped anywhere (Ctrl+C,
kill -9) resumes whole: `resume GROUP` runs what each job has left. The jobs run at
once, each on its own thread, sharing each model and each fleet of servers
(`backends.pool`), each with its own progress line (`progress_board`); the leaderboard
comes last, and the exit status is the worst of the jobs'."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TextIO

from tui_batch.backends.job_checks import ServerChecks
from tui_batch.cli.arguments import EXIT_FAILED, EXIT_OK
from tui_batch.cli.job_run import run_job, said_servers
from tui_batch.cli.progress_board import ProgressBoard
from tui_batch.cli.run_input import RunRequest, open_input, warn_long_prompts
from tui_batch.cli.terminal import cancel_on_signals, print_table
from tui_batch.core.errors import SettingsError, TuiBatchError
from tui_batch.core.export import check_output_path, check_results_folder, guard_cell
from tui_batch.core.jobs import BatchJob
from tui_batch.core.leaderboard import (
    Leaderboard,
    accuracy_bars,
    leaderboard,
    leaderboard_records,
    leaderboard_rows,
)
from tui_batch.core.matrix import MatrixVariant, new_group_id
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt import Prompt
from tui_batch.core.prompt_stream import PromptStream, reopen_stream
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.servers import ServerSettings
from tui_batch.core.text import escape_controls, escape_json, one_line

if TYPE_CHECKING:
    from tui_batch.core.backend import Backend


def run_group(requests: list[RunRequest], args: argparse.Namespace) -> int:
    """Make every job of the requests (each file given, each combination of a matrix)
    as one group, run them at once, then print the group's leaderboard."""
    _check_max_models(args.max_models)
    if args.dry_run:
        raise SettingsError("--dry-run measures one job: give one input, without a matrix")
    variants = [made for request in requests for made in _variants(request, len(requests))]
    outputs = [one.spec.output for _, one in variants if one.spec.output is not None]
    if len(set(outputs)) < len(outputs):
        raise SettingsError(
            "several jobs of the group would write one results file: give each input its "
            "own [output] file, or no --out (each job then writes its own in the data dir)"
        )
    processor = BatchProcessor()
    processor.store.check_writable()
    group_id = new_group_id()
    with cancel_on_signals(sys.stderr) as signals:
        # Every job checks out before any is made: a group is made whole or not at all.
        checks = ServerChecks()
        prepared = [(variant.label, _prepare(processor, one, checks)) for variant, one in variants]
        if signals.cancel.is_set():
            print("Stopped before the group was made: nothing was made.", file=sys.stderr)
            return signals.exit_status
        made = [
            (
                processor.create_streamed_job(
                    job.model,
                    job.stream,
                    job.first,
                    job.spec,
                    model_path=job.model_path,
                    server=job.server,
                    group_id=group_id,
                    variant=label,
                ),
                job.stream,
            )
            for label, job in prepared
        ]
        print(
            f"Group {group_id}: {len(made)} jobs, {_made_of(requests)} "
            f"({', '.join(job.job_id for job, _ in made)})",
            file=sys.stderr,
        )
        statuses = run_together(processor, made, signals, args.max_models)
    return _finish(processor, group_id, statuses)


def _variants(request: RunRequest, inputs: int) -> list[tuple[MatrixVariant, RunRequest]]:
    """The jobs one request makes: one for each combination of its matrix, else itself;
    among several inputs, each labelled by its file too."""
    name = request.spec.name or (request.job_file.stem if request.job_file else None)
    source = request.job_file or request.spec.prompts or request.spec.data
    file = source.name if source is not None else name or "job"
    if not request.matrix:
        return [(MatrixVariant({}, file), replace(request, spec=replace(request.spec, name=name)))]
    made = request.variants()
    if inputs == 1:
        return made
    return [(replace(variant, label=f"{file} {variant.label}"), one) for variant, one in made]


def _made_of(requests: list[RunRequest]) -> str:
    if len(requests) == 1:
        return f"one for each combination of {', '.join(requests[0].matrix)}"
    return f"from {len(requests)} inputs"


def resume_group(
    processor: BatchProcessor, group_id: str, jobs: list[BatchJob], args: argparse.Namespace
) -> int:
    """Run what each of the group's `jobs` has left, at once; then rank them."""
    _check_max_models(args.max_models)
    left = [job for job in jobs if job.work_left(args.retry_failed)]
    print(
        f"Group {group_id}: {len(jobs)} jobs, {len(left)} with prompts left",
        file=sys.stderr,
    )
    statuses = []
    runs: list[tuple[BatchJob, PromptStream | None]] = []
    for job in left:
        changes = job.template.changes() if job.template and job.reading is None else []
        if changes:  # its files hashed once: a big data file takes seconds
            statuses.append(
                _said(
                    f"Job {job.job_id}: {'; '.join(changes)}: not resumed "
                    f"(tui-batch resume {job.job_id} --force goes on)"
                )
            )
            continue
        runs.append((job, reopen_stream(job) if job.reading is not None else None))
    with cancel_on_signals(sys.stderr) as signals:
        statuses += run_together(processor, runs, signals, args.max_models, args.retry_failed)
    return _finish(processor, group_id, statuses)


def group_stats(group_id: str, jobs: list[BatchJob], form: str | None) -> int:
    """`tui-batch stats GROUP`: the leaderboard of its `jobs`, as text, JSON or CSV."""
    board = _board(group_id, jobs)
    if form == "json":
        print(escape_json(json.dumps(board.to_dict(), indent=2, ensure_ascii=False)))
    elif form == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerows(
            [guard_cell(c) if isinstance(c, str) else c for c in row]
            for row in leaderboard_records(board)
        )
    else:
        print_leaderboard(board)
    return EXIT_OK


def group_named(processor: BatchProcessor, name: str) -> list[BatchJob]:
    """The jobs of the group `name` names; none where it names a job (a job's id wins)
    or nothing at all."""
    return [] if processor.store.exists(name) else processor.group_jobs(name)


def print_leaderboard(board: Leaderboard) -> None:
    print(f"Group {board.group_id}: {len(board.variants)} variants, ranked by {board.by}")
    print()
    print_table(leaderboard_rows(board))
    print()
    for line in accuracy_bars(board):
        print(escape_controls(line))


@dataclass(slots=True)
class _Prepared:
    """One job of the group, checked and ready to be made: its input's first chunk read,
    its model found or its servers checked."""

    spec: RunSpec
    stream: PromptStream
    first: list[Prompt]
    model: str
    model_path: str | None = None
    server: ServerSettings | None = None


def _prepare(processor: BatchProcessor, request: RunRequest, checks: ServerChecks) -> _Prepared:
    """What `tui-batch run` checks of a job before it makes it, for one of the group."""
    from tui_batch.models.catalog import resolve_model

    spec = request.spec
    if spec.output:
        check_output_path(spec.output, protected=[*request.inputs, processor.checkpoint_dir])
        check_results_folder(spec.output)
    stream, run_input = open_input(request)
    processor.check_job_from(run_input, spec)
    spec = run_input.settled(spec)
    if spec.server is not None:
        server, model = said_servers(checks, spec)
        return _Prepared(spec, stream, run_input.prompts, model, server=server)
    found = resolve_model(spec.model)
    warn_long_prompts(found.path, run_input, spec.generation)
    return _Prepared(spec, stream, run_input.prompts, found.id, model_path=str(found.path))


def run_together(
    processor: BatchProcessor,
    runs: list[tuple[BatchJob, PromptStream | None]],
    signals: cancel_on_signals,
    max_models: int,
    retry_failed: bool = False,
) -> list[int]:
    """Run the jobs at once, each on its own thread, a job whose model is not free
    waiting for it (`BackendPool`); return each one's exit status. The main thread waits
    here for the stop signals."""
    from tui_batch.backends.pool import BackendPool

    board = ProgressBoard(sys.stderr)
    said_before, signals.err = signals.err, board.group_stream()  # a stop's line above

    def loading(model: str) -> None:
        board.say(f"Loading {one_line(model)} (once for the group's jobs on it)...")

    pool = BackendPool(max_models, loading)
    statuses: list[int] = []
    waiting = list(runs)
    running: list[threading.Thread] = []
    ended = threading.Event()

    def start(job: BatchJob, stream: PromptStream | None) -> None:
        out = board.stream_for(job.variant or job.name or job.job_id)
        backend = pool.take(job)  # here: the next job's `ready` counts it

        def work() -> None:
            try:
                statuses.append(_run(processor, job, signals, stream, backend, out, retry_failed))
            finally:
                pool.give_back(backend)
                ended.set()

        thread = threading.Thread(target=work, name=f"tui-batch-job-{job.job_id}", daemon=True)
        running.append(thread)
        thread.start()

    try:
        while waiting or running:
            if signals.cancel.is_set():  # what has not started stays as it is
                statuses += [signals.exit_status for _ in waiting]
                waiting.clear()
            for job, stream in list(waiting):
                try:
                    if pool.ready(job):
                        waiting.remove((job, stream))
                        start(job, stream)
                except TuiBatchError as exc:  # its model is gone, say
                    if (job, stream) in waiting:
                        waiting.remove((job, stream))
                    statuses.append(_said(f"Job {job.job_id}: {exc}"))
            ended.wait(0.2)
            ended.clear()
            running[:] = [thread for thread in running if thread.is_alive()]
    except KeyboardInterrupt:  # stop at once: each job ends at its next step, saved
        for thread in running:
            thread.join()
    finally:
        board.close()
        signals.err = said_before
        pool.close()
    return statuses


def _run(
    processor: BatchProcessor,
    job: BatchJob,
    signals: cancel_on_signals,
    stream: PromptStream | None,
    backend: Backend,
    out: TextIO,
    retry_failed: bool = False,
) -> int:
    """Run one job of the group on `backend`; a job that cannot run says why on one
    line and the group goes on."""
    if signals.cancel.is_set():
        return signals.exit_status
    try:
        with processor.store.lock(job.job_id) as lock:
            return run_job(processor, job, backend, signals, retry_failed, lock, stream, out)
    except TuiBatchError as exc:
        return _said(f"Job {job.job_id}: {exc}", out)


def _check_max_models(count: int) -> None:
    if count < 1:
        raise SettingsError("--max-models: at least 1 model must fit")


def _said(text: str, out: TextIO | None = None) -> int:
    print(f"tui-batch: error: {one_line(text)}", file=out or sys.stderr)
    return EXIT_FAILED


def _finish(processor: BatchProcessor, group_id: str, statuses: list[int]) -> int:
    """Print the leaderboard (when the group's jobs can be ranked) and return the
    worst exit status of the jobs run."""
    print(file=sys.stderr)
    jobs = processor.group_jobs(group_id)  # as they ended
    try:
        print_leaderboard(_board(group_id, jobs))
    except TuiBatchError as exc:  # jobs over different inputs: each job's line instead
        print(f"No leaderboard: {one_line(str(exc))}", file=sys.stderr)
        rows = [("JOB ID", "NAME", "STATUS", "DONE", "FAILED")]
        rows += [
            (j.job_id, j.name or "", j.status.value, f"{j.done}/{j.total_prompts}", str(j.failed))
            for j in jobs
        ]
        print_table(rows)
    print(
        f"\nThe group's figures: tui-batch stats {group_id} (--json); "
        f"to go on after a stop: tui-batch resume {group_id}",
        file=sys.stderr,
    )
    return max(statuses, default=EXIT_OK)


def _board(group_id: str, jobs: list[BatchJob]) -> Leaderboard:
    if not jobs:
        raise SettingsError(f"No job or group {group_id!r:.40} (tui-batch checkpoints lists them)")
    try:
        return leaderboard(group_id, jobs)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
