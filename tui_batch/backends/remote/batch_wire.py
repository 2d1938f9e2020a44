"""Provider Batch API lines in the OpenAI wire format (`/v1/files` + `/v1/batches`):
a job's prompts as request lines whose `custom_id` names the job, the prompt and the
file it is in; the lines split into files under the provider's limits (lines and bytes); and
the lines of an output or error file read back and checked, in whatever order they come.

A batch's files are untrusted like any server's answer: a line that is not what the
format says is one `MalformedAnswer`, and an answer's body is read by the same reader as
a live answer's (`chat_wire.read_completion`).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from tui_batch.backends.remote.chat_wire import (
    MalformedAnswer,
    Piece,
    StreamError,
    chat_request,
    completion_of,
    reasoning_fields,
    structured_output,
)
from tui_batch.core.backend import Completion
from tui_batch.core.jobs import GenerationSettings, Prompt
from tui_batch.core.reasoning import from_parts
from tui_batch.core.text import clean_text

ENDPOINT = "/v1/chat/completions"
# OpenAI's limits for one input file; both are settings of a job.
MAX_LINES = 50_000
MAX_BYTES = 200 * 2**20
# The longest custom_id read back (ours are far shorter): a longer one is not ours.
MAX_CUSTOM_ID = 200
# A number in a custom_id: ASCII digits, at most 12.
_DIGITS = re.compile(r"[0-9]{1,12}")


def custom_id(job_id: str, index: int, file_number: int) -> str:
    """The line's id: the job, the prompt's index and the number of the job's file it is
    in (a prompt sent again is in a later file, so no id repeats in a job's batches)."""
    return f"{job_id}:{index}:{file_number}"


def parse_custom_id(text: object, job_id: str) -> tuple[int, int] | None:
    """The prompt index and file number a line's id names; None for an id that is not one
    of this job's (another job's, or damaged)."""
    if not isinstance(text, str) or len(text) > MAX_CUSTOM_ID:
        return None
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != job_id:
        return None
    index, number = parts[1], parts[2]
    if not (_DIGITS.fullmatch(index) and _DIGITS.fullmatch(number)):
        return None
    return int(index), int(number)


def request_body(prompt: Prompt, settings: GenerationSettings, model: str) -> dict[str, Any]:
    """A line's request: as a live one, not streamed, with the schema as OpenAI's
    `response_format` and the job's reasoning fields as they are (a provider that
    refuses one fails the line with its reason)."""
    body = chat_request(prompt, settings, model, stream=False)
    if settings.schema is not None:
        body.update(structured_output("json_schema", settings.schema))
    body.update(reasoning_fields(settings))
    return body


def request_line(line_id: str, body: dict[str, Any]) -> bytes:
    """One line of an input file: a chat request, as JSON on one line (UTF-8)."""
    line = {"custom_id": line_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class InputFile:
    """An input file being written, on disk (never whole in memory), under the line and
    byte limits; `add` says whether a line fitted."""

    def __init__(self, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by `close`
        self.lines = self.size = 0

    def fits(self, line: bytes) -> bool:
        """Whether `line` can go in a file on its own (it is no larger than the limit)."""
        return len(line) <= self.max_bytes

    def add(self, line: bytes) -> bool:
        """Write `line` unless the file is full (then False)."""
        if self.lines >= self.max_lines or self.size + len(line) > self.max_bytes:
            return False
        self.file.write(line)
        self.lines += 1
        self.size += len(line)
        return True

    def ready(self) -> IO[bytes]:
        """The file, from its start, to upload."""
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class BatchAnswer:
    """One line of an output or error file: whose it is, and what came back."""

    custom_id: str
    status_code: int | None  # the answer's HTTP status; None where none was made
    piece: Piece | None  # the answer, where its status is 200
    error: str | None  # why not: "code: message" (batch_expired, a server's error)

    @property
    def expired(self) -> bool:
        return self.error is not None and self.error.startswith("batch_expired")

    def completion(self, index: int, url: str) -> Completion:
        """The engine's completion of prompt `index`: its answer, the thought apart (sent
        apart or inline); or its error, run again where the error passes (5xx, 429,
        `batch_expired`). A thought with no answer is found by the engine, which runs it
        again unless a rerun would think the same."""
        if self.piece is None:
            status = self.status_code
            retryable = self.expired or status is None or status >= 500 or status == 429
            return Completion(index, error=self.error, retryable=retryable, endpoint=url)
        piece = self.piece
        tokens_in, tokens_out = piece.usage or (0, 0)
        thought = from_parts(piece.text, piece.reasoning)
        return Completion(
            index,
            response_text=thought.answer,
            tokens_input=tokens_in,
            tokens_output=tokens_out,
            finish_reason=piece.finish_reason,
            reasoning=thought.reasoning,
            reasoning_tokens=piece.reasoning_tokens,
            thought_closed=thought.closed,
            endpoint=url,
        )


def read_line(raw: bytes | str) -> BatchAnswer:
    """A line of an output or error file, checked (a MalformedAnswer where it is not one)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedAnswer(f"a batch line is not JSON: {raw[:60]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        raise MalformedAnswer(f"a batch line has no custom_id: {raw[:60]!r}")
    line_id = data["custom_id"]
    error = data.get("error")
    response = data.get("response")
    if error is not None:
        return BatchAnswer(line_id, _status(response), None, _error_text(error))
    if not isinstance(response, dict):
        raise MalformedAnswer(f"batch line {line_id[:40]!r} has neither response nor error")
    status = _status(response)
    body = response.get("body")
    if status != 200:
        message = _error_text(body.get("error") if isinstance(body, dict) else body)
        return BatchAnswer(line_id, status, None, f"HTTP {status}: {message}")
    if not isinstance(body, dict):
        raise MalformedAnswer(f"batch line {line_id[:40]!r}: its answer is not an object")
    try:
        return BatchAnswer(line_id, status, completion_of(body), None)
    except StreamError as exc:  # an error object in a 200's body
        return BatchAnswer(line_id, status, None, str(exc))


def _status(response: object) -> int | None:
    status = response.get("status_code") if isinstance(response, dict) else None
    return status if isinstance(status, int) and 100 <= status <= 599 else None


def _error_text(error: object) -> str:
    """An error object's `code: message`, cleaned and cut to a line's worth."""
    if isinstance(error, dict):
        code, message = error.get("code") or error.get("type"), error.get("message")
        text = ": ".join(str(part) for part in (code, message) if part)
    else:
        text = str(error) if error is not None else ""
    return clean_text(text or "no reason given")[:500]
