"""Which of a job's reasoning fields a server takes, asked once per endpoint before the
job's first request, as the schema's form is (`openai_api.schema_form`).

A server that does not know a field may refuse the whole request (OpenAI's API answers
400 to `chat_template_kwargs`), or take it and ignore it (most open servers). One small
request with every field says which: where it is refused, each kind of field alone
finds the ones taken; a refused kind is left out of the job's requests (they would all
fail), and said. Whether the answer came with a thought apart from it is said too.
"""

from __future__ import annotations

from typing import Any

from tui_batch.backends.remote.chat_wire import read_completion
from tui_batch.backends.remote.openai_api import import_openai, server_message

# The kinds of field, each taken or refused as one: the switch, the effort, the budget.
KINDS = {
    "chat_template_kwargs": ("chat_template_kwargs",),
    "reasoning_effort": ("reasoning_effort",),
    "budget": ("thinking_budget_tokens", "thinking_token_budget"),
}
_TOKENS = 16


async def reasoning_fields_taken(
    client: Any, model: str, fields: dict[str, Any], secret: Any
) -> tuple[dict[str, Any], str]:
    """The fields of `fields` the server takes, and what the probe found, in words."""
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
