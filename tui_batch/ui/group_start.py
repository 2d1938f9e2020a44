"""A job file's matrix started from job setup: every combination of its values checked
as `tui-batch run` checks a job (its input's first chunk read, its model found or its
servers checked, each set once), then all made as one group, so that a group stopped
anywhere resumes whole. Run from a thread worker: it reads files and asks servers."""

from __future__ import annotations

from dataclasses import dataclass
from threading import Event

from tui_batch.backends.job_checks import ServerChecks
from tui_batch.core.errors import SettingsError, TuiBatchError
from tui_batch.core.jobs import BatchJob
from tui_batch.core.matrix import MatrixVariant, new_group_id
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.run_input import RunInput
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.servers import ServerSettings
from tui_batch.ui.job_input import first_input, input_warnings


@dataclass(slots=True)
class GroupJob:
    """One combination, checked and ready to be made."""

    variant: MatrixVariant
    spec: RunSpec
    stream: PromptStream
    run_input: RunInput
    model: str
    model_path: str | None = None
    server: ServerSettings | None = None


def check_group(
    processor: BatchProcessor, variants: list[tuple[MatrixVariant, RunSpec]], cancelled: Event
) -> tuple[list[GroupJob], list[str]]:
    """Every combination checked (a TuiBatchError naming the first that is not right),
    and what to warn of before they start; nothing is made."""
    from tui_batch.models.catalog import resolve_model

    checks = ServerChecks()
    checked, warnings = [], []
    for variant, spec in variants:
        if cancelled.is_set():
            break
        try:
            stream, run_input = first_input(spec)
            processor.check_job_from(run_input, spec)
            spec = run_input.settled(spec)
            if spec.server is not None:
                if spec.model is None:
                    raise SettingsError("no model name: type the name the servers serve it by")
                server, model, said = checks(spec)
                job = GroupJob(variant, spec, stream, run_input, model, server=server)
                warnings += said
            else:
                found = resolve_model(spec.model)
                path = str(found.path)
                job = GroupJob(variant, spec, stream, run_input, found.id, model_path=path)
            said_of_input = input_warnings(stream, run_input, spec, job.model_path)
        except TuiBatchError as exc:
            raise SettingsError(f"{variant.label}: {exc}") from None
        if said_of_input:
            warnings.append(f"{variant.label}: {said_of_input}")
        checked.append(job)
    return checked, warnings


def make_group(
    processor: BatchProcessor, checked: list[GroupJob]
) -> tuple[str, list[tuple[BatchJob, PromptStream]]]:
    """Every job of the group made, with one new group id, each named by its values."""
    processor.store.check_writable()
    group_id = new_group_id()
    made = []
    for one in checked:
        job = processor.create_streamed_job(
            one.model,
            one.stream,
            one.run_input.prompts,
            one.spec,
            model_path=one.model_path,
            server=one.server,
            group_id=group_id,
            variant=one.variant.label,
        )
        made.append((job, one.stream))
    return group_id, made
