"""Chat completions on the wire: the request body for a prompt, and the answers (server-sent
events and JSON bodies) read and checked by us.

The `openai` client still sends every request (connections, auth, status errors), but its
answer is read here rather than built into pydantic models: that costs less per chunk
than the model classes (which dominate the client's time at a few hundred answers a
second), and whatever a server sends is checked at this boundary, so a malformed answer
is one `MalformedAnswer` naming what was wrong, never an AttributeError deep inside.
Texts are cleaned here too (a lone surrogate, which no file can hold, becomes U+FFFD)
and counts bounded (a usage of 2**64 is no count), so one odd answer never stops a job.
The caller scrubs the key from a payload before it reaches these readers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tui_batch.core.jobs import GenerationSettings, Prompt, messages_for
from tui_batch.core.servers import REFUSES_SCHEMAS
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.text import clean_text

# Chars per token, for the tpm estimate of a prompt before its usage is known.
CHARS_PER_TOKEN = 4


def chat_request(
    prompt: Prompt, settings: GenerationSettings, model: str, stream: bool
) -> dict[str, Any]:
    """The request body for `prompt`: its own options win over the job's settings."""
    options = prompt.options
    request: dict[str, Any] = {
        "model": model,
        "messages": messages_for(prompt, settings),
        "max_tokens": options.get("max_tokens", settings.max_tokens),
        "temperature": options.get("temperature", settings.temperature),
        "top_p": options.get("top_p", settings.top_p),
    }
    seed = options.get("seed", settings.seed)
    if seed is not None:
        request["seed"] = seed
    stop = options.get("stop", settings.stop)
    if stop:
        request["stop"] = stop
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


def reasoning_fields(settings: GenerationSettings) -> dict[str, Any]:
    """What a request adds for the job's reasoning settings, in the forms servers take:
    the switch as the chat template's kwargs (vLLM, llama-server, SGLang: `enable_thinking`,
    and `thinking` for the templates that read that name), the effort as
    `reasoning_effort`, the budget as llama-server's `thinking_budget_tokens` and vLLM's
    `thinking_token_budget`. Nothing for `auto` and no budget or effort: the server's
    and the model's defaults, and a request any server takes. The backend sends the
    ones each server takes (`reasoning_probe`), in the body as they are."""
    fields: dict[str, Any] = {}
    if settings.reasoning != "auto":
        on = settings.reasoning == "on"
        fields["chat_template_kwargs"] = {"enable_thinking": on, "thinking": on}
    if settings.reasoning_effort is not None:
        fields["reasoning_effort"] = settings.reasoning_effort
    if settings.reasoning_budget is not None:
        fields["thinking_budget_tokens"] = settings.reasoning_budget
        fields["thinking_token_budget"] = settings.reasoning_budget
    return fields


# How a server is asked to enforce a schema: OpenAI's `response_format` json_schema (vLLM,
# llama-server, Ollama, hosted APIs); llama-cpp-python's server's own json_object with a
# schema (it ignores the other); vLLM's `structured_outputs`.
SCHEMA_FORMS = ("json_schema", "json_object", "structured_outputs")


def structured_output(form: str | None, schema: AnswerSchema | None) -> dict[str, Any]:
    """What a request adds to ask for answers of `schema` in `form` (None: the standard
    form, for a server that enforces none: it may still take it as a hint; nothing for
    a server that refuses them all)."""
    if schema is None or form == REFUSES_SCHEMAS:
        return {}
    if form == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema.schema}}
    if form == "structured_outputs":
        wanted = {"choice": list(schema.choices)} if schema.choices else {"json": schema.schema}
        return {"extra_body": {"structured_outputs": wanted}}
    return {"response_format": response_format(schema)}


def response_format(schema: AnswerSchema) -> dict[str, Any]:
    """OpenAI's `response_format` that asks a server to enforce `schema`."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema.schema, "strict": True},
    }


def with_extra(request: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """`request` with what `structured_output` adds, their `extra_body`s merged."""
    merged = {**request, **more}
    if "extra_body" in request and "extra_body" in more:
        merged["extra_body"] = {**request["extra_body"], **more["extra_body"]}
    return merged


def estimate_tokens(request: dict[str, Any]) -> float:
    """A request's tokens before its usage is known: its messages' characters / 4, plus
    all it may generate."""
    chars = sum(len(str(m.get("content", ""))) for m in request["messages"])
    return chars / CHARS_PER_TOKEN + (request.get("max_tokens") or 0)


class MalformedAnswer(ValueError):
    """A server's answer is not a chat completion (or a chunk of one)."""


class StreamError(Exception):
    """The server sent an error inside the stream (after a 200)."""


