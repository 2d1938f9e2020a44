"""A provider's Files and Batches endpoints (the OpenAI wire format), through the `openai`
client: upload an input file, create a batch on it, poll it, find the batch made on a
file, cancel it, stream an output file's lines, delete a file.

Transient failures (a dropped connection, a timeout, 408/409/429/5xx) are tried again
with backoff; what is left is one `ServerError` line naming the call and the server's
words, the key scrubbed. Creating a batch is the one call that costs money twice if it
is repeated after it reached the provider: after a failure it looks for a batch already
made on the file before it creates again (`create_once`), as resume does for a file it
left in the `creating` state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, Any, TypeVar

from tui_batch.backends.remote.openai_api import (
    RETRYABLE_STATUS,
    Secret,
    cause,
    import_openai,
    server_message,
)
from tui_batch.core.batch_records import ENDED, BatchFile
from tui_batch.core.errors import ServerError
from tui_batch.core.text import clean_text

# A listing of batches is read this far back for the one made on a file.
FIND_PAGES = 20
T = TypeVar("T")


class ProviderUnreachable(ServerError):
    """A call failed for a reason that passes (a dropped connection, a timeout, 429, 5xx),
    tried again and again failing: worth trying later."""


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the provider says of a batch (each field checked: a provider is untrusted)."""

    id: str
    status: str
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    created_at: int | None
    expires_at: int | None
    errors: tuple[str, ...]  # why it failed at validation, one line each
    started_at: int | None = None  # began to run (in_progress)
    finished_at: int | None = None  # ended there (completed, expired, cancelled, failed)

    def progress(self, created_at: float | None = None) -> dict[str, float | int | None]:
        """What a record keeps of it besides its status (`batch_records.PROVIDER_FIELDS`):
        its counts and times, its creation's `created_at` where it gives none."""
        return {
            "total": self.total,
            "completed": self.completed,
            "failed": self.failed,
            "created_at": self.created_at if self.created_at is not None else created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
        }

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class BatchClient:
    """One provider's batch endpoints (see the module doc)."""

    def __init__(
        self,
        base_url: str,
        secret: Secret,
        timeout: float = 300.0,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        openai = import_openai()
        self.url = base_url.rstrip("/")
        self.secret = secret
        self.attempts = max(1, attempts)
        self.sleep = sleep
        self.client = openai.OpenAI(
            base_url=self.url, api_key=secret.value or "none", max_retries=0, timeout=timeout
        )

    def close(self) -> None:
        self.client.close()

    # -- the calls ----------------------------------------------------------------------

    def upload(self, name: str, data: bytes | IO[bytes]) -> str:
        """Upload an input file (`purpose="batch"`), its bytes or a file of them read as
        it is sent (from its start, again on each try); its file id."""

        def send() -> Any:
            if not isinstance(data, bytes):
                data.seek(0)
            return self.client.files.create(file=(name, data), purpose="batch")

        return _text(self._call("upload", send).id, "file id")

    def create(self, file_id: str, metadata: dict[str, str]) -> BatchState:
        """Create a batch on an uploaded file: once only, called once (see `create_once`)."""
        made = self._call(
            "create a batch",
            lambda: self.client.batches.create(
                input_file_id=file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata=metadata,
            ),
            attempts=1,
        )
        return _state(made)

    def create_once(
        self, file_id: str, metadata: dict[str, str], look_first: bool = False
    ) -> BatchState:
        """Create a batch on the file unless one is already made on it: after a failed
        attempt (which may have reached the provider), and first with `look_first` (a
        run that stopped while creating it), look before trying again."""
        for attempt in range(self.attempts):
            found = self.find(file_id) if attempt or look_first else None
            if found is not None:
                return found
            try:
                return self.create(file_id, metadata)
            except ServerError:
                if attempt + 1 == self.attempts:
                    raise
                self.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    def retrieve(self, batch_id: str) -> BatchState:
        return _state(self._call("poll a batch", lambda: self.client.batches.retrieve(batch_id)))

    def find(self, file_id: str) -> BatchState | None:
        """The newest batch made on this input file, if the provider lists one."""

        def look() -> BatchState | None:
            for number, batch in enumerate(self.client.batches.list(limit=100)):
                if getattr(batch, "input_file_id", None) == file_id:
                    return _state(batch)
                if number >= FIND_PAGES * 100:
                    break
            return None

        return self._call("list batches", look)

    def cancel(self, batch_id: str, tries: int | None = None) -> BatchState:
        """Cancel a batch (`tries`: at most so many, fewer than the client's own)."""
        cancel = lambda: self.client.batches.cancel(batch_id)  # noqa: E731
        return _state(self._call("cancel a batch", cancel, tries))

    def lines(self, file_id: str) -> Iterator[str]:
        """An output or error file's lines, as they arrive (never the whole file at once)."""
        try:
            with self.client.files.with_streaming_response.content(file_id) as response:
                yield from (line for line in response.iter_lines() if line.strip())
        except Exception as exc:  # noqa: BLE001 - whatever broke the stream, said once
            raise self._error("read a result file", exc) from None

    def delete(self, file_id: str) -> None:
        """Delete a file at the provider; one already gone is not an error."""
        try:
            self._call("delete a file", lambda: self.client.files.delete(file_id))
        except ServerError as exc:
            if "HTTP 404" not in str(exc):
                raise

    def check(self, model: str | None) -> list[str]:
        """Before a job: the models the provider lists (none where it lists none), and
        a one-line ServerError where it does not serve the Batch API or `model`."""
        openai = import_openai()
        try:
            names = [
                clean_text(self.secret.scrub(str(m.id)))[:200]
                for m in list(self.client.models.list().data)[:1000]
            ]
        except openai.APIStatusError as exc:
            if exc.status_code not in (404, 405):
                raise self._error("list the models", exc) from None
            names = []
        except Exception as exc:  # noqa: BLE001 - said as one line
            raise self._error("list the models", exc) from None
        if model is not None and names and model not in names:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise ServerError(f"Model {model!r} is not served by {self.url}; it serves: {shown}")
        try:
            self.client.batches.list(limit=1)
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405):
                raise ServerError(
                    f"{self.url} does not serve the Batch API (/batches: HTTP "
                    f"{exc.status_code}); run without --batch-api, or through a LiteLLM "
                    "proxy that batches for it"
                ) from None
            raise self._error("list batches", exc) from None
        except Exception as exc:  # noqa: BLE001 - said as one line
            raise self._error("list batches", exc) from None
        return names

    # -- failures -----------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T], attempts: int | None = None) -> T:
        tries = attempts or self.attempts
        for attempt in range(tries):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - each said as one line below
                if attempt + 1 == tries or not _transient(exc):
                    raise self._error(what, exc) from None
                self.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    def _error(self, what: str, exc: Exception) -> ServerError:
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return ServerError(self.secret.refused(self.url, status))
        if status is not None:
            said = f"HTTP {status}: {server_message(exc, self.secret)}"
        else:
            said = self.secret.scrub(cause(exc))
        kind = ProviderUnreachable if _transient(exc) else ServerError
        return kind(clean_text(f"Cannot {what} at {self.url}: {said}"))


