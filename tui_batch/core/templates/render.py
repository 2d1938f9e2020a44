"""A job's prompts made from a template and a data file, and what the job keeps of both.

Every record is rendered before the job is made: a variable missing from any record, or
a record that cannot be rendered, stops everything with the first few problems named
(`TemplateError`), so a job never starts on half its data. The job then stores the
rendered prompts, each with its record's id and fields, and `TemplateSource`: the
template's text and hash and the data file's path and hash. Resume runs the stored
prompts and never reads the files again; `TemplateSource.changes` tells it whether they
changed since (then it stops unless forced).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.errors import TemplateError
from tui_batch.core.jobs import Prompt
from tui_batch.core.templates.records import data_file as data_file_of
from tui_batch.core.templates.records import data_format, iter_records
from tui_batch.core.templates.source import TemplateSource, file_sha256
from tui_batch.core.templates.template import PromptTemplate, Rendered, Validation, render_all

# An id taken from a data column is at most this long (as ids in prompt files).
MAX_ID_LENGTH = 512


@dataclass(slots=True)
class TemplatePrompts:
    """The prompts rendered from a data file, warnings about them (one line each, with
    the record's number), and the source to store in the job."""

    prompts: list[Prompt]
    source: TemplateSource
    warnings: list[str] = field(default_factory=list)
    empty: int = 0


def render_prompts(
    template: PromptTemplate,
    data_file: str | Path,
    *,
    template_file: str | Path | None = None,
    id_field: str | None = None,
    cancel: threading.Event | None = None,
) -> TemplatePrompts:
    """Render every record of `data_file`; a TemplateError listing the first problems
    (one line each) if any record cannot be rendered, a DataFileError if the file is
    malformed. Empty renders are skipped with a warning. `cancel`, once set, stops it
    (a TemplateError saying so) between records."""
    data_path = data_file_of(data_file)
    data_format(data_path)  # an unknown kind of file is said before it is read
    digest = file_sha256(data_path)
    if id_field is not None and not id_field.strip():
        raise TemplateError("Id column (--id-field): give a column name")
    prompts: list[Prompt] = []
    found = Validation()
    warnings: list[str] = []
    ids: dict[str, int] = {}
    for item in render_all(template, with_id_check(iter_records(data_path), id_field, data_path)):
        if cancel is not None and cancel.is_set():
            raise TemplateError("Rendering stopped")
        rendered = found.add(item)
        if isinstance(item, Rendered) and rendered is None:
            warnings.append(f"record {item.number}: empty prompt skipped")
        if rendered is None:
            continue
        prompt = rendered_prompt(rendered, id_field, data_path)
        first = ids.setdefault(prompt.custom_id or "", rendered.number)
        if first != rendered.number:
            raise TemplateError(
                f"{data_path}, record {rendered.number}: duplicate id "
                f"{prompt.custom_id!r:.60} in column {id_field!r} (first in record {first})"
            )
        prompts.append(prompt)
    found.check(str(data_path))
    records = found.records
    if not prompts:
        why = "no records" if not records else "no records that render to text"
        raise TemplateError(f"No prompts: {data_path} has {why}")
    source = TemplateSource(
        text=template.text,
        sha256=template.sha256,
        data_file=str(data_path.resolve()),
        data_sha256=digest,
        template_file=str(Path(template_file).resolve()) if template_file else None,
        id_field=id_field,
        records=records,
    )
    return TemplatePrompts(prompts, source, warnings, empty=found.empty)


def with_id_check(records: Any, id_field: str | None, path: Path) -> Any:
    """The records; one without the id column stops everything at once: a column
    name mistyped would otherwise be reported for every record."""
    for number, record in records:
        if id_field is not None and id_field not in record:
            raise TemplateError(
                f"{path}, record {number}: no id column {id_field!r} "
                f"(found: {', '.join(list(map(str, record))[:10]) or 'nothing'})"
            )
        yield number, record


def rendered_prompt(item: Rendered, id_field: str | None, path: Path) -> Prompt:
    text = item.prompt.strip()
    if id_field is None:
        custom_id = str(item.number)
    else:
        value = item.record[id_field]
        custom_id = "" if value is None else str(value).strip()
        if not custom_id or len(custom_id) > MAX_ID_LENGTH:
            raise TemplateError(
                f"{path}, record {item.number}: the id in column {id_field!r} is "
                + ("empty" if not custom_id else f"over {MAX_ID_LENGTH} characters")
            )
    return Prompt(
        text=text,
        custom_id=custom_id,
        system=item.system,
        options=item.options,
        line=item.number,
        variables={str(k): _jsonable(v) for k, v in item.record.items()},
    )


def _jsonable(value: Any) -> Any:
    """A record's value as JSON can hold it (Parquet gives dates, decimals, bytes)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
