"""A job's prompts read from its input a chunk at a time, for a job of any size.

`PromptStream` reads a prompts file, or renders a template over a data file's records,
taking the records its slice says (`core.slices`), and hands out prompts in chunks: the
first goes into the checkpoint when the job is made, the rest as the engine needs them
(`BatchRun` asks for the next chunk when the prompts in the checkpoint run out). Memory
holds a chunk, never the input.

What is checked: every prompt as it is read (its text, a template's variables); the
first chunk's problems are said before the job is made (the first few, then a count);
a later chunk with a problem stops the reading with the same words (the prompts before
it run and are kept). Ids are checked unique across the whole input by the checkpoint
(`store.DuplicateId`); duplicate prompts are warned about within the first chunk.
A job stopped while its input was read in reads on from the record after the last one
it holds, from the same file only (its SHA-256).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tui_batch.core.checkpoint_file import DuplicateId
from tui_batch.core.errors import CheckpointError, PromptFileError, SettingsError, TemplateError
from tui_batch.core.jobs import BatchJob
from tui_batch.core.prompt import Prompt, repeated
from tui_batch.core.prompts import check_prompt_file, prompt_records
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.slices import InputSlice, Reading
from tui_batch.core.templates.records import data_file as data_file_of
from tui_batch.core.templates.records import data_format, iter_records
from tui_batch.core.templates.render import rendered_prompt, with_id_check
from tui_batch.core.templates.source import TemplateSource, file_sha256, read_template
from tui_batch.core.templates.template import PromptTemplate, Validation, render_all

# Prompts a chunk holds: the first is checked before the job is made.
CHUNK = 5000
# Warnings said one by one; then how many more.
MAX_WARNINGS = 20


class PromptStream:
    """The prompts of one input (a prompts file, or `template` over `data`), the records
    `chosen` takes, after record number `after` (a resume's), each `repeats` times."""

    def __init__(
        self,
        *,
        prompts_file: Path | None = None,
        template: PromptTemplate | None = None,
        template_file: Path | None = None,
        data: Path | None = None,
        id_field: str | None = None,
        chosen: InputSlice | None = None,
        repeats: int = 1,
        seed: int | None = None,
        after: int = 0,
    ) -> None:
        self.chosen = chosen or InputSlice()
        self.repeats, self.seed = repeats, seed
        self.warnings: list[str] = []
        self.more_warnings = 0
        self.records = 0  # records of the file read so far (all of them, taken or not)
        self.position = after  # the number of the last record taken in
        self.taken = 0  # prompts handed out (each before its repeats)
        self.done = False
        self.template = template
        self.template_source: TemplateSource | None = None
        # Duplicate prompts are looked for in the first chunk only: memory stays flat.
        self._first_seen: dict[tuple[str | None, str], int] = {}
        if template is not None:
            assert data is not None
            self.source_file = data_file_of(data)
            data_format(self.source_file)  # an unknown kind of file is said before it is read
            if id_field is not None and not id_field.strip():
                raise TemplateError("Id column (--id-field): give a column name")
            self.sha256 = file_sha256(self.source_file)
            self.template_source = TemplateSource(
                text=template.text,
                sha256=template.sha256,
                data_file=str(self.source_file.resolve()),
                data_sha256=self.sha256,
                template_file=str(Path(template_file).resolve()) if template_file else None,
                id_field=id_field,
            )
            self.check_ids = id_field is not None  # else ids are record numbers
            self._items = self._rendered(template, id_field, after)
        else:
            assert prompts_file is not None
            self.source_file = check_prompt_file(prompts_file)
            self.sha256 = file_sha256(self.source_file, "prompts file", PromptFileError)
            self.check_ids = True
            self._items = self._from_file(after)

    @property
    def word(self) -> str:
        return "record" if self.template is not None else "line"

    def reading(self) -> Reading | None:
        """What the job keeps of where its reading stands (None: all read in)."""
        return None if self.done else Reading(self.position, self.sha256)

    def chunk(self, size: int = CHUNK) -> list[Prompt]:
        """The next prompts (`size` records' worth, repeated), empty at the end; a
        PromptFileError or TemplateError naming the records for a problem in them."""
        found = Validation()
        prompts: list[Prompt] = []
        for position, item in self._items:
            self.position = position
            if isinstance(item, str):
                found.problem(item)
            else:
                item.record = position
                prompts.append(item)
            if len(prompts) + found.failed >= size:
                break
        else:
            self.done = True
            if self.template_source is not None:
                self.template_source = replace(self.template_source, records=self.records)
        if found.failed:
            where = f"{self.source_file}"
            if self.taken:
                where += f" (after the {self.taken:,} prompts read in before)"
            found.records = len(prompts) + found.failed
            found.check(where)
        self.taken += len(prompts)
        if self.taken >= CHUNK:
            self._first_seen.clear()
        return repeated(prompts, self.repeats, self.seed)

    def duplicate(
        self, error: DuplicateId, stored: Sequence[Prompt], chunk: Sequence[Prompt]
    ) -> PromptFileError | TemplateError:
        """`error` in this input's words: the lines (records) of both prompts, each in
        the job's `stored` prompts or the `chunk` being added after them."""

        def prompt(index: int) -> Prompt:
            return stored[index] if index < len(stored) else chunk[index - len(stored)]

        first, again = prompt(error.first), prompt(error.index)
        text = (
            f"{self.source_file}, {self.word} {again.line}: duplicate id "
            f"{error.custom_id!r:.60} (first on {self.word} {first.line})"
        )
        return TemplateError(text) if self.template is not None else PromptFileError(text)

    def all_warnings(self) -> list[str]:
        """The warnings said one by one, then how many more there were."""
        more = [f"... and {self.more_warnings:,} more warnings"] if self.more_warnings else []
        return self.warnings + more

    def _warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)
        else:
            self.more_warnings += 1

    def _counted(self, records: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        for number, record in records:
            self.records = number
            yield number, record

    def _from_file(self, after: int) -> Iterator[tuple[int, Prompt | str]]:
        # Records are made prompts once the slice keeps them (a sample parses its own).
        records, parse = prompt_records(self.source_file)
        numbered = self._counted(enumerate(records, start=1))
        for position, record in self.chosen.select(numbered):
            if position <= after:
                continue
            prompt = parse(record)
            where = f"line {prompt.line}" if prompt.line else f"item {position}"
            if not prompt.text.strip() and not prompt.messages:
                self._warn(f"{where}: empty prompt skipped")
                continue
            if self.taken < CHUNK and not prompt.messages:
                first = self._first_seen.setdefault((prompt.system, prompt.text), position)
                if first != position:
                    self._warn(f"{where}: duplicate of an earlier prompt")
            yield position, prompt

    def _rendered(
        self, template: PromptTemplate, id_field: str | None, after: int
    ) -> Iterator[tuple[int, Prompt | str]]:
        path = self.source_file
        taken = (
            (number, record)
            for number, record in self.chosen.select(self._counted(iter_records(path)))
            if number > after
        )
        numbers: list[int] = []  # the number of the record being rendered

        def noted(items: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
            for number, record in items:
                numbers.append(number)
                yield number, record

        for item in render_all(template, noted(with_id_check(taken, id_field, path))):
            number = numbers.pop()
            if isinstance(item, str):
                yield number, item
            elif not item.prompt.strip():
                self._warn(f"record {item.number}: empty prompt skipped")
            else:
                yield number, rendered_prompt(item, id_field, path)


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


def open_stream(
    spec: RunSpec, chosen: InputSlice | None, after: int = 0, repeats: int | None = None
) -> PromptStream:
    """The stream of a run's input as its spec gives it (see `core.run_input`), each
    prompt `repeats` times (None: the spec's repeats)."""
    check_input(spec)
    seed = spec.generation.seed
    repeats = spec.options.repeats if repeats is None else repeats
    if spec.prompts is not None:
        return PromptStream(
            prompts_file=spec.prompts, chosen=chosen, repeats=repeats, seed=seed, after=after
        )
    return PromptStream(
        template=compile_template(spec),
        template_file=spec.template,
        data=spec.data,
        id_field=spec.id_field,
        chosen=chosen,
        repeats=repeats,
        seed=seed,
        after=after,
    )


def reopen_stream(job: BatchJob) -> PromptStream:
    """The stream of a job stopped while its input was read in, from the record after
    the last it holds; a CheckpointError if its input changed or is gone since."""
    reading = job.reading
    assert reading is not None
    template = job.template
    given: dict[str, Any] = {
        "chosen": job.input_slice,
        "repeats": job.repeats,
        "seed": job.settings.seed,
        "after": reading.position,
    }
    if template is not None:
        folder = Path(template.template_file).parent if template.template_file else None
        path = Path(template.data_file)
        given.update(
            template=PromptTemplate(
                template.text, template.template_file or "--template-text", folder
            ),
            template_file=Path(template.template_file) if template.template_file else None,
            data=path,
            id_field=template.id_field,
        )
    elif job.source_file:
        path = given["prompts_file"] = Path(job.source_file)
    else:
        raise CheckpointError(f"Job {job.job_id} has no input file to read on from")
    try:
        stream = PromptStream(**given)
    except (PromptFileError, TemplateError, OSError) as exc:
        raise CheckpointError(
            f"Job {job.job_id} stopped while reading its input ({job.total_prompts:,} prompts "
            f"in) and cannot read on: {exc}"
        ) from None
    if stream.sha256 != reading.sha256:
        raise CheckpointError(
            f"Job {job.job_id} stopped while reading its input ({job.total_prompts:,} prompts "
            f"in), and {path} has changed since: it cannot read on from where it stopped. "
            "Start the job again (tui-batch run ...)"
        )
    stream.taken = job.total_prompts // max(1, job.repeats)
    return stream


def first_chunk(stream: PromptStream) -> list[Prompt]:
    """The stream's first chunk, which must hold a prompt: the job is made from it."""
    prompts = stream.chunk()
    if not prompts:
        if stream.template is not None:
            why = "no records" if not stream.records else "no records that render to text"
            if not stream.chosen.whole and stream.records:
                why = f"no records in {stream.chosen.describe()}"
            raise TemplateError(f"No prompts: {stream.source_file} has {why}")
        if not stream.chosen.whole and stream.records:
            raise PromptFileError(
                f"No prompts found in {stream.source_file} ({stream.chosen.describe()})"
            )
        raise PromptFileError(f"No prompts found in {stream.source_file}")
    return prompts