# The HTTP client's errors of a connection that broke mid-read (a result file's stream).
_BROKEN_READS = frozenset({"ReadError", "ReadTimeout", "RemoteProtocolError", "NetworkError"})


def _transient(exc: Exception) -> bool:
    openai = import_openai()
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, ConnectionError)):
        return True
    if any(kind.__name__ in _BROKEN_READS for kind in type(exc).__mro__):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in RETRYABLE_STATUS or status >= 500)


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2**attempt)


def _state(batch: Any) -> BatchState:
    counts = getattr(batch, "request_counts", None)
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return BatchState(
        id=_text(getattr(batch, "id", None), "batch id"),
        status=_text(getattr(batch, "status", None), "batch status"),
        input_file_id=_maybe(getattr(batch, "input_file_id", None)),
        output_file_id=_maybe(getattr(batch, "output_file_id", None)),
        error_file_id=_maybe(getattr(batch, "error_file_id", None)),
        total=_count(getattr(counts, "total", 0)),
        completed=_count(getattr(counts, "completed", 0)),
        failed=_count(getattr(counts, "failed", 0)),
        created_at=_time(getattr(batch, "created_at", None)),
        expires_at=_time(getattr(batch, "expires_at", None)),
        errors=tuple(_error_line(error) for error in errors[:20]),
        started_at=_time(getattr(batch, "in_progress_at", None)),
        finished_at=next(
            (
                when
                for name in ("completed_at", "expired_at", "cancelled_at", "failed_at")
                if (when := _time(getattr(batch, name, None))) is not None
            ),
            None,
        ),
    )


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ServerError(f"the provider sent no {what}: {value!r:.60}")
    return clean_text(value)


def _maybe(value: object) -> str | None:
    return clean_text(value) if isinstance(value, str) and 0 < len(value) <= 200 else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and 0 <= value < 2**31 else 0


def _time(value: object) -> int | None:
    return value if isinstance(value, int) and 0 <= value < 2**40 else None


def _error_line(error: Any) -> str:
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    line = getattr(error, "line", None)
    text = ": ".join(str(part) for part in (code, message) if part) or "no reason given"
    where = f" (line {line})" if isinstance(line, int) else ""
    return clean_text(" ".join(text.split())[:300] + where)


def with_provider_status(
    client: BatchClient, files: list[BatchFile]
) -> tuple[list[BatchFile], str | None]:
    """The files with what the provider says now of each batch still in flight (status,
    counts, times), and a line saying why it could not be asked (None: it was)."""
    fresh = []
    for record in files:
        if record.in_flight and record.batch_id is not None:
            try:
                batch = client.retrieve(record.batch_id)
            except ServerError as exc:
                return files, str(exc)
            record = replace(record, status=batch.status, **batch.progress(record.created_at))
        fresh.append(record)
    return fresh, None
