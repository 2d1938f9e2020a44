"""A dry run from job setup (`f6`): the figures `tui-batch run --dry-run` prints, for
the form as it stands; nothing is made. Called from a thread worker: it reads the whole
input and answers a sample (`core.dry_run`)."""

from __future__ import annotations

import threading
from pathlib import Path

from tui_batch.core.dry_run import dry_run
from tui_batch.core.run_spec import RunSpec
from tui_batch.ui.job_input import first_input


def dry_run_text(spec: RunSpec, model_path: str | None, cancel: threading.Event) -> str:
    """The dry run of `spec` on the local model at `model_path`, or on its servers;
    `cancel` (the worker's) stops it."""
    from tui_batch.backends.factory import length_check, llama_backend, remote_backend
    from tui_batch.models.catalog import model_id_for

    stream, run_input = first_input(spec)
    first = run_input.prompts
    spec = run_input.settled(spec)
    settings = spec.generation
    if spec.server is None:
        assert model_path is not None  # the form checked it
        model_id = model_id_for(Path(model_path))
        backend = llama_backend(model_path, settings)
        check = length_check(
            model_path, settings.n_ctx, settings.system_prompt, settings.schema_note
        )
        count = check.tokens
    else:
        assert spec.model is not None  # the form checked it
        model_id, count = spec.model, None
        backend = remote_backend(spec.server, spec.model)
    with backend:
        figures = dry_run(stream, first, spec, model_id, backend, count, cancel=cancel)
    return "\n".join([f"Dry run of {model_id}: nothing was made", "", *figures.lines()])
