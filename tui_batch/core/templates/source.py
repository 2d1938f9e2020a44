"""What a template job keeps of its template and data file, to tell on resume whether
either changed since the job was made."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tui_batch.core.errors import (
    CheckpointError,
    DataFileError,
    TemplateError,
    TuiBatchError,
    read_utf8,
    reading,
)


def file_sha256(
    path: Path, what: str = "data file", error: type[TuiBatchError] = DataFileError
) -> str:
    """The SHA-256 of a data file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with reading(path, what, error), path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class TemplateSource:
    """Where a template job's prompts came from: kept in the job, checked on resume.

    `template_file` is None for a template typed in (`--template-text`, the dashboard);
    `id_field` is the data column that names each record (None: its number)."""

    text: str
    sha256: str
    data_file: str
    data_sha256: str
    template_file: str | None = None
    id_field: str | None = None
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TemplateSource:
        """A source as `to_dict` wrote it; anything else is a CheckpointError."""
        if not isinstance(data, dict):
            raise CheckpointError("the job's template record is not an object")
        values = {}
        for item in fields(cls):
            value = data.get(item.name)
            wanted = int if item.name == "records" else str
            optional = item.name in ("template_file", "id_field", "records")
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise CheckpointError(f"the job's template record has a wrong {item.name}")
            values[item.name] = value
        return cls(**values)

    def changes(self) -> list[str]:
        """What differs on disk from when the job was made: one line each, empty if
        nothing (a file that is gone or unreadable counts as changed)."""
        # The template is compared by what it says (the job hashed the text it read: a
        # file saved again with a BOM or CRLF reads the same), the data by its bytes.
        checks = [("data file", self.data_file, self.data_sha256, file_sha256)]
        if self.template_file:
            checks.insert(0, ("template file", self.template_file, self.sha256, template_sha256))
        found = []
        for what, name, digest, hash_now in checks:
            try:
                if hash_now(Path(name)) != digest:
                    found.append(f"the {what} {name} changed since the job was made")
            except (DataFileError, TemplateError) as exc:
                found.append(f"{exc} (the job was made from it)")
        return found


def read_template(path: Path) -> str:
    """A template file's text (UTF-8, a BOM dropped, line ends as \\n)."""
    text = read_utf8(path, "template file", TemplateError)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def template_sha256(path: Path) -> str:
    """The hash of what a template file says (as `PromptTemplate.sha256` has it)."""
    return text_sha256(read_template(path))


def text_sha256(text: str) -> str:
    """A template's hash: of its text as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
