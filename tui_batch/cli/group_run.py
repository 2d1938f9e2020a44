"""Groups of jobs headless: a matrix run in one process (`tui-batch run` with `[matrix]` or
`--matrix`), resumed (`tui-batch resume GROUP`) and ranked (`tui-batch stats GROUP`).

Every job of a group is made before the first runs, so a group stopped anywhere (Ctrl+C,
kill -9) resumes whole: `resume GROUP` runs what each job has left. The jobs run one
after the other, each with its own progress line; the leaderboard comes last, and the
exit status is the worst of the jobs'."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import closing
from dataclasses import dataclass, replace

from tui_batch.cli.arguments import EXIT_FAILED, EXIT_OK
from tui_batch.cli.job_run import checked_servers, run_job
from tui_batch.cli.run_input import RunRequest, open_input, warn_long_prompts
from tui_batch.cli.terminal import cancel_on_signals, print_table
from tui_batch.core.backend import Backend
from tui_batch.core.errors import SettingsError, TuiBatchError
from tui_batch.core.export import check_output_path, check_results_folder, guard_cell
from tui_batch.core.jobs import BatchJob, JobStatus
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


def run_group(requests: list[RunRequest], args: argparse.Namespace) -> int:
    """Make every job of the requests (each file given, each combination of a matrix)
    as one group, run them one after the other, then print the group's leaderboard."""
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
        prepared = [(variant.label, _prepare(processor, one)) for variant, one in variants]
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
        with closing(_Backends()) as backends:
            statuses = [_run(processor, job, signals, stream, backends) for job, stream in made]
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
    """Run what each of the group's `jobs` has left, one after the other; then rank them."""
    left = [job for job in jobs if _unfinished(job, args.retry_failed)]
    print(
        f"Group {group_id}: {len(jobs)} jobs, {len(left)} with prompts left",
        file=sys.stderr,
    )
    statuses = []
    backends = _Backends()
    with cancel_on_signals(sys.stderr) as signals, closing(backends):
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
            stream = reopen_stream(job) if job.reading is not None else None
            statuses.append(_run(processor, job, signals, stream, backends, args.retry_failed))
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


def _prepare(processor: BatchProcessor, request: RunRequest) -> _Prepared:
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
        server, model = checked_servers(spec)
        return _Prepared(spec, stream, run_input.prompts, model, server=server)
    found = resolve_model(spec.model)
    warn_long_prompts(found.path, run_input, spec.generation)
    return _Prepared(spec, stream, run_input.prompts, found.id, model_path=str(found.path))


class _Backends:
    """The group's backends: one a local model (its GGUF and how many run at once), kept
    open from one job to the next, so a model the jobs share loads once (a job whose load
    settings differ reloads it in place: never two copies); one a job on servers."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int | None], Backend] = {}

    def for_job(self, job: BatchJob) -> tuple[Backend, bool]:
        """The job's backend, and whether it is kept here (else the caller closes it)."""
        from tui_batch.backends.factory import backend_for_job

        if job.server is not None:
            return backend_for_job(job, opened=False), False
        key = (job.model_path or job.model_id, job.settings.parallel)
        if key not in self._kept:
            print(
                f"Loading {one_line(job.model_id)} (once for the group's jobs on it)...",
                file=sys.stderr,
            )
            self._kept[key] = backend_for_job(job, opened=False)
        return self._kept[key], True

    def close(self) -> None:
        for backend in self._kept.values():
            backend.close()
        self._kept.clear()


def _run(
    processor: BatchProcessor,
    job: BatchJob,
    signals: cancel_on_signals,
    stream: PromptStream | None,
    backends: _Backends,
    retry_failed: bool = False,
) -> int:
    """Run one job of the group; a job that cannot run says why on one line and the
    group goes on."""
    if signals.cancel.is_set():
        return signals.exit_status
    print(f"-- {one_line(job.name or job.job_id)}", file=sys.stderr)
    try:
        with processor.store.lock(job.job_id) as lock:
            backend, kept = backends.for_job(job)
            try:
                return run_job(processor, job, backend, signals, retry_failed, lock, stream)
            finally:
                if not kept:
                    backend.close()
    except TuiBatchError as exc:
        return _said(f"Job {job.job_id}: {exc}")


def _said(text: str) -> int:
    print(f"tui-batch: error: {one_line(text)}", file=sys.stderr)
    return EXIT_FAILED


def _unfinished(job: BatchJob, retry_failed: bool) -> bool:
    if job.reading is not None or job.status is not JobStatus.COMPLETED:
        return True
    return job.done < job.total_prompts or (retry_failed and job.failed > 0)


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
