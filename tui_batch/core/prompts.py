"""Reading prompts from .txt, .json, .jsonl and .csv files, with errors that say where."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.errors import PromptFileError, SettingsError, reading
from tui_batch.core.jobs import Prompt
from tui_batch.core.json_values import STRICT_DECODER
from tui_batch.core.settings import REQUEST_OPTIONS, check_request_options
from tui_batch.core.templates.records import CsvRowError, csv_rows, iter_json_array

SUPPORTED_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv")
# Per-request overrides an OpenAI Batch API body may carry that we honour.
BODY_OPTIONS = (*REQUEST_OPTIONS, "max_completion_tokens")
# The endpoints a batch request line may name: chat completions, as vLLM and OpenAI spell it.
CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
# Lines end with \n, \r\n or a lone \r (old Mac files); never with U+2028 and friends,
# which a JSON string may hold.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
    result = PromptFile(path=path, prompts=[], warnings=[])
    _validate(iter_prompt_file(path), result)
    if not result.prompts:
        raise PromptFileError(f"No prompts found in {path}")
    return result


def check_prompt_file(path: str | Path) -> Path:
    """`path`, if it names a prompts file of a known kind; else a PromptFileError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise PromptFileError(
            f"Unsupported prompts file type {suffix or '(none)'!r}: {path} "
            f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    return path


def iter_prompt_file(path: str | Path) -> Iterator[Prompt]:
    """Each prompt of a prompts file in order, read as it is needed (memory holds a
    line or an item, never the file) and checked alone (its text valid Unicode); a
    PromptFileError naming the file and line for anything malformed. Empty prompts and
    duplicates are left to the caller (`_validate`, `core.prompt_stream`)."""
    records, parse = prompt_records(path)
    return (parse(record) for record in records)


def prompt_records(path: str | Path) -> tuple[Iterator[Any], Callable[[Any], Prompt]]:
    """The records of a prompts file in order, each read but not yet made a prompt,
    and the function that makes one (the checks of `iter_prompt_file` then). A slice
    takes records by their number, so only those it keeps need making: a sample of
    1,000 of ten million lines parses 1,000. A .txt record is its stripped line, a
    .jsonl one its line; .json and .csv records are parsed as they are read."""
    path = check_prompt_file(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _read(path, _txt_lines(path)), lambda record: Prompt(text=record[1], line=record[0])
    if suffix == ".jsonl":
        return _read(path, _jsonl_lines(path)), lambda record: _checked(
            _jsonl_prompt(path, *record), path
        )
    parse = _parse_json if suffix == ".json" else _parse_csv
    return _read(path, (_checked(prompt, path) for prompt in parse(path))), _same


def _same(prompt: Prompt) -> Prompt:
    return prompt


def _read(path: Path, records: Iterator[Any]) -> Iterator[Any]:
    """`records`, with the file's reading errors said in one line."""
    with reading(path, "prompts file", PromptFileError):
        try:
            yield from records
        except RecursionError:
            raise PromptFileError(f"{path}: nested too deeply to read") from None
        except UnicodeDecodeError as exc:
            raise PromptFileError(
                f"{path}: invalid UTF-8 ({exc.reason}); save the file as UTF-8"
            ) from None


def prompts_from_lines(lines: Iterable[str]) -> PromptFile:
    """Prompts typed by a person, one per line, with the .txt file rules."""
    result = PromptFile(path=Path("<typed>"), prompts=[], warnings=[])
    _validate(_txt_prompts(enumerate(lines, start=1)), result)
    return result


_BOM = b"\xef\xbb\xbf"


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's lines numbered from 1, split on line breaks only (a JSON string may
    hold U+2028 and friends), decoded one at a time."""
    number = 0
    with path.open("rb") as handle:
        for raw in handle:
            if number == 0 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = number + 1 + len(_LINE_BREAK.findall(raw[: exc.start].decode("latin-1")))
                column = exc.start - max(
                    raw.rfind(b"\n", 0, exc.start), raw.rfind(b"\r", 0, exc.start)
                )
                raise PromptFileError(
                    f"{path}:{line}:{column}: invalid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                    "save the file as UTF-8"
                ) from None
            if "\r" not in text:  # the common case, without a regular expression
                number += 1
                yield number, text[:-1] if text.endswith("\n") else text
                continue
            pieces = _LINE_BREAK.split(text)
            if len(pieces) > 1 and not pieces[-1]:
                pieces.pop()  # the line's own end
            for piece in pieces:
                number += 1
                yield number, piece


def _where(path: Path, prompt: Prompt) -> str:
    return f"{path}:{prompt.line}" if prompt.line else str(path)


def _checked(prompt: Prompt, path: Path) -> Prompt:
    _check_unicode(prompt, path)
    return prompt


def _check_unicode(prompt: Prompt, path: Path) -> None:
    """A JSON escape can make a lone surrogate (\\ud800), which is no text at all."""
    texts = [prompt.text, prompt.system or "", prompt.custom_id or ""]
    texts += [str(m.get("content", "")) for m in prompt.messages or []]
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PromptFileError(
                f"{_where(path, prompt)}: invalid text: a lone surrogate "
                f"({text[exc.start]!r}); not valid Unicode"
            ) from None


def _validate(prompts: Iterable[Prompt], result: PromptFile) -> None:
    first_seen: dict[tuple[str | None, str], int | None] = {}
    ids: dict[str, int | None] = {}
    for prompt in prompts:
        _check_unicode(prompt, result.path)
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


def _txt_prompts(lines: Iterable[tuple[int, str]]) -> Iterator[Prompt]:
    for number, text in _txt_lines_of(lines):
        yield Prompt(text=text, line=number)


def _txt_lines_of(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """A .txt file's prompts as (line, text): its lines stripped, without blank lines
    and `#` comments."""
    for number, line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _txt_lines(path: Path) -> Iterator[tuple[int, str]]:
    return _txt_lines_of(_numbered_lines(path))


def _json_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> PromptFileError:
    return PromptFileError(
        f"{path}:{exc.lineno + line_offset}:{exc.colno}: invalid JSON: {exc.msg}"
    )


def _loads(text: str, path: Path, line_offset: int = 0) -> Any:
    try:
        # Strict numbers; a lone surrogate is kept, to be refused with its line below.
        return STRICT_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc, line_offset) from None
    except RecursionError:
        raise PromptFileError(f"{path}:{line_offset + 1}: JSON nested too deeply") from None
    except ValueError as exc:  # a number too long to convert, say
        raise PromptFileError(f"{path}:{line_offset + 1}: invalid JSON: {exc}") from None


def _parse_json(path: Path) -> Iterator[Prompt]:
    items = iter_json_array(
        path,
        PromptFileError,
        STRICT_DECODER.raw_decode,
        word="item",
        expected="a JSON array of prompts",
        located=True,
    )
    for number, item in items:
        yield _prompt_from_item(item, f"{path}: item {number}", line=None)


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """A .jsonl file's lines that are not blank, as (line, text)."""
    return ((number, line) for number, line in _numbered_lines(path) if line.strip())


def _jsonl_prompt(path: Path, number: int, line: str) -> Prompt:
    return _prompt_from_item(_loads(line, path, line_offset=number - 1), f"{path}:{number}", number)


def _parse_csv(path: Path) -> Iterator[Prompt]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream, strict=True)
        try:
            yield from _csv_prompts(reader, path)
        except UnicodeDecodeError as exc:
            raise PromptFileError(
                f"{path}:{reader.line_num + 1}: invalid UTF-8 ({exc.reason}); "
                "save the file as UTF-8"
            ) from None


