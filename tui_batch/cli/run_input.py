"""What `tui-batch run` runs: a prompts file, or a template over a data file, given by
flags or by a job file whose values sit under the flags."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui_batch.cli.arguments import flag_values
from tui_batch.core.errors import SettingsError, TemplateError
from tui_batch.core.export import check_output_path
from tui_batch.core.jobfile import (
    JOB_FILE_SUFFIX,
    load_job_file,
    load_job_matrix,
    output_outside,
    save_job_file,
)
from tui_batch.core.jobs import BatchJob
from tui_batch.core.matrix import MatrixVariant, matrix_from_flags, variant_specs
from tui_batch.core.prompt_stream import PromptStream, compile_template, first_chunk, open_stream
from tui_batch.core.run_input import RunInput
from tui_batch.core.run_input import check_input as core_check_input
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.settings import GenerationSettings
from tui_batch.core.text import one_line

# A run prints this many warnings, then how many more there were.
MAX_WARNINGS = 20
# Where the input comes from; given on the command line, they replace the job file's.
INPUT_FLAGS = ("prompts", "template", "template_text")


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What `tui-batch run` was asked to run: the spec, and the job file it came from;
    with a `matrix`, a group of jobs, one for each combination of its values laid over
    the spec's `values` (see `core.matrix`)."""

    spec: RunSpec
    job_file: Path | None = None
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def variants(self) -> list[tuple[MatrixVariant, RunRequest]]:
        """Each combination of the matrix, and the request it makes (named by it)."""
        base = self.spec.name or (self.job_file.stem if self.job_file else None)
        return [
            (variant, replace(self, spec=spec, matrix={}))
            for variant, spec in variant_specs(self.values, self.matrix, base, self.spec.output)
        ]

    @property
    def inputs(self) -> list[Path]:
        """Every file the run reads: no output may replace one."""
        spec = self.spec
        given = (self.job_file, spec.prompts, spec.template, spec.data)
        return [Path(path) for path in given if path is not None]


def run_requests(args: argparse.Namespace) -> list[RunRequest]:
    """A request for each file given (one with none: the flags say it all)."""
    sources: list[Path] = args.source or []
    if len(sources) > 1 and getattr(args, "save_job", None) is not None:
        raise SettingsError("--save-job writes one job file: give one input")
    return [run_request(args, source) for source in sources or [None]]


def run_request(args: argparse.Namespace, source: Path | None) -> RunRequest:
    """The positional argument (a prompts file or a job file) and the flags, laid over
    the job file's values, as one checked spec."""
    flags = flag_values(args)
    given = matrix_from_flags(getattr(args, "matrix", None) or [])
    if source is None or source.suffix.lower() != JOB_FILE_SUFFIX:
        values = {"prompts": source, **flags}
        return RunRequest(RunSpec.from_values(values), None, given, values)
    values = load_job_file(source)
    matrix = {**load_job_matrix(source), **given}
    if any(key in flags for key in INPUT_FLAGS):
        values = {k: v for k, v in values.items() if k not in INPUT_FLAGS}
    # The job file's own output, not the user's: it stays where the job file is.
    if (
        "out" not in flags
        and values.get("out") is not None
        and output_outside(source, values["out"])
    ):
        raise SettingsError(
            f"{source}: [output] file {values['out']} is outside the job file's folder "
            f"and the data dir; to write there, say so: --out {values['out']}"
        )
    values = {**values, **flags}
    return RunRequest(RunSpec.from_values(values), source, matrix, values)


def check_input(request: RunRequest) -> None:
    """One input, as the core checks it (`core.run_input.check_input`)."""
    core_check_input(request.spec, request.job_file)


def open_input(request: RunRequest) -> tuple[PromptStream, RunInput]:
    """The run's input as a stream, and its first chunk (checked, its warnings printed
    to stderr) as a RunInput: what the job is made from."""
    spec = request.spec
    check_input(request)
    stream = open_stream(spec, spec.input_slice)
    first = first_chunk(stream)
    print_warnings(str(stream.source_file), stream.all_warnings())
    return stream, RunInput.from_stream(stream, first, [])


def warn_long_prompts(model: Path, run_input: RunInput, settings: GenerationSettings) -> None:
    """Prompts longer than the context fail when their turn comes: say so now (counted
    as the run counts them, the chat template included)."""
    from tui_batch.backends.factory import length_check

    check = length_check(model, settings.n_ctx, settings.system_prompt, settings.schema_note)
    found = check.too_long(run_input.prompts)
    if not found:
        return
    word = "record" if run_input.template is not None else "line"
    numbers = {id(prompt): number for number, prompt in enumerate(run_input.prompts, start=1)}
    print_warnings(
        str(run_input.source_file),
        [
            (f"{word} {prompt.line}" if prompt.line else f"prompt {numbers[id(prompt)]}")
            + f": too long for the context ({tokens} tokens with the chat template; the "
            f"context holds {settings.n_ctx}): it will fail (raise --n-ctx)"
            for prompt, tokens in found
        ],
    )


def save_job(request: RunRequest, path: Path) -> int:
    """Check the settings as a run would, then write them to a job file."""
    check_input(request)
    job_file = request.job_file
    if job_file is None or path.resolve() != job_file.resolve():
        others = [p for p in request.inputs if p != job_file]
        check_output_path(path, protected=others)
    if request.spec.uses_template:
        compile_template(request.spec)
    if request.matrix:
        request.variants()  # every combination checks out before anything is written
    saved = save_job_file(path, request.spec.to_values(), request.matrix)
    shown = one_line(str(saved))
    print(f"Saved job file {shown}; run it with: tui-batch run {shown}", file=sys.stderr)
    return 0


def check_template_files(job: BatchJob, force: bool) -> None:
    """A template job runs the prompts it stored; if its files changed since, stop
    unless told to go on (the results would not match the files any more)."""
    changes = job.template.changes() if job.template is not None else []
    if not changes:
        return
    said = "; ".join(changes)
    if not force:
        raise TemplateError(
            f"Job {job.job_id}: {said}. Resuming runs the prompts rendered when the job "
            f"was made; to go on with them anyway: tui-batch resume {job.job_id} --force "
            "(or start a new job from the files as they are now)"
        )
    print(
        f"tui-batch: warning: {one_line(said)}; going on with the prompts stored in job "
        f"{job.job_id}",
        file=sys.stderr,
    )


def print_warnings(where: str, warnings: list[str]) -> None:
    for warning in warnings[:MAX_WARNINGS]:
        print(f"tui-batch: warning: {one_line(f'{where}: {warning}')}", file=sys.stderr)
    if len(warnings) > MAX_WARNINGS:
        print(
            f"tui-batch: warning: {one_line(where)}: ... and {len(warnings) - MAX_WARNINGS} "
            "more warnings",
            file=sys.stderr,
        )
