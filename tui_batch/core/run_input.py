"""What a run runs, from its spec: a prompts file, or a template over a data file (or a
job's answers), checked and loaded. The one door from a `RunSpec` to the prompts of a
job, for the command line and the dashboard alike; `BatchProcessor.create_job_from`
makes the job."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import DuplicateId
from tui_batch.core.jobs import Prompt
from tui_batch.core.prompt_stream import PromptStream, check_input, first_chunk, open_stream
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.templates.source import TemplateSource


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

    @classmethod
    def from_stream(
        cls, stream: PromptStream, prompts: list[Prompt], warnings: list[tuple[str, str]]
    ) -> RunInput:
        """`prompts` read from `stream`, with its template's schema, scoring and
        reasoning settings."""
        template = stream.template
        if template is None:
            return cls(prompts, stream.source_file, warnings=warnings)
        return cls(
            prompts,
            stream.source_file,
            stream.template_source,
            template.schema,
            template.scoring,
            warnings,
            template.reasoning,
        )

    def settled(self, spec: RunSpec) -> RunSpec:
        """The spec with the template's schema, scoring and reasoning settings, where
        the spec gives none."""
        spec = spec.with_schema(self.schema) if self.schema is not None else spec
        spec = spec.with_generation(self.reasoning)
        return spec.with_scoring(self.scoring) if self.scoring is not None else spec


def load_run_input(spec: RunSpec, job_file: Path | None = None) -> RunInput:
    """The spec's prompts (the records its slice takes), checked, loaded (a template
    rendered over every record), and the warnings met; one line naming the file and
    line for a mistake. For a job of any size, `core.prompt_stream` reads them a chunk
    at a time instead."""
    check_input(spec, job_file)
    stream = open_stream(spec, spec.input_slice, repeats=1)
    prompts = first_chunk(stream)
    while not stream.done:
        prompts += stream.chunk()
    source = stream.source_file
    _check_ids(prompts, stream)
    return RunInput.from_stream(stream, prompts, [(str(source), w) for w in stream.all_warnings()])


def _check_ids(prompts: list[Prompt], stream: PromptStream) -> None:
    """Two prompts with one id: the error the stream words (a job streamed in has its
    checkpoint check them instead)."""
    if not stream.check_ids:
        return
    first: dict[str, int] = {}
    for index, prompt in enumerate(prompts):
        if prompt.custom_id is not None:
            seen = first.setdefault(prompt.custom_id, index)
            if seen != index:
                raise stream.duplicate(DuplicateId(prompt.custom_id, seen, index), [], prompts)
