"""Job files: every setting of a run in one TOML file, read and written.

    tui-batch run job.toml            # flags given as well override the file
    tui-batch run ... --save-job job.toml

A job file's values are keyed, once read, by the names the command line uses for them
(`max_tokens`, `n_ctx`, `server`, `out`, ...): `load_job_file` returns those, checked;
`job_file_text` writes them back. Paths in a job file are relative to its folder. A key
the schema does not know, or a value of the wrong type or out of range, is a
JobFileError naming the file, the line and the key. An API key never goes in a job file:
`[server] api_key_env` names the environment variable that holds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import tomllib

from tui_batch.core.errors import JobFileError, SettingsError, read_utf8
from tui_batch.core.export import EXPORT_FORMATS
from tui_batch.core.matrix import MATRIX_TABLE, matrix_from_job_file, matrix_setting
from tui_batch.core.paths import data_dir
from tui_batch.core.scratch import write_atomically
from tui_batch.core.servers import check_key_env, parse_endpoint
from tui_batch.core.setting_table import SETTINGS, TABLES, Setting
from tui_batch.core.settings import (
    ErrorStrategy,
    check,
    check_stop,
    parse_cache_mode,
    parse_number,
)
from tui_batch.core.structured.schema import AnswerSchema, parse_choices, parse_schema
from tui_batch.core.templates.job_records import JOB_PREFIX
from tui_batch.core.templates.template import TOML_POSITION, key_line

JOB_FILE_SUFFIX = ".toml"


# Each setting by where a job file keeps it.
BY_KEY: dict[tuple[str, str], Setting] = {(s.table, s.key): s for s in SETTINGS}
_KINDS = {
    "path": "a path (text)",
    "text": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "urls": "a list of URLs",
    "stop": "a string or a list of strings",
    "schema": "a JSON Schema (a table, inline JSON, a .json file) or fields as text",
    "choices": "a list of labels, or text like a,b,c",
}


def load_job_file(path: str | Path) -> dict[str, Any]:
    """The settings a job file gives, keyed by setting name (paths made absolute from
    the file's folder); a JobFileError naming the line and key for anything wrong."""
    path = Path(path)
    text = read_utf8(path, "job file", JobFileError)
    try:
        document = tomllib.loads(text)
    except RecursionError:
        raise JobFileError(f"{path}: nested too deeply to read") from None
    except tomllib.TOMLDecodeError as exc:
        found = TOML_POSITION.search(str(exc))
        where = f"{path}, line {found.group(1)}" if found else str(path)
        raise JobFileError(
            f"{where}: not valid TOML: {TOML_POSITION.sub('', str(exc)).strip()}"
        ) from None
    values: dict[str, Any] = {}
    for table, contents in document.items():
        if table == MATRIX_TABLE:
            continue  # a group's values, read by `load_job_matrix`
        if table not in TABLES:
            raise JobFileError(
                f"{path}, line {_table_line(text, table)}: unknown "
                f"{'table' if isinstance(contents, dict) else 'key'} {table!r:.40} "
                f"(known tables: {', '.join(f'[{t}]' for t in TABLES)})"
            )
        if not isinstance(contents, dict):
            raise JobFileError(
                f"{path}, line {key_line(text, table)}: {table!r} must be a table: [{table}]"
            )
        for name, value in contents.items():
            setting = BY_KEY.get((table, name))
            where = f"{path}, line {key_line(text, name, table)}: {table}.{name}"
            if setting is None:
                known = ", ".join(s.key for s in SETTINGS if s.table == table)
                raise JobFileError(f"{where}: unknown key (known in [{table}]: {known})")
            try:
                values[setting.name] = _checked(setting, value, path.resolve().parent)
            except SettingsError as exc:
                raise JobFileError(f"{where}: {exc}") from None
    return values


def load_job_matrix(path: str | Path) -> dict[str, list[Any]]:
    """A job file's [matrix] table (empty: none), each value checked as the setting's
    value is (see `core.matrix`); a JobFileError naming the line for a mistake."""
    path = Path(path)
    text = read_utf8(path, "job file", JobFileError)
    try:
        table = tomllib.loads(text).get(MATRIX_TABLE)
    except (RecursionError, tomllib.TOMLDecodeError):
        return {}  # said by `load_job_file`, which reads the file first
    if table is None:
        return {}
    folder = path.resolve().parent
    return matrix_from_job_file(
        table,
        path,
        lambda setting, value: _checked(setting, value, folder),
        lambda key: key_line(text, key, MATRIX_TABLE),
    )


def output_outside(job_file: str | Path, output: str | Path) -> bool:
    """Whether a job file's `[output] file` lies outside the job file's folder and the
    data dir. A shared job file could name `../../.bashrc`: writing there needs the
    user's say-so (`--out` on the command line, or yes in the dashboard)."""
    target = Path(output).expanduser().resolve()
    allowed = (Path(job_file).resolve().parent, data_dir().resolve())
    return not any(target == folder or folder in target.parents for folder in allowed)


def _table_line(text: str, table: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(f"[{table}]") or stripped.startswith(f"{table} ="):
            return number
    return 1


def _checked(setting: Setting, value: Any, folder: Path) -> Any:
    """A job file's value for `setting`, checked as a flag's would be (paths made
    absolute from `folder`)."""
    kind = setting.kind
    expected = _KINDS[kind]
    wrong = SettingsError(f"expected {expected}, got {_shown(value)}")
    if kind in ("path", "text"):
        if not isinstance(value, str):
            raise wrong
        if kind == "path":
            if not value.strip():
                raise SettingsError("the path is empty")
            if setting.name == "data" and value.startswith(JOB_PREFIX):
                return Path(value)  # a job's results, not a file
            return Path(os.path.normpath(folder / Path(value).expanduser()))
        if setting.name == "error_strategy":
            return str(ErrorStrategy.parse(value))
        if setting.name == "cache":
            return parse_cache_mode(value)
        if setting.name == "format" and value not in EXPORT_FORMATS:
            raise SettingsError(f"expected one of {', '.join(EXPORT_FORMATS)}, got {value!r:.40}")
        if setting.name == "api_key_env":
            return check_key_env(value)
        if setting.words and value.strip().lower() not in setting.words:
            words = ", ".join(w for w in setting.words if w)
            raise SettingsError(f"expected one of {words}, got {value!r:.40}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind == "urls":
        urls = [value] if isinstance(value, str) else value
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise wrong
        for url in urls:
            parse_endpoint(url)
        return urls
    if kind == "stop":
        return check_stop(value, "expected")
    if kind == "schema":
        if not isinstance(value, (str, dict, Path)):
            raise wrong
        schema = parse_schema(value, folder)  # checked now: a mistake names the line
        return Path(schema.source) if schema.kind == "file" else value
    if kind == "choices":
        if not isinstance(value, (str, list)):
            raise wrong
        return list(parse_choices(value).choices)
    return check(setting.name, value)


# a number: its type and range, as for a flag


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{value!r:.40}"


def job_file_text(
    values: dict[str, Any], folder: Path, matrix: dict[str, list[Any]] | None = None
) -> str:
    """A job file holding `values` (keyed by setting name; None and absent are left out),
    paths written relative to `folder` where they lie under it. Every value is checked
    as reading the file checks it, before anything is written (numbers may be given as
    text, a flag's value or a field's): so a key typed where the name of its variable
    goes is refused here, from the CLI and the dashboard alike, and never written. A
    `matrix` is written as the [matrix] table."""
    lines = [
        "# tui-batch job file: run it with `tui-batch run THIS_FILE`;",
        "# flags given on that command line override what it says.",
    ]
    for table in TABLES:
        entries = []
        for setting in SETTINGS:
            value = values.get(setting.name)
            if setting.table != table or value is None:
                continue
            value = _written(setting, value, folder)
            if value is not None:
                entries.append(f"{setting.key} = {toml_value(value)}")
        if entries:
            lines += ["", f"[{table}]", *entries]
    if matrix:
        lines += ["", f"[{MATRIX_TABLE}]"]
        for name, options in matrix.items():
            written = [_written(matrix_setting(name), value, folder) for value in options]
            lines.append(f"{name} = {toml_value(written, block=False)}")
    return "\n".join(lines) + "\n"


def _written(setting: Setting, value: Any, folder: Path) -> Any:
    """`value` of `setting` as a job file in `folder` says it, checked as reading the
    file checks it (None: a number left blank)."""
    try:
        if setting.is_number and isinstance(value, str):
            value = parse_number(setting.name, value)  # text typed in a flag or a field
            if value is None:
                return None
        job_data = str(value).startswith(JOB_PREFIX)
        if setting.kind == "path" and not job_data:  # relative to the user, not the file
            value = str(Path(value).expanduser().resolve())
        if setting.kind == "schema":
            value = _schema_value(value)
        value = _checked(setting, value, folder)
        if setting.kind == "schema":
            value = _schema_text(value, folder)
    except SettingsError as exc:
        raise JobFileError(f"{setting.table}.{setting.key}: {exc}") from None
    if setting.kind == "path" and not str(value).startswith(JOB_PREFIX):
        value = _relative(Path(value), folder)
    return value


def _schema_value(value: Any) -> Any:
    """A schema as given to be written: a file's path made absolute (from where the
    user is, not the job file), anything else as it is."""
    if isinstance(value, AnswerSchema):
        value = value.setting_value()
    if isinstance(value, Path):
        return value.expanduser().resolve()
    return value


def _schema_text(value: Any, folder: Path) -> str:
    """What a job file says of a schema: its file (relative to the job file where it
    lies under it), its short form as given, or its JSON."""
    if isinstance(value, Path):
        return _relative(value, folder)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def save_job_file(
    path: str | Path, values: dict[str, Any], matrix: dict[str, list[Any]] | None = None
) -> Path:
    """Write a job file (replacing one there); a JobFileError if it cannot be written.
    The values are checked by reading the file back."""
    path = Path(path).expanduser()
    if path.suffix.lower() != JOB_FILE_SUFFIX:
        raise JobFileError(f"A job file's name ends in {JOB_FILE_SUFFIX}: {path}")
    text = job_file_text(values, path.resolve().parent, matrix)
    try:
        write_atomically(path, lambda out: out.write(text))
    except OSError as exc:
        raise JobFileError(f"Cannot write job file {path}: {exc.strerror or exc}") from None
    return path


def _relative(path: Path, folder: Path) -> str:
    path = path.resolve()
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def toml_value(value: Any, block: bool = True) -> str:
    """A TOML literal for a str, bool, int, float or list of those; multi-line text as a
    literal block where `block` allows and the text fits one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v, block=False) for v in value) + "]"
    text = str(value)
    if block and "\n" in text and _fits_literal_block(text):
        # Multi-line text (a template) stays readable: a literal block, taken as it is.
        return f"'''\n{text}'''"
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _fits_literal_block(text: str) -> bool:
    controls = any(ord(c) < 32 and c not in "\n\t" or c == "\x7f" for c in text)
    return "'''" not in text and not text.endswith("'") and not controls