def _csv_prompts(reader: Any, path: Path) -> Iterator[Prompt]:
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise PromptFileError(f"{path}:1: invalid CSV header: {exc}") from None
    columns = [name.strip().lower() for name in header]
    if "prompt" not in columns:
        shown = ", ".join(c[:40] for c in columns[:20]) or "nothing"
        raise PromptFileError(f"{path}:1: no 'prompt' column (found: {shown})")
    position = {
        name: columns.index(name)
        for name in ("prompt", "custom_id", "id", "system")
        if name in columns
    }
    # Every other column is the record's own (an expected answer, a label, ...).
    others = [
        (number, name.strip())
        for number, name in enumerate(header)
        if number not in position.values() and name.strip()
    ]
    try:
        for start, row in csv_rows(reader):  # a record is named by its first line

            def cell(name: str, row: list[str] = row) -> str:
                index = position.get(name)
                return row[index].strip() if index is not None and index < len(row) else ""

            yield Prompt(
                text=cell("prompt"),
                custom_id=cell("custom_id") or cell("id") or None,
                system=cell("system") or None,
                line=start,
                variables={name: row[n] if n < len(row) else "" for n, name in others} or None,
            )
    except CsvRowError as exc:
        raise PromptFileError(f"{path}:{exc.line}: invalid CSV: {exc.message}") from None


