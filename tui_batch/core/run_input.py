"""What a run runs, from its spec: a prompts file, or a template over a data file (or a
job's answers), checked and loaded. The one door from a `RunSpec` to the prompts of a
job, for the command line and the dashboard alike; `BatchProcessor.create_job_from`
makes the job."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import Prompt
from tui_batch.core.prompts import load_prompt_file
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.templates.render import render_prompts
from tui_batch.core.templates.source import TemplateSource, read_template
from tui_batch.core.templates.template import PromptTemplate


@dataclass(slots=True)
class RunInput:
    """The prompts to run and where they came from, with what a template's front matter
    says of the answers (their schema, how they are scored) and the warnings met while
    reading them (each with the file it is about)."""

    prompts: list[Prompt]
    source_file: Path | None  # None: prompts typed in job setup
    template: TemplateSource | None = None
    schema: AnswerSchema | None = None
    scoring: Scoring | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # The reasoning settings the template's front matter gives.
    reasoning: dict[str, Any] = field(default_factory=dict)

    def settled(self, spec: RunSpec) -> RunSpec:
        """The spec with the template's schema, scoring and reasoning settings, where
        the spec gives none."""
        spec = spec.with_schema(self.schema) if self.schema is not None else spec
        spec = spec.with_generation(self.reasoning)
        return spec.with_scoring(self.scoring) if self.scoring is not None else spec


def check_input(spec: RunSpec, job_file: Path | None = None) -> None:
    """One input: a prompts file, or a template (file or text) with a data file; a
    SettingsError of one line if not (`job_file`: the job file the spec came from)."""
    if spec.template is not None and spec.template_text is not None:
        raise SettingsError("give --template FILE or --template-text TEXT, not both")
    if spec.prompts is not None and spec.uses_template:
        raise SettingsError(
            f"give a prompts file ({spec.prompts}) or a template, not both: a template's "
            "prompts come from --data"
        )
    if spec.uses_template and spec.data is None:
        raise SettingsError("a template needs --data FILE: the records that fill it")
    if not spec.uses_template and (spec.data is not None or spec.id_field is not None):
        flag = "--data" if spec.data is not None else "--id-field"
        raise SettingsError(f"{flag} fills a template: add --template FILE")
    if spec.prompts is None and not spec.uses_template:
        if job_file is not None:
            raise SettingsError(
                f"{job_file} says nothing to run: give [input] prompts, or template "
                "(or template_text) and data"
            )
        raise SettingsError(
            "nothing to run: give a prompts file, a job file (.toml), or --template "
            "FILE --data FILE"
        )


def compile_template(spec: RunSpec) -> PromptTemplate:
    """The spec's template (its file, or its text), compiled and checked."""
    if spec.template is not None:
        return PromptTemplate(
            read_template(spec.template), str(spec.template), spec.template.parent
        )
    return PromptTemplate(spec.template_text or "", "--template-text")


def load_run_input(spec: RunSpec, job_file: Path | None = None) -> RunInput:
    """The spec's prompts, checked, loaded (a template rendered over every record), and
    the warnings met; one line naming the file and line for a mistake."""
    check_input(spec, job_file)
    if spec.prompts is not None:
        prompt_file = load_prompt_file(spec.prompts)
        warnings = [(str(spec.prompts), str(w)) for w in prompt_file.warnings]
        return RunInput(prompt_file.prompts, spec.prompts, warnings=warnings)
    assert spec.data is not None  # check_input saw to it
    template = compile_template(spec)
    rendered = render_prompts(
        template, spec.data, template_file=spec.template, id_field=spec.id_field
    )
    return RunInput(
        rendered.prompts,
        spec.data,
        rendered.source,
        template.schema,
        template.scoring,
        [(str(spec.data), warning) for warning in rendered.warnings],
        template.reasoning,
    )
