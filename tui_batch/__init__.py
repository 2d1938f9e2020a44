"""tui-batch: run batches of prompts through local LLMs, from a terminal dashboard or a script."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BatchJob",
    "BatchProcessor",
    "BatchResult",
    "GenerationSettings",
    "JobStatus",
    "Prompt",
    "ProgressUpdate",
    "__version__",
]

if TYPE_CHECKING:
    from tui_batch.core import (
        BatchJob,
        BatchProcessor,
        BatchResult,
        GenerationSettings,
        JobStatus,
        ProgressUpdate,
        Prompt,
    )


def __getattr__(name: str) -> Any:
    # The public API is imported on first use: the `tui-batch` command starts by importing
    # this package, and a Ctrl+C while it loads the core must reach its handler.
    if name in __all__:
        import tui_batch.core

        return getattr(tui_batch.core, name)
    raise AttributeError(f"module 'tui_batch' has no attribute {name!r}")
