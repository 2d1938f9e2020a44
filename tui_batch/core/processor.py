"""BatchProcessor: the Python API of the engine (make, run, resume, list and export jobs),
driving a backend with checkpoints, retries, pause and cancel."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tui_batch.core.backend import Backend, CallableBackend
from tui_batch.core.batch_run import BatchRun, EventCallback, ProgressCallback
from tui_batch.core.checkpoint_file import DuplicateId
from tui_batch.core.errors import SettingsError
from tui_batch.core.export import export_results, format_for_path
from tui_batch.core.jobs import (
    BatchJob,
    BatchResult,
    Prompt,
    check_job_name,
    default_job_name,
    repeated,
)
from tui_batch.core.merge import merge_shards
from tui_batch.core.paths import checkpoint_dir as default_checkpoint_dir
from tui_batch.core.paths import ensure_private_dir
from tui_batch.core.paths import outputs_dir as default_outputs_dir
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.prompts import load_prompt_file
from tui_batch.core.rows import JobSummary
from tui_batch.core.run_input import RunInput
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.scoring.records import check_expected
from tui_batch.core.scoring.rescore import Rescored, rescore
from tui_batch.core.servers import ServerSettings
from tui_batch.core.settings import ErrorStrategy, GenerationSettings, check
from tui_batch.core.store import CheckpointScan, CheckpointStore, JobLock
from tui_batch.core.stored import StoredPrompts


class BatchProcessor:
    """Runs batch jobs and keeps their checkpoints in `checkpoint_dir`.

    `checkpoint_dir=None` means `<data dir>/checkpoints` (see `tui_batch.core.paths`).
    """

    def __init__(
        self,
        checkpoint_dir: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` times durations, elapsed and ETA (tests pass a fixed one)."""
        self.clock = clock
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
        self.store = CheckpointStore(self.checkpoint_dir)

    def load_prompts_from_file(self, file_path: str | Path) -> list[Prompt]:
        """Prompts from a .txt, .json, .jsonl or .csv file (see `core.prompts`)."""
        return load_prompt_file(file_path).prompts

    def create_job(
        self,
        model_id: str,
        prompts: Sequence[str | Prompt],
        *,
        job_id: str | None = None,
        spec: RunSpec | None = None,
        settings: GenerationSettings | None = None,
        **fields: Any,
    ) -> BatchJob:
        """A new pending job, saved at once so it can be resumed from its first prompt.

        `spec` gives its settings, servers, output, prices and scoring
        (`RunSpec.job_fields`); a job of `repeats` holds each prompt that many times in a
        row, each with a seed of its own (refused at temperature 0), and a scored job's
        expected values are checked first.
        `settings` and further BatchJob `fields` (error_strategy, retries, retry_backoff,
        checkpoint_every, model_path, source_file, template, server, output_file,
        output_format, prices) are given alone or override the spec's. Nothing is left
        behind on failure.
        """
        given, made = self._checked(prompts, spec, settings, fields)
        chosen = given.get("settings") or GenerationSettings()
        job = BatchJob(
            job_id=self._new_job_id() if job_id is None else job_id,
            model_id=model_id,
            prompts=repeated(made, given["repeats"], chosen.seed),
            **given,
        )
        self.store.create(job)
        return job

    def create_job_from(
        self,
        model_id: str,
        run_input: RunInput,
        spec: RunSpec,
        *,
        model_path: str | None = None,
        server: ServerSettings | None = None,
        job_id: str | None = None,
    ) -> BatchJob:
        """The one door from a run's spec and its input (`core.run_input`) to a job, for
        the command line and the dashboard: the template's schema and scoring where the
        spec gives none, the input's file, the model's path (a local model) or the
        servers as checked (else the spec's)."""
        fields: dict[str, Any] = {
            "source_file": (
                str(Path(run_input.source_file).resolve()) if run_input.source_file else None
            ),
            "template": run_input.template,
            "model_path": model_path,
        }
        if server is not None:
            fields["server"] = server
        return self.create_job(
            model_id, run_input.prompts, job_id=job_id, spec=run_input.settled(spec), **fields
        )

    def create_streamed_job(
        self,
        model_id: str,
        stream: PromptStream,
        first: list[Prompt],
        spec: RunSpec,
        *,
        model_path: str | None = None,
        server: ServerSettings | None = None,
        job_id: str | None = None,
        group_id: str | None = None,
        variant: str | None = None,
    ) -> BatchJob:
        """A job read in from `stream`, made with its `first` chunk (`first_chunk`); the
        rest is read in as it runs (`run_streamed`). Its prompts are then read from the
        checkpoint as they are needed: memory holds none of them. `group_id`: the group
        (a matrix's jobs) it belongs to, `variant` its values there."""
        fields: dict[str, Any] = {
            "source_file": str(stream.source_file.resolve()),
            "template": stream.template_source,
            "model_path": model_path,
            "group_id": group_id,
            "variant": variant,
        }
        if server is not None:
            fields["server"] = server
        given, made = self._checked(first, spec, None, fields)
        job = BatchJob(
            job_id=self._new_job_id() if job_id is None else job_id,
            model_id=model_id,
            prompts=made,
            reading=stream.reading(),
            input_sha256=stream.sha256,
            **given,
        )
        try:
            path = self.store.create(job, check_ids=stream.check_ids)
        except DuplicateId as exc:
            raise stream.duplicate(exc, [], made) from None
        job.prompts = StoredPrompts(path, job.total_prompts)
        return job

    def run_streamed(
        self,
        job: BatchJob,
        backend: Backend,
        *,
        stream: PromptStream | None = None,
        progress_callback: ProgressCallback | None = None,
        on_event: EventCallback | None = None,
        cancel_event: threading.Event | None = None,
        pause_event: threading.Event | None = None,
        retry_failed: bool = False,
        lock: JobLock | None = None,
    ) -> None:
        """`process_batch` for a job of any size: its results are kept in its checkpoint
        only (read them with `stored.StoredResults`), and the rest of its input is read
        in from `stream` as the prompts run out."""
        run = BatchRun(self.store, self.clock, job, backend, progress_callback, on_event)
        run.keep_results = False
        run.stream = stream
        run.cancel = cancel_event or run.cancel
        run.pause = pause_event or run.pause
        if lock is not None and lock.covers(job.job_id):
            run.execute(retry_failed, [])
            return
        with self.store.lock(job.job_id):
            run.execute(retry_failed, [])

    def merge_shards(self, sources: Sequence[str], name: str | None = None) -> BatchJob:
        """One job joined from the shards of a job (`--shard I/N`): `sources` are job ids
        here or checkpoint files from elsewhere (see `core.merge`)."""
        return merge_shards(self.store, sources, self._new_job_id(), check_job_name(name))

    def open_job(self, job_id: str) -> BatchJob:
        """A job without its results, its prompts read from the checkpoint as needed."""
        return self.store.open_job(job_id)

    def group_jobs(self, group_id: str) -> list[BatchJob]:
        """The jobs of a group (a matrix's), oldest first, opened as `open_job` opens
        them; empty when no job belongs to it."""
        found = [s for s in self.job_summaries() if s.group_id == group_id]
        found.sort(key=lambda s: (s.created_at or "", s.job_id))
        return [self.open_job(s.job_id) for s in found]

    def check_job_from(self, run_input: RunInput, spec: RunSpec) -> None:
        """What `create_job_from` checks, with nothing made (see `check_job`)."""
        self.check_job(
            run_input.prompts,
            spec=run_input.settled(spec),
            source_file=str(run_input.source_file) if run_input.source_file else None,
        )

    def check_job(
        self,
        prompts: Sequence[str | Prompt],
        *,
        spec: RunSpec | None = None,
        settings: GenerationSettings | None = None,
        **fields: Any,
    ) -> None:
        """What `create_job` checks of these prompts and settings (expected values the
        scoring can read, repeats at a temperature above 0), with nothing made: a caller
        about to load a model asks first, so a mistake costs no load."""
        self._checked(prompts, spec, settings, fields)

    @staticmethod
    def _checked(
        prompts: Sequence[str | Prompt],
        spec: RunSpec | None,
        settings: GenerationSettings | None,
        fields: dict[str, Any],
    ) -> tuple[dict[str, Any], list[Prompt]]:
        """A job's fields (the spec's, then `settings` and `fields` over them, its name
        defaulted) and its prompts, checked; a SettingsError of one line if not."""
        given = spec.job_fields() if spec is not None else {}
        if settings is not None:
            given["settings"] = settings
        given.update(fields)
        if given.get("name") is None:
            given["name"] = default_job_name(given.get("source_file"))
        made = [p if isinstance(p, Prompt) else Prompt(text=str(p)) for p in prompts]
        scoring = given.get("scoring")
        if scoring is not None:
            check_expected(scoring, made)
        # Checked before the prompts are repeated: 10**9 would build them first.
        repeats = given["repeats"] = check("repeats", given.get("repeats", 1))
        chosen = given.get("settings") or GenerationSettings()
        if repeats > 1 and chosen.temperature == 0:
            raise SettingsError(
                "Repeats (--repeats): at temperature 0 every run gives the same answer; "
                "give a temperature above 0 (--temperature 0.7)"
            )
        return given, made

    def score_job(self, job_id: str, scoring: Scoring) -> Rescored:
        """Score a job's answers again with `scoring` (and keep it as the job's), without
        running a prompt; refused while the job runs."""
        return rescore(self.store, job_id, scoring)

    def save_checkpoint(self, job: BatchJob, results: Sequence[BatchResult]) -> Path:
        """Save the job and these results (new ones are added, known ones replaced)."""
        return self.store.save(job, results)

    def load_checkpoint(self, checkpoint_file: str | Path) -> tuple[BatchJob, list[BatchResult]]:
        return self.store.load(checkpoint_file)

    def load_job(self, job_id: str) -> tuple[BatchJob, list[BatchResult]]:
        """Load a checkpoint by job id; an id that is not a plain name is an error."""
        return self.store.load_job(job_id)

    def job_summary(self, job_id: str) -> JobSummary:
        """A job's summary without its prompts or results (a quick look at any size)."""
        return self.store.summary(job_id)

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """One dict per readable checkpoint, newest first, with `job_id`, `model_id`,
        `status`, `total_prompts`, `completed`, `failed`, `checkpoint_file`,
        `created_at`, `updated_at`, `size_bytes` and `resumable`. `job_summaries()` is
        the same as typed objects; `scan_checkpoints()` adds the unreadable files."""
        return [summary.to_dict() for summary in self.job_summaries()]

    def job_summaries(self) -> list[JobSummary]:
        """Every readable checkpoint as a `JobSummary`, newest first."""
        return self.store.scan().readable

    def scan_checkpoints(self) -> CheckpointScan:
        """Every checkpoint: the readable ones, newest first, and the files that cannot
        be read, each with the reason in its `unreadable` field."""
        return self.store.scan()

    def delete_checkpoint(self, job_id: str) -> None:
        """Delete a job's checkpoint; refused while the job runs."""
        self.store.delete(job_id)

    def delete_unreadable(self, path: Path) -> None:
        """Delete a damaged file that `scan_checkpoints` reported (and only such a file)."""
        self.store.delete_file(path)

    def export_results(
        self,
        job: BatchJob,
        results: Sequence[BatchResult],
        output_file: str | Path,
        format: str = "json",
        **options: Any,
    ) -> Path:
        """Write `results` (see `core.export`); never over a checkpoint of this processor."""
        return export_results(
            job, results, output_file, format, protected=[self.checkpoint_dir], **options
        )

    def results_path(self, job: BatchJob) -> Path:
        """Where a finished run writes the job's results: its output file, else
        `<data dir>/outputs/batch_<job_id>.<format>`."""
        if job.output_file:
            return Path(job.output_file)
        return default_outputs_dir() / f"batch_{job.job_id}.{job.output_format or 'json'}"

    def save_results(self, job: BatchJob, results: Sequence[BatchResult]) -> Path:
        """Write the results where `results_path` says, as the job's output format (or
        the file's extension), never over a file the job was made from; return the path."""
        path = self.results_path(job)
        if not job.output_file:
            ensure_private_dir(path.parent)
        inputs = [job.source_file]
        if job.template is not None:
            inputs += [job.template.template_file, job.template.data_file]
        return export_results(
            job,
            results,
            path,
            job.output_format or format_for_path(path),
            protected=[self.checkpoint_dir, *(Path(p) for p in inputs if p)],
        )

    def process_batch(
        self,
        job: BatchJob,
        execute_fn: Callable[[str], Any] | Backend,
        progress_callback: ProgressCallback | None = None,
        error_strategy: str | None = None,
        *,
        cancel_event: threading.Event | None = None,
        pause_event: threading.Event | None = None,
        retry_failed: bool = False,
        on_event: EventCallback | None = None,
        previous: Sequence[BatchResult] | None = None,
        lock: JobLock | None = None,
    ) -> list[BatchResult]:
        """Run every prompt of `job` that has no result yet; return all results by index.

        `execute_fn` is a function of one prompt's text, or a Backend that may hold
        several prompts in flight. Setting `cancel_event` stops after the current step;
        setting `pause_event` holds the run until it is cleared. Either way, and on any
        error, every finished result is saved before this returns or raises. A prompt
        whose processing raises fails alone; the job goes on.

        The run takes the job's lock (one run of a job at a time), and reads the job's
        results so far from its checkpoint; a caller that holds the lock already passes
        it as `lock`, with the results it read under it as `previous`.

        A Backend passed in is begun and ended here, never closed: whoever made it
        closes it. With nothing left to run it is not even opened, and the job is just
        finished.
        """
        backend = execute_fn if isinstance(execute_fn, Backend) else CallableBackend(execute_fn)
        if error_strategy is not None:
            job.error_strategy = str(ErrorStrategy.parse(error_strategy))
        if previous is not None and (lock is None or not lock.covers(job.job_id)):
            raise ValueError("previous results must come with the job's lock held")
        run = BatchRun(self.store, self.clock, job, backend, progress_callback, on_event)
        run.cancel = cancel_event or run.cancel
        run.pause = pause_event or run.pause
        if lock is not None and lock.covers(job.job_id):
            return run.execute(retry_failed, previous)
        with self.store.lock(job.job_id):
            return run.execute(retry_failed, previous)

    def _new_job_id(self) -> str:
        while True:
            job_id = uuid.uuid4().hex[:8]
            if not self.store.exists(job_id):
                return job_id
