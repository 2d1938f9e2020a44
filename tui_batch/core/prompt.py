"""A prompt of a job: its text and what its file says of it (an id, a system text, a
whole chat, per-request options, a record's fields), and the chat it becomes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tui_batch.core.errors import CheckpointError, SettingsError
from tui_batch.core.settings import GenerationSettings, check_request_options


@dataclass(slots=True)
class Prompt:
    """One prompt: its text plus what a file may say about it.

    `messages` holds a whole chat (OpenAI Batch API lines) when there is more than a
    single user turn; `options` holds per-request generation overrides (max_tokens, ...).
    A prompt rendered from a template keeps its record's fields in `variables` (and the
    record's number in `line`).
    """

    text: str
    custom_id: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    variables: dict[str, Any] | None = None
    # In a job run more than once per prompt (`BatchJob.repeats`): which run this is.
    repeat: int | None = None
    # Read in from a stream: its record's number in the input (`core.slices`), which
    # orders the prompts of a job's shards when they are merged.
    record: int | None = None

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text}
        for name in ("custom_id", "system", "messages", "line", "variables", "repeat", "record"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.options:
            data["options"] = self.options
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> Prompt:
        """A prompt as `to_dict` wrote it; anything else is a CheckpointError."""
        if isinstance(data, str):
            return cls(text=data)
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise CheckpointError("a prompt record has no text")
        for name in ("custom_id", "system"):
            if not isinstance(data.get(name), (str, type(None))):
                raise CheckpointError(f"a prompt's {name} is not text")
        messages = data.get("messages")
        if messages is not None and not (
            isinstance(messages, list)
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m
                for m in messages
            )
        ):
            raise CheckpointError("a prompt's messages are not a list of chat messages")
        line, repeat, record = data.get("line"), data.get("repeat"), data.get("record")
        variables = data.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise CheckpointError("a prompt's variables are not an object")
        try:
            given = data.get("options")
            options = check_request_options(given) if given else {}
        except SettingsError as exc:
            raise CheckpointError(f"a prompt's options: {exc}") from None
        return cls(
            text=data["text"],
            custom_id=data.get("custom_id"),
            system=data.get("system"),
            messages=messages,
            options=options,
            line=line if isinstance(line, int) and not isinstance(line, bool) else None,
            variables=variables,
            repeat=repeat if isinstance(repeat, int) and not isinstance(repeat, bool) else None,
            record=record if isinstance(record, int) and not isinstance(record, bool) else None,
        )


def repeated(prompts: list[Prompt], repeats: int, seed: int | None) -> list[Prompt]:
    """Each prompt `repeats` times in a row, numbered, each run with a seed of its own
    (the prompt's or the job's seed, else 0, plus the run's number)."""
    if repeats <= 1:
        return prompts
    runs = []
    for prompt in prompts:
        base = prompt.options.get("seed", seed) or 0
        for repeat in range(repeats):
            options = {**prompt.options, "seed": (base + repeat) % 2**31}
            runs.append(replace(prompt, options=options, repeat=repeat))
    return runs


def build_messages(
    prompt: Prompt, system_prompt: str | None, note: str | None = None
) -> list[dict[str, Any]]:
    """The chat for one prompt: its own system text wins over the job's; a `note` (what
    the answer must be) is added to either."""
    system = prompt.system if prompt.system is not None else system_prompt
    if note:
        system = f"{system}\n\n{note}" if system else note
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if prompt.messages:
        messages.extend(prompt.messages)
    else:
        messages.append({"role": "user", "content": prompt.text})
    return messages


def messages_for(prompt: Prompt, settings: GenerationSettings) -> list[dict[str, Any]]:
    """The chat a backend sends for one prompt of a job with these settings."""
    return build_messages(prompt, settings.system_prompt, settings.schema_note)
