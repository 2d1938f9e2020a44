"""Which of a job's reasoning fields a server takes, asked once per endpoint before the
job's first request, as the schema's form is (`server_probe.schema_form`).

A server that does not know a field may refuse the whole request (OpenAI's API answers
400 to `chat_template_kwargs`), or take it and ignore it (most open servers). One small
request with every field says which: where it is refused, each kind of field alone
finds the ones taken; a refused kind is left out of the job's requests (they would all
fail), and said. Whether the answer came with a thought apart from it is said too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tui_batch.backends.remote.chat_wire import read_completion
from tui_batch.backends.remote.openai_api import (
    Secret,
    import_openai,
    make_client,
    server_message,
)
from tui_batch.backends.remote.server_probe import PROBE_KEPT
from tui_batch.core.servers import ServerSettings

# The kinds of field, each taken or refused as one: the switch, the effort, the budget.
KINDS = {
    "chat_template_kwargs": ("chat_template_kwargs",),
    "reasoning_effort": ("reasoning_effort",),
    "budget": ("thinking_budget_tokens", "thinking_token_budget"),
}
_TOKENS = 16
# What each endpoint said of each set of fields, for PROBE_KEPT seconds: checking the
# servers before a job and the job's start ask once.
_said: dict[tuple[str, str, str], tuple[float, dict[str, Any], str]] = {}


def probe_reasoning(server: ServerSettings, model: str, fields: dict[str, Any]) -> dict[str, str]:
    """What each endpoint says of the job's reasoning fields, in words (by URL), before a
    job is made: the check of the servers says it; the job then sends what each takes."""
    secret = Secret(server.api_key_env)

    async def one(url: str, endpoint: Any) -> str:
        client = make_client(endpoint, server, secret)
        try:
            return (await reasoning_fields_taken(client, model, fields, secret))[1]
        finally:
            await client.close()

    async def every() -> list[Any]:
        return await asyncio.gather(
            *(one(e.url, e) for e in server.endpoints), return_exceptions=True
        )

    found = asyncio.run(every())
    return {
        e.url: said if isinstance(said, str) else "the reasoning probe could not tell"
        for e, said in zip(server.endpoints, found, strict=True)
    }


async def reasoning_fields_taken(
    client: Any, model: str, fields: dict[str, Any], secret: Any
) -> tuple[dict[str, Any], str]:
    """The fields of `fields` the server takes, and what the probe found, in words
    (remembered for PROBE_KEPT seconds)."""
    key = (str(client.base_url), model, repr(sorted(fields.items())))
    found = _said.get(key)
    if found is not None and time.monotonic() - found[0] < PROBE_KEPT:
        return found[1], found[2]
    taken, said = await _ask_server(client, model, fields, secret)
    _said[key] = (time.monotonic(), taken, said)
    return taken, said


async def _ask_server(
    client: Any, model: str, fields: dict[str, Any], secret: Any
) -> tuple[dict[str, Any], str]:
    openai = import_openai()

    async def ask(sent: dict[str, Any]) -> tuple[bool, str]:
        request = {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": _TOKENS,
            "temperature": 0,
            "extra_body": sent,
        }
        try:
            create = client.chat.completions.with_streaming_response.create
            async with create(**request) as response:
                answer = read_completion(await response.read())
        except openai.APIStatusError as exc:
            if 400 <= exc.status_code < 500 and exc.status_code not in (401, 408, 429):
                return False, f"HTTP {exc.status_code}: {server_message(exc, secret)[:120]}"
            raise
        return True, "a thought came apart from the answer" if answer.reasoning else ""

    named = ", ".join(fields)
    try:
        taken, seen = await ask(fields)
        if taken:
            return fields, f"reasoning fields taken ({named}){'; ' + seen if seen else ''}"
        kept: dict[str, Any] = {}
        refused = []
        for kind, names in KINDS.items():
            part = {name: fields[name] for name in names if name in fields}
            if not part:
                continue
            ok, why = await ask(part)
            if ok:
                kept.update(part)
            else:
                refused.append(f"{kind} ({why})")
    except Exception:  # noqa: BLE001 - a probe that cannot tell: the fields are sent as asked
        return fields, f"reasoning fields sent as asked ({named}); the probe could not tell"
    said = f"refused, left out: {'; '.join(refused)}"
    if kept:
        said += f"; taken: {', '.join(kept)}"
    return kept, said
