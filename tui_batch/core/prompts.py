"""Reading prompts from .txt, .json, .jsonl and .csv files, with errors that say where."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.errors import PromptFileError
from tui_batch.core.jobs import Prompt

SUPPORTED_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv")
# Per-request overrides an OpenAI Batch API body may carry that we honour.
REQUEST_OPTIONS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop")


@dataclass(slots=True)
class PromptWarning:
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(slots=True)
class PromptFile:
    path: Path
    prompts: list[Prompt]
    warnings: list[PromptWarning] = field(default_factory=list)


def load_prompt_file(path: str | Path) -> PromptFile:
    """Load and validate a prompts file, choosing the format by extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise PromptFileError(
            f"Unsupported prompts file type {suffix or '(none)'!r}: {path} "
            f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    text = _read_text(path)
    parse = {".txt": _parse_txt, ".json": _parse_json, ".jsonl": _parse_jsonl, ".csv": _parse_csv}
    prompts = list(parse[suffix](text, path))
    result = PromptFile(path=path, prompts=[], warnings=[])
    _validate(prompts, result)
    if not result.prompts:
        raise PromptFileError(f"No prompts found in {path}")
    return result


def prompts_from_lines(lines: Iterable[str]) -> PromptFile:
    """Prompts typed by a person, one per line, with the .txt file rules."""
    prompts = list(_parse_txt("\n".join(lines), Path("<typed>")))
    result = PromptFile(path=Path("<typed>"), prompts=[], warnings=[])
    _validate(prompts, result)
    return result


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"Prompts file not found: {path}") from None
    except IsADirectoryError:
        raise PromptFileError(f"Prompts path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise PromptFileError(f"Cannot read prompts file {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PromptFileError(
            f"{path}:{line}:{column}: invalid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def _validate(prompts: list[Prompt], result: PromptFile) -> None:
    first_seen: dict[tuple[str | None, str], int | None] = {}
    ids: dict[str, int | None] = {}
    for prompt in prompts:
        if not prompt.text.strip() and not prompt.messages:
            result.warnings.append(PromptWarning(prompt.line, "empty prompt skipped"))
            continue
        if prompt.custom_id is not None:
            if prompt.custom_id in ids:
                raise PromptFileError(
                    f"{result.path}:{prompt.line}: duplicate id {prompt.custom_id!r} "
                    f"(first on line {ids[prompt.custom_id]})"
                )
            ids[prompt.custom_id] = prompt.line
        key = (prompt.system, prompt.text)
        if key in first_seen and not prompt.messages:
            where = f"line {first_seen[key]}" if first_seen[key] else "an earlier prompt"
            result.warnings.append(PromptWarning(prompt.line, f"duplicate of {where}"))
        else:
            first_seen.setdefault(key, prompt.line)
        result.prompts.append(prompt)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines split on newlines only: a JSON string may hold U+2028 and friends."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")


def _parse_txt(text: str, path: Path) -> Iterator[Prompt]:
    for number, line in _lines(text):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield Prompt(text=stripped, line=number)


def _json_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> PromptFileError:
    return PromptFileError(
        f"{path}:{exc.lineno + line_offset}:{exc.colno}: invalid JSON: {exc.msg}"
    )


def _parse_json(text: str, path: Path) -> Iterator[Prompt]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc) from None
    if not isinstance(data, list):
        raise PromptFileError(
            f"{path}: expected a JSON array of prompts, got {type(data).__name__}"
        )
    for number, item in enumerate(data, start=1):
        yield _prompt_from_item(item, f"{path}: item {number}", line=None)


def _parse_jsonl(text: str, path: Path) -> Iterator[Prompt]:
    for number, line in _lines(text):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(path, exc, line_offset=number - 1) from None
        yield _prompt_from_item(item, f"{path}:{number}", line=number)


def _parse_csv(text: str, path: Path) -> Iterator[Prompt]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [name.strip().lower() for name in reader.fieldnames or []]
    if "prompt" not in columns:
        raise PromptFileError(
            f"{path}:1: no 'prompt' column (found: {', '.join(columns) or 'nothing'})"
        )
    reader.fieldnames = columns
    try:
        for row in reader:
            line = reader.line_num
            yield Prompt(
                text=(row.get("prompt") or "").strip(),
                custom_id=(row.get("custom_id") or row.get("id") or "").strip() or None,
                system=(row.get("system") or "").strip() or None,
                line=line,
            )
    except csv.Error as exc:
        raise PromptFileError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from None


def _prompt_from_item(item: Any, where: str, line: int | None) -> Prompt:
    if isinstance(item, str):
        return Prompt(text=item.strip(), line=line)
    if not isinstance(item, dict):
        raise PromptFileError(f'{where}: expected a string or an object with "prompt"')
    if isinstance(item.get("body"), dict):
        return _prompt_from_openai_request(item, where, line)
    text = item.get("prompt")
    if not isinstance(text, str):
        raise PromptFileError(f'{where}: object has no string "prompt" field')
    custom_id = item.get("custom_id", item.get("id"))
    system = item.get("system")
    if system is not None and not isinstance(system, str):
        raise PromptFileError(f'{where}: "system" must be a string')
    return Prompt(
        text=text.strip(),
        custom_id=None if custom_id is None else str(custom_id),
        system=system,
        line=line,
    )


def _prompt_from_openai_request(item: dict[str, Any], where: str, line: int | None) -> Prompt:
    """An OpenAI Batch API / `vllm run-batch` request line."""
    body = item["body"]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f'{where}: request body has no "messages" list')
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise PromptFileError(f'{where}: each message needs a "role" and a string "content"')
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    users = [m["content"] for m in messages if m.get("role") == "user"]
    if not users:
        raise PromptFileError(f"{where}: request has no user message")
    chat = [m for m in messages if m.get("role") != "system"]
    options = {key: body[key] for key in REQUEST_OPTIONS if key in body}
    if "max_completion_tokens" in options:
        options["max_tokens"] = options.pop("max_completion_tokens")
    custom_id = item.get("custom_id")
    return Prompt(
        text=users[-1].strip(),
        custom_id=None if custom_id is None else str(custom_id),
        system=system,
        messages=[{"role": m["role"], "content": m["content"]} for m in chat]
        if len(chat) > 1
        else None,
        options=options,
        line=line,
    )
