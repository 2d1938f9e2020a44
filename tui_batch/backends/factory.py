"""Choosing the llama.cpp backend for a job's settings."""

from __future__ import annotations

from pathlib import Path

from tui_batch.backends.base import Backend
from tui_batch.core.jobs import BatchJob, GenerationSettings

# Prompts decoded together by default. A CPU is compute-bound with a few sequences
# already: on the 2-core build machine 4 slots did as well as 16, with a quarter of the
# KV cache. A GPU has room and compute to spare for more.
DEFAULT_PARALLEL_CPU = 4
DEFAULT_PARALLEL_GPU = 16
# llama.cpp holds at most 256 sequences in a context; one holds the shared prompt prefix.
MAX_PARALLEL = 255


def default_parallel(n_gpu_layers: int) -> int:
    return DEFAULT_PARALLEL_GPU if n_gpu_layers else DEFAULT_PARALLEL_CPU


def llama_backend(model_path: str | Path, settings: GenerationSettings) -> Backend:
    """`parallel` >= 1: continuous batching with that many slots; 0: one prompt at a time
    through `create_chat_completion`, streamed."""
    if settings.parallel >= 1:
        from tui_batch.backends.llama_parallel import ParallelLlamaBackend

        return ParallelLlamaBackend(model_path, settings.parallel)
    from tui_batch.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend(model_path)


def backend_for_job(job: BatchJob) -> Backend:
    """The job's model, found again (by path, else by id) and loaded for its settings."""
    from tui_batch.models import resolve_model

    path = job.model_path if job.model_path and Path(job.model_path).is_file() else None
    backend = llama_backend(path or resolve_model(job.model_id).path, job.settings)
    backend.load(job.settings)
    return backend
