"""Talking to an OpenAI-compatible API through the `openai` package: clients, the key,
what a failed request means, and asking servers what they serve."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from tui_batch.backends.remote.admission import Outcome
from tui_batch.backends.remote.chat_wire import (
    SCHEMA_FORMS,
    IncompleteAnswer,
    StreamError,
    read_chunk,
    read_completion,
    sse_data,
    structured_output,
)
from tui_batch.core.errors import ServerError
from tui_batch.core.servers import (
    MAX_RETRY_AFTER,
    REFUSES_SCHEMAS,
    Endpoint,
    ServerCheck,
    ServerSettings,
)
from tui_batch.core.structured.check import check_answer
from tui_batch.core.structured.schema import AnswerSchema
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
    redirect = next((e for e in _chain(exc) if isinstance(e, RedirectRefused)), None)
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


def _chain(exc: BaseException) -> list[BaseException]:
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
    return any(type(e).__name__ in ("ConnectError", "ConnectTimeout") for e in _chain(exc))


def cause(exc: BaseException) -> str:
    chain = _chain(exc)
    root = chain[-1]
    text = str(root).strip() or type(root).__name__
    return " ".join(text.split())[:200]


def probe_servers(
    server: ServerSettings, model: str | None = None, schema: AnswerSchema | None = None
) -> ServerCheck:
    """Ask every endpoint for its models (`GET /models`) before a job is made.

    Returns each endpoint's model names (empty where a server does not list them; a name
    holding the API key is scrubbed), and which endpoints interrupt a streaming answer
    when another request comes (tried on llama-cpp-python's servers: two small requests).
    With a `schema`, also how each endpoint enforces one (`schema_form`).
    Raises a one-line ServerError when an endpoint is unreachable, refuses the key,
    answers something that is not the API, or (with `model`) does not serve the model.
    """
    return asyncio.run(_probe_all(server, model, schema))


async def _probe_all(
    server: ServerSettings, model: str | None, schema: AnswerSchema | None
) -> ServerCheck:
    """Every endpoint asked at once (a fleet is checked in the time of one); the first
    endpoint's problem, in the order given, is the one said."""
    secret = Secret(server.api_key_env)
    found = await asyncio.gather(
        *(_check_endpoint(e, server, secret, model, schema) for e in server.endpoints),
        return_exceptions=True,
    )
    check = ServerCheck({})
    for endpoint, outcome in zip(server.endpoints, found, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        names, interrupting, form = outcome
        check.models[endpoint.url] = names
        if interrupting:
            check.interrupting.append(endpoint.url)
        if schema is not None:
            check.schema_forms[endpoint.url] = form
    return check


async def _check_endpoint(
    endpoint: Endpoint,
    server: ServerSettings,
    secret: Secret,
    model: str | None,
    schema: AnswerSchema | None,
) -> tuple[list[str], bool, str | None]:
    """An endpoint's model names, whether it interrupts requests, and how it enforces a
    schema (with one)."""
    client = make_client(endpoint, server, secret)
    try:
        names, llama_cpp_python = await _probe(client, endpoint.url, server, secret)
        if model is not None and names and model not in names:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise ServerError(
                secret.scrub(f"Model {model!r} is not served by {endpoint.url}; it serves: {shown}")
            )
        tried = model or (names[0] if names else None)
        interrupting = bool(llama_cpp_python and tried and await _interrupts(client, tried))
        form = await schema_form(client, tried) if schema is not None and tried else None
        return names, interrupting, form
    finally:
        await client.close()


# The schema probe: an answer no model gives unless the schema is enforced.
PROBE_SCHEMA = AnswerSchema(
    {
        "type": "object",
        "properties": {"word": {"type": "string", "enum": ["zebra-quartz-17"]}},
        "required": ["word"],
        "additionalProperties": False,
    }
)
_PROBE_FORM_TOKENS = 40


# What probes found, by server and model, kept this long: a job starts seconds after the
# check before it (the CLI's, job setup's), and its backend need not ask again.
PROBE_KEPT = 60.0
_probed: dict[tuple[str, str], tuple[float, str | None]] = {}


async def schema_form(client: Any, model: str) -> str | None:
    """How this server enforces a schema: the first of SCHEMA_FORMS whose answer to a
    small probe is valid (one short request each, until one is); REFUSES_SCHEMAS when it
    answers each with an error; None when it answers without enforcing one, or the
    probe cannot tell. Remembered for PROBE_KEPT seconds."""
    key = (str(client.base_url), model)
    found = _probed.get(key)
    if found is not None and time.monotonic() - found[0] < PROBE_KEPT:
        return found[1]
    form = await _probe_form(client, model)
    _probed[key] = (time.monotonic(), form)
    return form


async def _probe_form(client: Any, model: str) -> str | None:
    openai = import_openai()
    messages = [{"role": "user", "content": "Say hello."}]
    refused = 0
    for form in SCHEMA_FORMS:
        request = {
            "model": model,
            "messages": messages,
            "max_tokens": _PROBE_FORM_TOKENS,
            "temperature": 0,
            **structured_output(form, PROBE_SCHEMA),
        }
        try:
            create = client.chat.completions.with_streaming_response.create
            async with create(**request) as response:
                answer = read_completion(await response.read())
        except openai.APIStatusError:
            refused += 1
            continue  # the server refuses this form: try the next
        except Exception:  # noqa: BLE001 - a probe that cannot tell says nothing
            return None
        if check_answer(PROBE_SCHEMA, answer.text, answer.finish_reason).valid:
            return form
    return REFUSES_SCHEMAS if refused == len(SCHEMA_FORMS) else None


async def _probe(
    client: Any, url: str, server: ServerSettings, secret: Secret
) -> tuple[list[str], bool]:
    """The endpoint's model names (scrubbed, bounded), and whether it looks like
    llama-cpp-python's server (models owned by "me", with a permissions list)."""
    openai = import_openai()
    try:
        page = await asyncio.wait_for(client.models.list(), timeout=server.connect_timeout + 20)
        models = list(page.data)[:1000]
        names = [clean_text(secret.scrub(str(m.id)))[:200] for m in models]
        extras = [getattr(m, "model_extra", None) or {} for m in models]
        llama_cpp_python = bool(models) and all(
            getattr(m, "owned_by", None) == "me" and "permissions" in extra
            for m, extra in zip(models, extras, strict=True)
        )
        return names, llama_cpp_python
    except (asyncio.TimeoutError, openai.APITimeoutError):
        raise ServerError(f"{url} did not answer (timed out); is it the right address?") from None
    except (openai.APIConnectionError, RedirectRefused) as exc:
        # The client wraps the redirect hook's error, or (httpx's newer releases) not.
        redirect = next((e for e in _chain(exc) if isinstance(e, RedirectRefused)), None)
        if redirect is not None:
            raise ServerError(f"{url}/models: {redirect}") from None
        raise ServerError(f"Cannot reach {url}: {cause(exc)} (is the server running?)") from None
    except openai.APIStatusError as exc:
        if exc.status_code == 401:
            raise ServerError(secret.refused(url, 401)) from None
        if exc.status_code in (404, 405):
            return [], False  # a server that does not list its models can still serve them
        message = server_message(exc, secret)
        raise ServerError(f"{url}/models answered HTTP {exc.status_code}: {message}") from None
    except (openai.APIError, ValueError, TypeError, AttributeError) as exc:
        raise ServerError(
            f"{url} does not answer like an OpenAI-compatible server: "
            f"{clean_text(secret.scrub(str(exc)))[:200]}"
        ) from None


# The interrupt check: a streamed answer up to this long, cut short once it has gone on
# this many chunks after the second request was sent (then the server does not
# interrupt), and how long the check may take at most.
_PROBE_TOKENS = 64
_PROBE_CHUNKS_AFTER = 8
_PROBE_SECONDS = 60.0


async def _interrupts(client: Any, model: str) -> bool:
    """Whether the server cuts off a streaming answer when a second request comes: one
    request streams; at its first chunk a second is sent; an interrupting server ends
    the first at once with `[DONE]` and no finish reason, while one that does not goes
    on (after a few more chunks both requests are called back: the check costs about a
    dozen tokens). False when the check cannot tell."""
    messages = [{"role": "user", "content": "Count from 1 to 100, one number a line."}]
    loop = asyncio.get_running_loop()
    started, second_sent = loop.create_future(), loop.create_future()

    async def streamed() -> bool:
        create = client.chat.completions.with_streaming_response.create
        finish, after = None, 0
        async with create(
            model=model, messages=messages, max_tokens=_PROBE_TOKENS, temperature=0, stream=True
        ) as response:
            async for payload in sse_data(response.iter_lines()):
                if not started.done():
                    started.set_result(None)
                finish = read_chunk(payload).finish_reason or finish
                after += second_sent.done()
                if after >= _PROBE_CHUNKS_AFTER:
                    return False  # it went on answering: no interruption
        return finish is None

    async def check() -> bool:
        first = asyncio.ensure_future(streamed())
        second = None
        try:
            await asyncio.wait({first, started}, return_when=asyncio.FIRST_COMPLETED)
            if first.done():  # finished (or failed) before a second request could come
                return False
            second = asyncio.ensure_future(
                client.chat.completions.create(model=model, messages=messages, max_tokens=1)
            )
            second_sent.set_result(None)
            return await first
        finally:
            for task in (first, second):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (first, second) if t), return_exceptions=True)

    try:
        return await asyncio.wait_for(check(), timeout=_PROBE_SECONDS)
    except Exception:  # noqa: BLE001 - a check that cannot tell says nothing
        return False
