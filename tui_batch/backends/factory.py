"""Choosing and making the backend for a job's settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_batch.core.backend import Backend
from tui_batch.core.batch_records import BatchFile
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import BatchJob, GenerationSettings
from tui_batch.core.servers import ServerCheck, ServerSettings
from tui_batch.core.structured.schema import AnswerSchema

if TYPE_CHECKING:
    from tui_batch.backends.llama.tokens import LengthCheck


def llama_backend(model_path: str | Path, settings: GenerationSettings) -> Backend:
    """A llama.cpp backend, not opened yet. Parallel >= 1: continuous batching with that
    many slots; 0: one prompt at a time through `create_chat_completion`, streamed."""
    parallel = settings.effective_parallel
    if parallel >= 1:
        from tui_batch.backends.llama.parallel import ParallelLlamaBackend

        return ParallelLlamaBackend(model_path, parallel)
    from tui_batch.backends.llama.sequential import LlamaCppBackend

    return LlamaCppBackend(model_path)


def length_check(
    model_path: str | Path, n_ctx: int, system_prompt: str | None = None, note: str | None = None
) -> LengthCheck:
    """A `LengthCheck`: which prompts are too long for a local model's context, counted
    as the run counts them (chat template, system prompt and schema `note` included)."""
    from tui_batch.backends.llama.tokens import LengthCheck

    return LengthCheck(model_path, n_ctx, system_prompt, note)


def in_model_log_callback(frame: Any) -> bool:
    """Whether `frame` (where a signal found the main thread) is llama.cpp's call of our
    log callback, where an exception raised would be lost (see `cli.terminal`)."""
    from tui_batch.backends.llama.loading import in_log_callback

    return in_log_callback(frame)


def remote_backend(server: ServerSettings, model: str) -> Backend:
    """A backend for OpenAI-compatible servers, not opened yet: live requests, or
    batches through their Batch API (`server.batch_api`)."""
    if server.batch_api:
        from tui_batch.backends.remote.batch_backend import BatchApiBackend

        return BatchApiBackend(server, model)
    from tui_batch.backends.remote.backend import RemoteBackend

    return RemoteBackend(server, model)


def check_servers(
    server: ServerSettings,
    model: str | None = None,
    schema: AnswerSchema | None = None,
    settings: GenerationSettings | None = None,
) -> ServerCheck:
    """Each endpoint's models, which interrupt streaming answers, (with a `schema`) how
    each enforces one, and (with reasoning `settings` to send) which of those each takes;
    a one-line ServerError if one cannot be used (unreachable, refusing the key, not
    serving `model`). For a CLI or a dashboard, before a job is made."""
    if server.batch_api:
        return _check_batch_api(server, model)
    from tui_batch.backends.remote.chat_wire import reasoning_fields
    from tui_batch.backends.remote.reasoning_probe import probe_reasoning
    from tui_batch.backends.remote.server_probe import probe_servers

    check = probe_servers(server, model, schema)
    fields = reasoning_fields(settings) if settings is not None else {}
    tried = model or next((name for names in check.models.values() for name in names), None)
    if fields and tried:
        check.reasoning = probe_reasoning(server, tried, fields)
    return check


def _check_batch_api(server: ServerSettings, model: str | None) -> ServerCheck:
    """A Batch API's check: its models, and that it serves `/batches`. No request is
    sent to ask how it takes a schema or reasoning: each line carries them as OpenAI's
    wire format has them, and the provider's answer to each is checked."""
    from tui_batch.backends.remote.batch_client import BatchClient
    from tui_batch.backends.remote.openai_api import Secret

    url = server.endpoints[0].url
    client = BatchClient(url, Secret(server.api_key_env), timeout=server.connect_timeout + 20)
    try:
        return ServerCheck({url: client.check(model)})
    finally:
        client.close()


def batches_now(
    server: ServerSettings, files: list[BatchFile]
) -> tuple[list[BatchFile], str | None]:
    """A Batch API job's files with the provider's word now on each batch in flight, and
    why it could not be asked (None: it was)."""
    from tui_batch.backends.remote.batch_client import BatchClient, with_provider_status
    from tui_batch.backends.remote.openai_api import Secret

    if not any(record.in_flight and record.batch_id for record in files):
        return files, None
    client = BatchClient(server.endpoints[0].url, Secret(server.api_key_env), attempts=2)
    try:
        return with_provider_status(client, files)
    finally:
        client.close()


def backend_for_job(job: BatchJob, opened: bool = True) -> Backend:
    """The job's backend: its servers, or its model found again (by path, else by id),
    opened for its settings (or, with `opened=False`, left for the engine to open if a
    prompt is left to run: then a model that is gone is an error only when it is needed).

    The caller owns the backend and closes it.
    """
    if job.server is not None:
        backend = remote_backend(job.server, job.model_id)
        if opened:
            backend.open(job.settings)
        return backend

    backend = llama_backend(model_file(job, must_exist=opened), job.settings)
    if opened:
        backend.open(job.settings)
    return backend


def model_file(job: BatchJob, must_exist: bool = True) -> Path:
    """A local job's GGUF: its path, or its model found again by id where the file is
    gone; with `must_exist=False`, the path as saved when it cannot be found (a
    ModelError when it is needed)."""
    from tui_batch.models.catalog import resolve_model

    path = Path(job.model_path) if job.model_path else None
    if path is None or not path.is_file():
        try:
            path = resolve_model(job.model_id).path
        except ModelError:
            if must_exist or path is None:
                raise
    return path
