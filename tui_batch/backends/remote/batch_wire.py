"""Provider Batch API lines in the OpenAI wire format (`/v1/files` + `/v1/batches`):
a job's prompts as request lines whose `custom_id` names the job, the prompt and the
attempt; the lines split into files under the provider's limits (lines and bytes); and
the lines of an output or error file read back and checked, in whatever order they come.

A batch's files are untrusted like any server's answer: a line that is not what the
format says is one `MalformedAnswer`, and an answer's body is read by the same reader as
a live answer's (`chat_wire.read_completion`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tui_batch.backends.remote.chat_wire import MalformedAnswer, Piece, read_completion
from tui_batch.core.text import clean_text

ENDPOINT = "/v1/chat/completions"
# OpenAI's limits for one input file; both are settings of a job.
MAX_LINES = 50_000
MAX_BYTES = 200 * 2**20
# The longest custom_id read back (ours are far shorter): a longer one is not ours.
MAX_CUSTOM_ID = 200


def custom_id(job_id: str, index: int, attempt: int) -> str:
    """The line's id: the job, the prompt's index and its attempt (a prompt sent again
    in a later batch has a new one, so no id repeats in a job's batches)."""
    return f"{job_id}:{index}:{attempt}"


def parse_custom_id(text: object, job_id: str) -> tuple[int, int] | None:
    """The prompt index and attempt a line's id names; None for an id that is not one of
    this job's (another job's, or damaged)."""
    if not isinstance(text, str) or len(text) > MAX_CUSTOM_ID:
        return None
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != job_id:
        return None
    index, attempt = parts[1], parts[2]
    if not all(p.isascii() and p.isdigit() and len(p) <= 12 for p in (index, attempt)):
        return None
    return int(index), int(attempt)


def request_line(line_id: str, body: dict[str, Any]) -> bytes:
    """One line of an input file: a chat request, as JSON on one line (UTF-8)."""
    line = {"custom_id": line_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def split_lines(
    lines: Iterable[bytes], max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES
) -> Iterator[list[bytes]]:
    """The lines in files of at most `max_lines` lines and `max_bytes` bytes, in order;
    a ValueError for a line that alone is over `max_bytes`."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"a request line of {len(line):,} bytes is over {max_bytes:,}")
        if chunk and (len(chunk) >= max_lines or size + len(line) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        yield chunk


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
    return BatchAnswer(line_id, status, read_completion(json.dumps(body)), None)


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
