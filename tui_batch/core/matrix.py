"""Matrices: one run's settings with a list of values for some of them, crossed into a
group of jobs (one a combination), each named by its values.

    [matrix]                      # in a job file
    model = ["smollm2", "qwen.gguf"]
    temperature = [0.0, 0.7]

    tui-batch run job.toml --matrix temperature=0,0.7 --matrix model=a.gguf,b.gguf

A key is a setting's name as the command line has it (`temperature`, `system_prompt`,
`server`) or its key in the job file's own table (`system`); each value is checked as
that setting's value is, where it is given (a mistake names the job file's line, or the
flag). A `server` value is one fleet: a URL, or a list of them.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_batch.core.errors import JobFileError, SettingsError
from tui_batch.core.jobs import MAX_JOB_NAME
from tui_batch.core.setting_table import SETTINGS, Setting

if TYPE_CHECKING:
    from tui_batch.core.run_spec import RunSpec

MATRIX_TABLE = "matrix"
# The most jobs one matrix may make: a typo in a list should not queue thousands.
MAX_VARIANTS = 64
# Settings a matrix cannot vary: where the input comes from and where results go (a
# group pairs its jobs on the same prompts), and the job's name (the matrix names them).
FIXED = frozenset({"prompts", "data", "limit", "sample", "range", "shard", "name", "out"})
_BY_NAME = {s.name: s for s in SETTINGS}
_BY_KEY: dict[str, Setting] = {}
for _setting in SETTINGS:
    _BY_KEY.setdefault(_setting.key, _setting)


def matrix_setting(key: str) -> Setting:
    """The setting a matrix key names; a SettingsError for one it cannot vary."""
    setting = _BY_NAME.get(key) or _BY_KEY.get(key)
    if setting is None:
        raise SettingsError(f"unknown setting {key!r:.40} (a setting's name, like temperature)")
    if setting.name in FIXED:
        raise SettingsError(
            f"{key} cannot vary in a matrix: a group's jobs run the same prompts and each "
            "is named by its values"
        )
    return setting


def matrix_from_flags(items: list[str]) -> dict[str, list[Any]]:
    """`--matrix KEY=v1,v2` flags as a matrix of text values (checked as flags are when
    each job's settings are made)."""
    matrix: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        values = [value.strip() for value in text.split(",")] if sep else []
        if not key.strip() or not values or not all(values):
            raise SettingsError(f"--matrix {item!r:.60}: give KEY=VALUE,VALUE (no empty value)")
        setting = matrix_setting(key.strip())
        if setting.name in matrix:
            raise SettingsError(f"--matrix: {setting.name} is given twice")
        if setting.kind == "urls":  # a fleet a value: its URLs joined with +
            matrix[setting.name] = [value.split("+") for value in values]
        else:
            matrix[setting.name] = values
    return matrix


def matrix_from_job_file(table: Any, path: Path, check: Any, line_of: Any) -> dict[str, list[Any]]:
    """A job file's [matrix] table, each value checked by `check(setting, value)` (the
    job file's checker); `line_of(key)` is the key's line, for the message."""
    if not isinstance(table, dict):
        raise JobFileError(f"{path}, line {line_of(MATRIX_TABLE)}: matrix must be a table")
    matrix: dict[str, list[Any]] = {}
    for key, values in table.items():
        where = f"{path}, line {line_of(key)}: matrix.{key}"
        try:
            setting = matrix_setting(key)
            if not isinstance(values, list) or not values:
                raise SettingsError("expected a list of values, like [0.0, 0.7]")
            if setting.name in matrix:
                raise SettingsError(f"{setting.name} is given twice")
            matrix[setting.name] = [check(setting, value) for value in values]
        except SettingsError as exc:
            raise JobFileError(f"{where}: {exc}") from None
    return matrix


@dataclass(frozen=True, slots=True)
class MatrixVariant:
    """One combination of a matrix: its values by setting name, and its label."""

    values: dict[str, Any]
    label: str


def cross(matrix: dict[str, list[Any]]) -> list[MatrixVariant]:
    """Every combination of the matrix's values, in the order given (the first key
    slowest); a SettingsError past MAX_VARIANTS."""
    keys = list(matrix)
    count = 1
    for key in keys:
        count *= len(matrix[key])
    if count > MAX_VARIANTS:
        raise SettingsError(f"the matrix makes {count} jobs; at most {MAX_VARIANTS}")
    return [
        MatrixVariant(dict(zip(keys, combination, strict=True)), _label(keys, combination))
        for combination in itertools.product(*(matrix[key] for key in keys))
    ]


def variant_specs(
    values: dict[str, Any], matrix: dict[str, list[Any]], base: str | None, out: Path | None
) -> list[tuple[MatrixVariant, RunSpec]]:
    """Each combination of the matrix laid over a run's `values`, and the spec it makes:
    named by its values after `base`, and with an `out` file, each its own (out-1.csv,
    out-2.csv, ...). A SettingsError for a value the setting refuses."""
    from tui_batch.core.run_spec import RunSpec

    made = []
    for number, variant in enumerate(cross(matrix), start=1):
        each = {**values, **variant.values, "name": variant_name(base, variant.label)}
        if out is not None:
            each["out"] = out.with_name(f"{out.stem}-{number}{out.suffix}")
        made.append((variant, RunSpec.from_values(each)))
    return made


def variant_name(base: str | None, label: str) -> str:
    """A variant's job name: the run's name with its values, within MAX_JOB_NAME."""
    name = f"{base} [{label}]" if base else label
    return name if len(name) <= MAX_JOB_NAME else name[: MAX_JOB_NAME - 1] + "…"


def new_group_id() -> str:
    """A group's id: `g` and seven hex digits (never a job id tui-batch makes: those are
    eight hex digits)."""
    return "g" + uuid.uuid4().hex[:7]


def matrix_to_job_file(matrix: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A matrix keyed as a job file's [matrix] table keys it (setting names)."""
    return {key: [_plain(value) for value in values] for key, values in matrix.items()}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _label(keys: list[str], combination: tuple[Any, ...]) -> str:
    return " ".join(f"{key}={_shown(value)}" for key, value in zip(keys, combination, strict=True))


def _shown(value: Any) -> str:
    if isinstance(value, Path):
        return value.name
    if isinstance(value, list):
        return "+".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    text = " ".join(str(value).split())
    return text if len(text) <= 24 else text[:23] + "…"
