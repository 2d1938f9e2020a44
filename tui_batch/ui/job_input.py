"""A file input as job setup opens it, the way `tui-batch run` does: its first chunk read
and checked (the job is made from it and the rest read in while it runs), and what to
say of it before the job starts. Called from thread workers: it reads files and may load
a model's vocabulary."""

from __future__ import annotations

import contextlib

from tui_batch.backends.factory import length_check
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.prompt_stream import PromptStream, first_chunk, open_stream
from tui_batch.core.run_input import RunInput
from tui_batch.core.run_spec import RunSpec

# Warnings said one by one when a job starts; then how many more.
MAX_SAID = 8


def first_input(spec: RunSpec) -> tuple[PromptStream, RunInput]:
    """The spec's input as a stream and its first chunk (a TuiBatchError for a mistake
    in it: the first few, then a count)."""
    stream = open_stream(spec, spec.input_slice)
    return stream, RunInput.from_stream(stream, first_chunk(stream), [])


def input_warnings(
    stream: PromptStream, run_input: RunInput, spec: RunSpec, model: str | None
) -> str | None:
    """What to say of the input before its job starts, on lines (None: nothing): the
    stream's warnings, and how many prompts of the first chunk are too long for the
    local `model`'s context (a model that cannot be read says so when the job starts)."""
    warnings = stream.all_warnings()
    if model is not None:
        settings = run_input.settled(spec).generation
        with contextlib.suppress(TuiBatchError):
            check = length_check(
                model, settings.n_ctx, settings.system_prompt, settings.schema_note
            )
            if long := len(check.too_long(run_input.prompts)):
                more = "" if stream.done else f" of the first {len(run_input.prompts):,}"
                warnings.append(
                    f"{long:,} prompts{more} are longer than the context: they will fail"
                )
    if not warnings:
        return None
    more = len(warnings) - MAX_SAID
    return "\n".join(warnings[:MAX_SAID] + ([f"... and {more} more"] if more > 0 else []))