class IncompleteAnswer(Exception):
    """A 200 that holds no whole answer: a stream that ended without a finish reason
    (cut off, or interrupted by the server), or an answer with none."""


# A token count a server may report: anything larger is not a count.
MAX_COUNT = 2**31 - 1


@dataclass(slots=True)
class Piece:
    """What one chunk (or a whole answer) says: its answer text, and its thought where
    the server sends that apart (`reasoning`, `reasoning_content`, ...)."""

    text: str = ""
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None  # prompt, completion tokens
    reasoning: str = ""
    reasoning_tokens: int | None = None  # of the completion tokens


# Where servers put a thought, in the order read: vLLM (since 2025-10), Ollama's /v1 and
# OpenRouter; llama-server, SGLang, DeepSeek, LiteLLM; Ollama's native API.
REASONING_FIELDS = ("reasoning", "reasoning_content", "thinking")


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` of each server-sent event, up to `[DONE]`; comments and other fields
    are skipped, and an event's several data lines are joined as the SSE spec says."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == "[DONE]":
                    return
                yield payload
            continue
        if line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data and "\n".join(data).strip() != "[DONE]":
        yield "\n".join(data)


def read_chunk(payload: str) -> Piece:
    """One streamed chunk: its text, finish reason and usage (the last chunk's)."""
    data = _object(payload)
    piece = Piece(usage=_usage(data))
    choices = data.get("choices")
    if choices is None:
        return piece
    if not isinstance(choices, list):
        raise MalformedAnswer(f"'choices' is not a list: {choices!r:.60}")
    parts = []
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedAnswer(f"a choice is not an object: {choice!r:.60}")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise MalformedAnswer(f"a delta is not an object: {delta!r:.60}")
        parts.append(_text(delta.get("content")))
        piece.reasoning += _thought(delta)
        piece.finish_reason = _finish(choice) or piece.finish_reason
    piece.text = "".join(parts)
    piece.reasoning_tokens = _reasoning_tokens(data)
    return piece


def read_completion(body: bytes | str) -> Piece:
    """A whole (not streamed) answer: the first choice's message."""
    return completion_of(_object(body))


def completion_of(data: Any) -> Piece:
    """A whole answer already parsed from JSON (a batch line's body), checked as
    `read_completion` checks one: a MalformedAnswer, or a StreamError for an error."""
    if not isinstance(data, dict):
        raise MalformedAnswer(f"not a JSON object: {str(data)[:60]!r}")
    _refuse_error(data)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("the answer has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise MalformedAnswer("the first choice has no message")
    return Piece(
        _text(message.get("content")),
        _finish(choices[0]),
        _usage(data),
        _thought(message),
        _reasoning_tokens(data),
    )


def _thought(message: dict[str, Any]) -> str:
    """The thought a message (or a delta) holds apart from its content: the first of
    REASONING_FIELDS with text, else the text of OpenRouter's `reasoning_details`."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if value:
            return _text(value)
    details = message.get("reasoning_details")
    if not details:
        return ""
    if not isinstance(details, list):
        raise MalformedAnswer(f"reasoning_details is not a list: {details!r:.60}")
    texts = []
    for detail in details:
        if not isinstance(detail, dict):
            raise MalformedAnswer(f"a reasoning detail is not an object: {detail!r:.60}")
        texts.append(_text(detail.get("text") or detail.get("summary")))
    return "".join(texts)


def _reasoning_tokens(data: dict[str, Any]) -> int | None:
    """`usage.completion_tokens_details.reasoning_tokens`, where a server counts them."""
    usage = data.get("usage")
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    count = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if count is None:
        return None
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
        raise MalformedAnswer(f"usage has a wrong reasoning_tokens: {count!r:.40}")
    return count


def _object(payload: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise MalformedAnswer(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedAnswer(f"not a JSON object: {str(payload)[:60]!r}")
    _refuse_error(data)
    return data


def _refuse_error(data: dict[str, Any]) -> None:
    """A StreamError where the server answered with an error object."""
    error = data.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise StreamError(clean_text(" ".join(str(message).split())[:300]))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedAnswer(f"content is not text: {value!r:.60}")
    return clean_text(value)


def _finish(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise MalformedAnswer(f"finish_reason is not text: {reason!r:.60}")
    return None if reason is None else clean_text(reason[:40])


def _usage(data: dict[str, Any]) -> tuple[int, int] | None:
    usage = data.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise MalformedAnswer(f"usage is not an object: {usage!r:.60}")
    counts = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    if not (_a_count(counts[0]) and _a_count(counts[1])):
        raise MalformedAnswer(f"usage has wrong counts: {usage!r:.80}")
    return counts


def _a_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT
