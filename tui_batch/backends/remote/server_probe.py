"""Asking servers, before and as a job begins, what they serve and how: their models
(`GET /models`), whether they interrupt a streaming answer, and how they enforce a
schema (remembered for PROBE_KEPT seconds)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tui_batch.backends.remote.chat_wire import (
    SCHEMA_FORMS,
    read_chunk,
    read_completion,
    sse_data,
    structured_output,
)
from tui_batch.backends.remote.openai_api import (
    RedirectRefused,
    Secret,
    cause,
    exception_chain,
    import_openai,
    make_client,
    server_message,
)
from tui_batch.core.errors import ServerError
from tui_batch.core.servers import REFUSES_SCHEMAS, Endpoint, ServerCheck, ServerSettings
from tui_batch.core.structured.check import check_answer
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.text import clean_text


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
        redirect = next((e for e in exception_chain(exc) if isinstance(e, RedirectRefused)), None)
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
