"""What `tui-batch run` runs: a prompts file, or a template over a data file, given by
flags or by a job file whose values sit under the flags."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_batch.cli.arguments import given_settings, server_settings
from tui_batch.core.errors import SettingsError, TemplateError
from tui_batch.core.export import check_output_path
from tui_batch.core.jobfile import (
    BY_SETTING,
    JOB_FILE_SUFFIX,
    load_job_file,
    output_outside,
    save_job_file,
)
from tui_batch.core.jobs import BatchJob, Prompt
from tui_batch.core.prompts import load_prompt_file
from tui_batch.core.settings import GenerationSettings, settings_from_text
from tui_batch.core.templates.render import render_prompts
from tui_batch.core.templates.source import TemplateSource, read_template
from tui_batch.core.templates.template import PromptTemplate
from tui_batch.core.text import one_line

# A run prints this many warnings, then how many more there were.
MAX_WARNINGS = 20
# Where the input comes from; given on the command line, they replace the job file's.
INPUT_KEYS = ("prompts", "template", "template_text")


@dataclass(slots=True)
class RunInput:
    """The prompts to run and where they came from."""

    prompts: list[Prompt]
    source_file: Path
    template: TemplateSource | None = None


def apply_job_file(args: argparse.Namespace) -> None:
    """Split the positional argument into a prompts file or a job file, and fill every
    setting the command line left out from the job file."""
    source: Path | None = args.source
    args.prompts = args.job_file = None
    if source is None or source.suffix.lower() != JOB_FILE_SUFFIX:
        args.prompts = source
        return
    args.job_file = source
    values = load_job_file(source)
    if any(getattr(args, key, None) is not None for key in INPUT_KEYS):
        values = {k: v for k, v in values.items() if k not in INPUT_KEYS}
    # The job file's own output, not the user's: it stays where the job file is.
    if args.out is None and values.get("out") is not None and output_outside(source, values["out"]):
        raise SettingsError(
            f"{source}: [output] file {values['out']} is outside the job file's folder "
            f"and the data dir; to write there, say so: --out {values['out']}"
        )
    for key, value in values.items():
        if getattr(args, key, None) is None:
            setattr(args, key, _as_flag(key, value))


def _as_flag(key: str, value: Any) -> Any:
    """A job file's value as argparse would have given it (numbers as text)."""
    if BY_SETTING[key].kind in ("int", "float"):
        return str(value)
    return value


def job_file_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given (by flags or a job file), keyed as a job file keys them."""
    return {key: getattr(args, key) for key in BY_SETTING if getattr(args, key, None) is not None}


def check_input(args: argparse.Namespace) -> None:
    """One input: a prompts file, or a template (file or text) with a data file."""
    template = args.template is not None or args.template_text is not None
    if args.template is not None and args.template_text is not None:
        raise SettingsError("give --template FILE or --template-text TEXT, not both")
    if args.prompts is not None and template:
        raise SettingsError(
            f"give a prompts file ({args.prompts}) or a template, not both: a template's "
            "prompts come from --data"
        )
    if template and args.data is None:
        raise SettingsError("a template needs --data FILE: the records that fill it")
    if not template and (args.data is not None or args.id_field is not None):
        flag = "--data" if args.data is not None else "--id-field"
        raise SettingsError(f"{flag} fills a template: add --template FILE")
    if args.prompts is None and not template:
        if getattr(args, "job_file", None) is not None:
            raise SettingsError(
                f"{args.job_file} says nothing to run: give [input] prompts, or template "
                "(or template_text) and data"
            )
        raise SettingsError(
            "nothing to run: give a prompts file, a job file (.toml), or --template "
            "FILE --data FILE"
        )


def compile_template(args: argparse.Namespace) -> PromptTemplate:
    if args.template is not None:
        return PromptTemplate(read_template(args.template), str(args.template))
    return PromptTemplate(args.template_text, "--template-text")


def load_input(args: argparse.Namespace) -> RunInput:
    """The prompts, rendered and checked; warnings printed to stderr."""
    check_input(args)
    if args.prompts is not None:
        prompt_file = load_prompt_file(args.prompts)
        print_warnings(str(args.prompts), [str(w) for w in prompt_file.warnings])
        return RunInput(prompt_file.prompts, args.prompts)
    rendered = render_prompts(
        compile_template(args), args.data, template_file=args.template, id_field=args.id_field
    )
    print_warnings(str(args.data), rendered.warnings)
    return RunInput(rendered.prompts, args.data, rendered.source)


def warn_long_prompts(model: Path, run_input: RunInput, settings: GenerationSettings) -> None:
    """Prompts longer than the context fail when their turn comes: say so now (counted
    as the run counts them, the chat template included)."""
    from tui_batch.backends.factory import length_check

    check = length_check(model, settings.n_ctx, settings.system_prompt)
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


def inputs(args: argparse.Namespace) -> list[Path]:
    """Every file the run reads: no output may replace one."""
    given = (args.job_file, args.prompts, args.template, args.data)
    return [Path(path) for path in given if path is not None]


def save_job(args: argparse.Namespace) -> int:
    """Check the settings as a run would, then write them to a job file."""
    check_input(args)
    if args.job_file is None or Path(args.save_job).resolve() != Path(args.job_file).resolve():
        others = [path for path in inputs(args) if path != args.job_file]
        check_output_path(args.save_job, protected=others)
    server = server_settings(args, None)
    settings_from_text(given_settings(args), remote=server is not None)
    if args.template is not None or args.template_text is not None:
        compile_template(args)
    path = save_job_file(args.save_job, job_file_values(args))
    shown = one_line(str(path))
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