def _custom_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PromptFileError(f"{where}: an id must be text or a whole number, got {value!r:.40}")
    text = str(value) if isinstance(value, str) or abs(value) < 10**64 else None
    if text is None or len(text) > 512:
        raise PromptFileError(f"{where}: the id is too long (at most 512 characters)")
    return text


def _request_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return check_request_options(options)
    except SettingsError as exc:
        raise PromptFileError(f"{where}: {exc}") from None


def _content(message: Any, where: str) -> str:
    """A chat message's text: a string, or an array of text parts (OpenAI's format)."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise PromptFileError(f'{where}: each message needs a string "role" and a "content"')
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise PromptFileError(
        f'{where}: a message\'s "content" must be a string or a list of text parts '
        '({"type": "text", "text": ...}); other parts (images, audio) are not supported'
    )


_PROMPT_KEYS = ("prompt", "custom_id", "id", "system")


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
    custom_id = _custom_id(item.get("custom_id", item.get("id")), where)
    system = item.get("system")
    if system is not None and not isinstance(system, str):
        raise PromptFileError(f'{where}: "system" must be a string')
    # Every other key is the record's own (an expected answer, a label, ...).
    variables = {str(k): v for k, v in item.items() if k not in _PROMPT_KEYS}
    return Prompt(
        text=text.strip(),
        custom_id=custom_id,
        system=system,
        line=line,
        variables=variables or None,
    )


def _prompt_from_openai_request(item: dict[str, Any], where: str, line: int | None) -> Prompt:
    """An OpenAI Batch API / `vllm run-batch` request line."""
    method, url = item.get("method", "POST"), item.get("url", CHAT_URLS[0])
    if not isinstance(method, str) or method.upper() != "POST":
        raise PromptFileError(f'{where}: "method" must be "POST", got {method!r:.40}')
    if url not in CHAT_URLS:
        raise PromptFileError(f'{where}: "url" {url!r:.60} is not supported (only {CHAT_URLS[0]})')
    body = item["body"]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f'{where}: request body has no "messages" list')
    chat = []
    for message in messages:
        content = _content(message, where)
        chat.append({"role": message["role"], "content": content})
    system = next((m["content"] for m in chat if m["role"] == "system"), None)
    users = [m["content"] for m in chat if m["role"] == "user"]
    if not users:
        raise PromptFileError(f"{where}: request has no user message")
    turns = [m for m in chat if m["role"] != "system"]
    options = {key: body[key] for key in BODY_OPTIONS if key in body}
    if "max_completion_tokens" in options:
        tokens = options.pop("max_completion_tokens")
        if options.get("max_tokens") is None:
            options["max_tokens"] = tokens
    return Prompt(
        text=users[-1].strip(),
        custom_id=_custom_id(item.get("custom_id"), where),
        system=system,
        messages=turns if len(turns) > 1 else None,
        options=_request_options(options, where),
        line=line,
    )
