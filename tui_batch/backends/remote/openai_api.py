"""Talking to an OpenAI-compatible API through the `openai` package: clients, the key,
and what a failed request means (asking servers what they serve: `server_probe`)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from tui_batch.backends.remote.admission import Outcome
from tui_batch.backends.remote.chat_wire import (
    IncompleteAnswer,
    StreamError,
)
from tui_batch.core.errors import ServerError
from tui_batch.core.servers import (
    MAX_RETRY_AFTER,
    Endpoint,
    ServerSettings,
)
from tui_batch.core.text import clean_text

RETRYABLE_STATUS = {408, 409, 429}
THROTTLE_STATUS = {429, 503}


def import_openai() -> Any:
    try:
        import openai
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ServerError("The openai package is missing: pip install openai") from None
    return openai


class Secret:
    """The API key, read from its variable when needed, and scrubbed from any text we keep."""

    def __init__(self, variable: str) -> None:
        self.variable = variable
        self.value = os.environ.get(variable) or None

    def scrub(self, text: str) -> str:
        if self.value and len(self.value) >= 4:
            text = text.replace(self.value, f"${self.variable}")
        return text

    def refused(self, url: str, status: int) -> str:
        if self.value is None:
            return (
                f"HTTP {status} from {url}: no API key was sent (${self.variable} is not set); "
                "set it, or name another variable (--api-key-env, or API key variable in "
                "job setup)"
            )
        return f"HTTP {status} from {url}: the key in ${self.variable} was refused"


class RedirectRefused(Exception):
    """A server redirected a request to another host: answers would come from a server
    the user never named, so the redirect is not followed."""

    def __init__(self, status: int, target: str) -> None:
        super().__init__(f"HTTP {status}: redirected to {target}, another host: not followed")
        self.status = status


def _same_host_only(endpoint: Endpoint) -> Any:
    """A response hook that refuses a redirect to another host (scheme, host or port);
    one on the same host (a path, a trailing slash) is followed."""
    from urllib.parse import urljoin, urlsplit

    base = urlsplit(endpoint.url)
    home = (base.scheme, base.hostname, base.port)

    async def check(response: Any) -> None:
        location = response.headers.get("location")
        if not response.is_redirect or location is None:
            return
        target = urlsplit(urljoin(str(response.url), location))
        try:
            there = (target.scheme, target.hostname, target.port)
        except ValueError:
            there = None
        if there != home:
            shown = f"{target.scheme}://{target.hostname or '?'}"
            raise RedirectRefused(response.status_code, shown)

    return check


def make_client(endpoint: Endpoint, server: ServerSettings, secret: Secret) -> Any:
    """An AsyncOpenAI for one endpoint: no SDK retries, every timeout bounded, and no
    redirect followed to another host."""
    openai = import_openai()
    timeout = openai.Timeout(
        connect=server.connect_timeout,
        # A stream's stall and first byte are timed by us; this is the backstop.
        read=max(server.first_token_timeout, server.stall_timeout, 1.0)
        if server.stream
        else server.request_timeout,
        write=max(server.connect_timeout, 30.0),
        pool=server.request_timeout,
    )
    return openai.AsyncOpenAI(
        base_url=endpoint.url,
        api_key=secret.value or "none",
        max_retries=0,
        timeout=timeout,
        http_client=openai.DefaultAsyncHttpxClient(
            event_hooks={"response": [_same_host_only(endpoint)]}
        ),
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed request means: for its endpoint (`outcome`), and for its prompt
    (`retryable`: sending it again may help)."""

    outcome: Outcome
    error: str
    status: int | None = None
    retryable: bool = True
    retry_after: float | None = None


def classify(exc: Exception, url: str, secret: Secret, streamed: bool) -> Failure:
    """The failure an exception from the client stands for. `streamed`: some of the
    answer had come (a timeout then is a stalled stream)."""
    openai = import_openai()
    redirect = next((e for e in exception_chain(exc) if isinstance(e, RedirectRefused)), None)
    if redirect is not None:
        return Failure(Outcome.FAILED, f"{redirect} (from {url})", redirect.status, False)
    if isinstance(exc, IncompleteAnswer):
        return Failure(Outcome.FAILED, f"incomplete answer: {exc}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = server_message(exc, secret)
        if status == 401:
            return Failure(Outcome.FAILED, secret.refused(url, status), status, False)
        # A spent quota (OpenAI's insufficient_quota) is a 429 that waiting won't fix.
        if status == 429 and "insufficient_quota" in f"{exc.body} {message}":
            error = f"HTTP 429 from {url}: quota exhausted: {message}"
            return Failure(Outcome.FAILED, error, status, False)
        if status in THROTTLE_STATUS:
            retry_after = retry_after_seconds(exc.response.headers)
            return Failure(Outcome.THROTTLED, f"HTTP {status}", status, True, retry_after)
        if status in RETRYABLE_STATUS or status >= 500:
            return Failure(Outcome.FAILED, f"HTTP {status}: {message}", status)
        return Failure(Outcome.FAILED, f"HTTP {status} from {url}: {message}", status, False)
    if isinstance(exc, openai.APIConnectionError) or _transport_error(exc):
        # Raised by the client while sending, or by its HTTP library while we read.
        if refused(exc):
            return Failure(Outcome.DOWN, f"connection refused: {cause(exc)}")
        if isinstance(exc, openai.APITimeoutError) or type(exc).__name__.endswith("Timeout"):
            return Failure(
                Outcome.FAILED, f"timeout: {'stalled stream' if streamed else 'no answer'}"
            )
        return Failure(Outcome.FAILED, f"connection dropped: {cause(exc)}")
    if isinstance(exc, (openai.APIError, StreamError)):  # an error sent inside a stream
        return Failure(Outcome.FAILED, f"server error: {secret.scrub(str(exc))[:300]}")
    text = secret.scrub(f"malformed response: {type(exc).__name__}: {exc}")
    return Failure(Outcome.FAILED, text[:300])


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds a server asked us to wait: `retry-after-ms`, or `retry-after` in seconds
    or as an HTTP date; capped at MAX_RETRY_AFTER."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return min(MAX_RETRY_AFTER, max(0.0, float(ms) / 1000))
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        return min(MAX_RETRY_AFTER, max(0.0, seconds))
    except (TypeError, ValueError, OverflowError):
        return None


def server_message(exc: Any, secret: Secret) -> str:
    """The server's own words about an error status, one line, bounded; the key taken
    out before it is cut (a key echoed near the cut would otherwise be kept in part)."""
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        message = message or body.get("detail") or body.get("message")
    if not message:
        try:
            message = exc.response.text
        except Exception:  # noqa: BLE001 - a body we cannot read is no message
            message = None
    if not isinstance(message, str):
        message = json.dumps(message) if message is not None else exc.message
    return clean_text(" ".join(secret.scrub(str(message)).split())[:300])


def exception_chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _transport_error(exc: BaseException) -> bool:
    """An error of the HTTP layer under the client (httpx2, httpcore2)."""
    return type(exc).__module__.split(".")[0] in ("httpx2", "httpcore2", "httpx", "httpcore")


def refused(exc: BaseException) -> bool:
    """The request never reached a server: the connection failed or was refused."""
    return any(type(e).__name__ in ("ConnectError", "ConnectTimeout") for e in exception_chain(exc))


def cause(exc: BaseException) -> str:
    chain = exception_chain(exc)
    root = chain[-1]
    text = str(root).strip() or type(root).__name__
    return " ".join(text.split())[:200]
